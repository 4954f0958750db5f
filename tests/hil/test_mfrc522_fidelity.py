"""MFRC522 emulator fidelity (issue 16, item 9): what third-party drivers found different from
the chip, and the IRQ pin.

- MFAuthent raises no TxIRq/RxIRq (datasheet 10.3.1.9): only IdleIRq, or TimerIRq.
- BitFramingReg.StartSend is write-only and reads 0 (9.3.1.14): a read-modify-write of
  BitFramingReg does not send the frame again.
- A bit collision (9.3.1.15): the whole frame arrives, CollPos / CollPosNotValid place the
  first collision, and CollReg.ValuesAfterColl decides whether the bits from there on read 0
  or keep what the cards sent.
- The IRQ pin follows Status1Reg.IRq (ComIEnReg/DivIEnReg), inverted by IRqInv, open-drain
  unless IRQPushPull; on the virtual rig it is an input pin the firmware reads.
"""
from __future__ import annotations

import time

from hil.sim import mfrc522 as m
from hil.sim.mfrc522 import (
    MFRC522Emulator,
    MifareClassic1K,
    NtagTag,
    merge_answers,
    with_crc,
)
from tests.support.mfrc522 import (
    UID4,
    rd,
    select,
    setup_reader,
    start_transceive,
    wr,
    xchg,
)
from tests.support.micropython import run_micropython

NTAG_UID = bytes.fromhex("04102030405001")
MIFARE_UID = bytes.fromhex("a1b2c3d4")


def _wait_irq(emu, mask):
    for _ in range(200):
        irq = rd(emu, m.ComIrqReg)
        if irq & mask:
            return irq
    raise AssertionError(f"none of ComIrqReg {mask:#04x} came: {irq:#04x}")


# --- MFAuthent: TxIRq and RxIRq are blocked ---------------------------------------------------

def _authent(emu, key):
    wr(emu, m.CommandReg, m.CMD_IDLE)
    wr(emu, m.ComIrqReg, 0x7F)
    wr(emu, m.FIFOLevelReg, 0x80)
    wr(emu, m.FIFODataReg, 0x60, 4, *key, *UID4)
    wr(emu, m.CommandReg, m.CMD_MF_AUTHENT)
    return _wait_irq(emu, m.IRQ_IDLE | m.IRQ_TIMER)


def test_mfauthent_sets_neither_txirq_nor_rxirq():
    emu = MFRC522Emulator()
    setup_reader(emu)
    emu.place(MifareClassic1K(UID4))
    # a wrong key: the card goes quiet and the timer ends the command
    assert select(emu, UID4) == 0x08
    irq = _authent(emu, b"\x00" * 6)
    assert irq & m.IRQ_TIMER and not irq & m.IRQ_IDLE and not emu.crypto1_on
    assert not irq & (m.IRQ_TX | m.IRQ_RX), f"MFAuthent raised TxIRq/RxIRq: ComIrqReg={irq:#04x}"
    # the right key: IdleIRq ends the command, MFCrypto1On is set, still no TxIRq/RxIRq
    assert select(emu, UID4) == 0x08
    irq = _authent(emu, b"\xff" * 6)
    assert irq & m.IRQ_IDLE and emu.crypto1_on
    assert not irq & (m.IRQ_TX | m.IRQ_RX), f"MFAuthent raised TxIRq/RxIRq: ComIrqReg={irq:#04x}"


# --- BitFramingReg.StartSend is write-only ----------------------------------------------------

