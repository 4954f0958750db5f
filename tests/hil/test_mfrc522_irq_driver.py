"""An unmodified IRQ-driven third-party driver on the MFRC522 emulator: `pi-rc522` (PyPI)
waits for a card on the chip's IRQ pin (RPi.GPIO falling-edge callback), not on ComIrqReg.

The package is installed into var/thirdparty/ as tests/firmware/test_fw_portability.py installs its
stubs (pip, --no-deps: spidev and RPi.GPIO only exist on a Pi). Its SPI and GPIO are replaced
at import by stand-ins: SPI transfers go to the emulator, and the IRQ input is the emulator's
``irq_pin()`` (open-drain, released = the PUD_UP pull-up), watched by a thread that calls the
driver's edge callback on a falling edge, as RPi.GPIO's event thread does.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
import threading
import time
import types

import pytest

from gateway.kinds.sample_pad import tags
from hil.sim.firmware import ROOT
from hil.sim.mfrc522 import MFRC522Emulator, MifareClassic1K

PACKAGE = "pi-rc522==2.3.0"
UID4 = bytes.fromhex("deadbeef")


def _install() -> str:
    target = ROOT / "var" / "thirdparty" / "pi-rc522"
    if not (target / "pirc522" / "rfid.py").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        PACKAGE], check=True)
    return str(target)


class _Gpio(types.ModuleType):
    """RPi.GPIO as far as pi-rc522 uses it; pin `irq` reads the emulator's IRQ output."""
    BOARD, BCM, OUT, IN, PUD_UP, PUD_DOWN, FALLING, RISING = 10, 11, 0, 1, 22, 21, 32, 31

    def __init__(self, emu: MFRC522Emulator, irq_pin: int):
        super().__init__("RPi.GPIO")
        self.emu, self.irq_pin = emu, irq_pin
        self.pull = 1
        self.falling_edges = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def setmode(self, mode): pass
    def setwarnings(self, flag): pass
    def output(self, pin, value): pass
    def cleanup(self, *a): self._stop.set()

    def setup(self, pin, mode, pull_up_down=None, initial=None):
        if pin == self.irq_pin:
            self.pull = 0 if pull_up_down == self.PUD_DOWN else 1

    def input(self, pin):
        level = self.emu.irq_pin()
        return self.pull if level is None else level

    def add_event_detect(self, pin, edge, callback=None, bouncetime=None):
        assert pin == self.irq_pin and edge == self.FALLING

        def watch():  # RPi.GPIO's event thread, polling the line
            last = self.input(pin)
            while not self._stop.is_set():
                now = self.input(pin)
                if last == 1 and now == 0:
                    self.falling_edges += 1
                    callback(pin)
                last = now
                time.sleep(0.0005)

        t = threading.Thread(target=watch, daemon=True, name="gpio-edge")
        t.start()
        self._threads.append(t)


class _SpiDev:
    def __init__(self, emu):
        self.emu = emu
        self.max_speed_hz = self.mode = 0

    def open(self, bus, device): pass
    def close(self): pass

    def xfer2(self, data):
        return list(self.emu.transfer(bytes(data)))


@pytest.fixture
def pirc(monkeypatch):
    emu = MFRC522Emulator(timing="realtime")
    gpio = _Gpio(emu, irq_pin=18)
    rpi = types.ModuleType("RPi")
    rpi.GPIO = gpio
    spidev = types.ModuleType("spidev")
    spidev.SpiDev = lambda: _SpiDev(emu)
    monkeypatch.syspath_prepend(_install())
    for name, mod in (("RPi", rpi), ("RPi.GPIO", gpio), ("spidev", spidev)):
        monkeypatch.setitem(sys.modules, name, mod)
    for name in [n for n in sys.modules if n == "pirc522" or n.startswith("pirc522.")]:
        monkeypatch.delitem(sys.modules, name)
    rfid_mod = importlib.import_module("pirc522.rfid")
    reader = rfid_mod.RFID(pin_irq=18, pin_rst=0, pin_mode=gpio.BOARD)
    yield reader, emu, gpio
    gpio.cleanup()


def test_pi_rc522_waits_for_a_card_on_the_irq_pin_then_reads_it(pirc):
    reader, emu, gpio = pirc
    assert reader.__class__.__module__ == "pirc522.rfid"
    # an empty field: REQA after REQA, nobody answers, the pin stays released (high)
    reader.wait_for_tag(timeout=0.3)  # returns at its timeout either way
    assert gpio.falling_edges == 0
    emu.place(MifareClassic1K.with_sample(UID4, "S-2001"))
    reader.wait_for_tag(timeout=5)
    assert gpio.falling_edges >= 1, "the card's answer never pulled the IRQ pin low"
    # the rest of its API on the same chip: REQA, anticollision, select, MFAuthent, read
    err, _ = reader.request()
    assert not err
    err, uid = reader.anticoll()
    assert not err and bytes(uid[:4]) == UID4
    assert not reader.select_tag(uid)
    assert not reader.card_auth(reader.auth_a, 4, [0xFF] * 6, uid)
    err, data = reader.read(4)
    assert not err and bytes(data) == tags.mifare_block4("S-2001")
    reader.stop_crypto()