def test_startsend_reads_0_and_a_read_modify_write_does_not_resend():
    emu = MFRC522Emulator()
    setup_reader(emu)
    tag = emu.place(NtagTag(NTAG_UID))
    start_transceive(emu, b"\x26", 7)  # REQA, StartSend with TxLastBits 7
    assert _wait_irq(emu, m.IRQ_RX | m.IRQ_TIMER) & m.IRQ_RX
    assert emu.exchanges == 1 and tag.state == "READY"
    # a driver clearing RxAlign the read-modify-write way, still in Transceive
    wr(emu, m.BitFramingReg, rd(emu, m.BitFramingReg) & ~0x70 & 0xFF)
    level = rd(emu, m.FIFOLevelReg)  # any access lets a frame in flight happen
    assert emu.exchanges == 1, f"the read-modify-write sent the frame again: {list(emu.frames)}"
    assert level == 2
    assert rd(emu, m.BitFramingReg) == 0x07, "StartSend (bit 7) must read 0"
    assert rd(emu, m.FIFOLevelReg) == 2 and bytes(rd(emu, m.FIFODataReg, 2)) == b"\x44\x00"
    assert tag.state == "READY"  # a second REQA would have sent it back to IDLE
    # writing StartSend itself still sends (Transceive waits for the next StartSend)
    wr(emu, m.FIFODataReg, 0x93, 0x20)
    wr(emu, m.BitFramingReg, 0x80)
    assert _wait_irq(emu, m.IRQ_RX | m.IRQ_TIMER) and emu.exchanges == 2


# --- a bit collision: CollReg and ValuesAfterColl --------------------------------------------

def _collide(emu, frame, txbits, values_after_coll):
    wr(emu, m.CollReg, 0x80 if values_after_coll else 0x00)
    start_transceive(emu, frame, txbits)
    assert _wait_irq(emu, m.IRQ_RX | m.IRQ_TIMER) & m.IRQ_RX
    err, coll = rd(emu, m.ErrorReg), rd(emu, m.CollReg)
    n = rd(emu, m.FIFOLevelReg)
    bits = rd(emu, m.ControlReg) & 0x07 or 8
    data = bytes(rd(emu, m.FIFODataReg, n)) if n > 1 else bytes([rd(emu, m.FIFODataReg)] if n else [])
    return err, coll, data, bits


def _two_cards():
    emu = MFRC522Emulator()
    setup_reader(emu)
    emu.add(NtagTag(NTAG_UID))
    emu.add(MifareClassic1K(MIFARE_UID))
    return emu


def test_collision_keeps_the_whole_frame_and_clears_bits_after_it_with_values_after_coll_0():
    emu = _two_cards()
    # WUPA: ATQAs 44 00 (NTAG) and 04 00 (MIFARE) differ in bit 7 (position 7)
    err, coll, data, bits = _collide(emu, b"\x52", 7, values_after_coll=False)
    assert err & m.ERR_COLL and coll == 0x07  # ValuesAfterColl 0, CollPosNotValid 0, CollPos 7
    assert (data, bits) == (b"\x04\x00", 8), "the whole 16-bit frame, bits 7.. cleared"
    # CL1: 88 04 10 20 a4 vs a1 b2 c3 d4 bcc: bit 1 differs; all 40 bits arrive, all 0
    err, coll, data, bits = _collide(emu, b"\x93\x20", 0, values_after_coll=False)
    assert err & m.ERR_COLL and coll == 0x01
    assert (data, bits) == (bytes(5), 8)


def test_collision_keeps_received_bits_with_values_after_coll_1():
    emu = _two_cards()
    err, coll, data, bits = _collide(emu, b"\x52", 7, values_after_coll=True)
    assert err & m.ERR_COLL and coll == 0x80 | 0x07
    assert (data, bits) == (b"\x44\x00", 8)  # what was sent: a 1 wherever a card sent a 1
    cl_ntag = b"\x88" + NTAG_UID[:3]
    cl_ntag += bytes([m.bcc(cl_ntag)])
    cl_mifare = MIFARE_UID + bytes([m.bcc(MIFARE_UID)])
    err, coll, data, bits = _collide(emu, b"\x93\x20", 0, values_after_coll=True)
    assert err & m.ERR_COLL and coll == 0x80 | 0x01
    assert data == bytes(a | b for a, b in zip(cl_ntag, cl_mifare)) and bits == 8
    # the reader takes the branch with a 1 at bit 0 (the MIFARE card) and asks again
    ans = xchg(emu, b"\x93\x21\x01", 1)
    assert not rd(emu, m.ErrorReg) & m.ERR_COLL and rd(emu, m.CollReg) & 0x20  # no collision
    assert ans == (bytes([MIFARE_UID[0] & 0xFE]) + MIFARE_UID[1:] + bytes([m.bcc(MIFARE_UID)]), 8)


def test_collision_past_bit_32_sets_collposnotvalid():
    # two NTAGs with the same UID (clones): both SELECTed, their READ answers differ in page 5
    emu = MFRC522Emulator()
    setup_reader(emu)
    a = emu.add(NtagTag.with_text(NTAG_UID, "S-1"))
    b = emu.add(NtagTag.with_text(NTAG_UID, "S-2"))
    select(emu, NTAG_UID)
    assert a.state == b.state == "ACTIVE"
    page4 = bytes(a.mem[16:20])
    assert page4 == bytes(b.mem[16:20]) and a.mem[20:36] != b.mem[20:36]
    err, coll, data, bits = _collide(emu, with_crc(b"\x30\x04"), 0, values_after_coll=False)
    assert err & m.ERR_COLL and coll & 0x20, f"CollReg={coll:#04x}: CollPosNotValid expected"
    assert len(data) == 18 and data[:4] == page4 and bits == 8  # 16 bytes + CRC, all there


def test_merge_answers_full_frame():
    # 0x44 vs 0x04 differ at bit 6 (0-based): collision at position 7, the frame stays 16 bits
    assert merge_answers([(b"\x44\x00", 8), (b"\x04\x00", 8)]) == (b"\x04\x00", 8, 7)
    assert merge_answers([(b"\x44\x00", 8), (b"\x04\x00", 8)], values_after_coll=True) == (b"\x44\x00", 8, 7)
    # a 4-bit answer against a 12-bit one: as long as the longest, bits kept or cleared
    assert merge_answers([(b"\x0a", 4), (b"\x0a\x05", 4)]) == (b"\x0a\x00", 4, 5)
    assert merge_answers([(b"\x0a", 4), (b"\x0a\x05", 4)], values_after_coll=True) == (b"\x0a\x05", 4, 5)


# --- the IRQ pin --------------------------------------------------------------------------------

def test_irq_pin_follows_enabled_requests_irqinv_and_pushpull():
    emu = MFRC522Emulator()
    setup_reader(emu)
    emu.place(NtagTag(NTAG_UID))
    # after reset: ComIEnReg 0x80 (IRqInv: active low), nothing enabled, open-drain: released
    assert rd(emu, m.ComIEnReg) == 0x80 and emu.irq_pin() is None
    wr(emu, m.ComIEnReg, 0x80 | m.IRQ_RX | m.IRQ_TIMER)  # RxIEn, TimerIEn
    start_transceive(emu, b"\x26", 7)
    assert emu.irq_pin() == 0, "an enabled RxIRq pulls the active-low pin down"
    assert rd(emu, m.Status1Reg) & 0x10  # Status1Reg.IRq
    wr(emu, m.ComIrqReg, 0x7F)
    assert emu.irq_pin() is None  # request cleared: released again
    # push-pull, not inverted: the pin drives 0 when idle, 1 on a request
    wr(emu, m.DivIEnReg, 0x80)
    wr(emu, m.ComIEnReg, m.IRQ_RX)
    assert emu.irq_pin() == 0
    wr(emu, m.ComIrqReg, 0x80 | m.IRQ_TIMER)  # a request that is not enabled: no change
    assert emu.irq_pin() == 0
    wr(emu, m.ComIrqReg, 0x80 | m.IRQ_RX)
    assert emu.irq_pin() == 1
    wr(emu, m.ComIrqReg, 0x7F)
    # DivIrqReg: CRCIRq through CRCIEn
    wr(emu, m.DivIEnReg, 0x80 | m.DIV_CRC)
    wr(emu, m.FIFODataReg, 0x30, 0x04)
    wr(emu, m.CommandReg, m.CMD_CALC_CRC)
    assert rd(emu, m.DivIrqReg) & m.DIV_CRC and emu.irq_pin() == 1


def test_irq_pin_reaches_the_rig_and_shows_the_timer_in_realtime():
    from hil.sim.rig import VirtualRig
    from hil.trace import Trace

    with VirtualRig(trace=Trace()) as rig:
        dev = rig.device("pad-irq")
        emu = dev.attach_spi("rfid", MFRC522Emulator(timing="realtime"), irq="rfid_irq")
        setup_reader(emu)
        assert dev._read_pin("rfid_irq") == 1  # open-drain released: the pull-up
        wr(emu, m.ComIEnReg, 0x80 | m.IRQ_TIMER)
        wr(emu, m.ControlReg, 0x40)  # TStartNow; no SPI access after this
        for _ in range(1000):  # the firmware polling the pin (a 25 ms timer; bounded, not timed)
            if dev._read_pin("rfid_irq") == 0:
                break
            time.sleep(0.005)
        assert dev._read_pin("rfid_irq") == 0, "the timer never pulled the IRQ pin low"
        assert rd(emu, m.ComIrqReg) & m.IRQ_TIMER
        try:
            dev.set_input("rfid_irq", 1)
        except ValueError as exc:
            assert "rfid_irq" in str(exc)
        else:
            raise AssertionError("set_input overrode a pin the chip drives")
        assert [v for (_, d, sig, v) in rig.trace.signals if d == "pad-irq" and sig == "rfid_irq"] == [1, 0]


IRQ_WAIT = """
from edge.hal_sim import SimHal
hal = SimHal({"device_id": "pad-irq", "sim": {"host": "%(host)s", "port": %(port)d}})
spi = hal.spi_device("rfid")
irq = hal.pin_in("rfid_irq", "up")   # machine.Pin(n, Pin.IN, Pin.PULL_UP) on a board

def wr(reg, v):
    spi.xfer(bytes(((reg << 1) & 0x7E, v)))

def rd(reg):
    return spi.xfer(bytes((0x80 | ((reg << 1) & 0x7E), 0)))[1]

def wait_irq_pin():
    # an IRQ-driven driver: watch the pin, touch no register until it falls
    for i in range(2000):
        if irq.value() == 0:
            return i
    return -1

wr(0x01, 0x0F)                      # SoftReset
wr(0x2A, 0x8D); wr(0x2B, 0x3E); wr(0x2C, 0); wr(0x2D, 49)   # TAuto, ~25 ms
wr(0x14, 0x83)                      # antenna on
wr(0x02, 0x80 | 0x20 | 0x01)        # IRqInv (active low), RxIEn, TimerIEn
for name in ("card", "empty"):
    print("IDLE", name, irq.value())
    wr(0x01, 0x00); wr(0x04, 0x7F); wr(0x0A, 0x80)
    wr(0x09, 0x26); wr(0x0D, 0x07)  # REQA, 7 bits
    wr(0x01, 0x0C); wr(0x0D, 0x87)  # Transceive, StartSend
    n = wait_irq_pin()
    c = rd(0x04)
    atqa = bytes((rd(0x09), rd(0x09))) if rd(0x0A) == 2 else b""
    print("IRQ", name, n >= 0, "rx" if c & 0x20 else "-", "timer" if c & 0x01 else "-", atqa.hex())
    wr(0x04, 0x7F)
    print("CLEARED", name, irq.value())
    if name == "card":
        hal.ask(b"R remove")        # a rig read the test turns into taking the card away
"""


def test_irq_style_wait_polls_the_pin_through_sim_hal():
    """A driver that waits on the IRQ pin instead of ComIrqReg, in real MicroPython through
    edge.hal_sim and the virtual rig: the card's answer and then the timer pull the pin low."""
    from hil.sim.rig import VirtualRig

    with VirtualRig() as rig:
        dev = rig.device("pad-irq")
        emu = dev.attach_spi("rfid", MFRC522Emulator(timing="realtime"), irq="rfid_irq")
        emu.place(NtagTag(NTAG_UID))
        dev.wire_input("remove", lambda: (emu.remove(), 1)[1])
        proc = run_micropython(IRQ_WAIT % {"host": rig.host, "port": rig.port}, heap="64k")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.split(" ")[0] in ("IDLE", "IRQ", "CLEARED")]
    assert lines == [
        "IDLE card 1",
        "IRQ card True rx - 4400",
        "CLEARED card 1",
        "IDLE empty 1",
        "IRQ empty True - timer ",
        "CLEARED empty 1",
    ], proc.stdout
