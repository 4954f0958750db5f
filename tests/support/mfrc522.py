"""The MFRC522 emulator (hil/sim/mfrc522.py) from the test side: a register-level client
(`wr`, `rd`, `xchg`, `select`, as a driver does it) and `run_driver`, which runs the real
firmware driver (firmware/edge/drivers/mfrc522.py) in the real MicroPython against an emulator
over a tiny sim-link bridge."""
from __future__ import annotations

import json
import socket
import threading

from hil.sim import mfrc522 as m
from hil.sim.mfrc522 import MFRC522Emulator, with_crc
from tests.support.micropython import run_micropython

UID7 = bytes.fromhex("04a1b2c3d4e5f6")
UID4 = bytes.fromhex("deadbeef")


# --- a register-level client for the emulator (test side) ----------------------------------

def wr(emu, reg, *vals):
    emu.transfer(bytes([(reg << 1) & 0x7E, *vals]))


def rd(emu, reg, n=1):
    a = 0x80 | ((reg << 1) & 0x7E)
    return emu.transfer(bytes([a] * n + [0]))[1:] if n > 1 else emu.transfer(bytes([a, 0]))[1]


def setup_reader(emu):
    wr(emu, m.CommandReg, m.CMD_SOFT_RESET)
    wr(emu, m.TModeReg, 0x8D)
    wr(emu, m.TPrescalerReg, 0x3E)
    wr(emu, m.TReloadRegH, 0)
    wr(emu, m.TReloadRegL, 49)
    wr(emu, m.ModeReg, 0x3D)
    wr(emu, m.TxControlReg, 0x83)


def start_transceive(emu, frame: bytes, txbits: int) -> None:
    wr(emu, m.CommandReg, m.CMD_IDLE)
    wr(emu, m.ComIrqReg, 0x7F)
    wr(emu, m.FIFOLevelReg, 0x80)
    wr(emu, m.FIFODataReg, *frame)
    wr(emu, m.BitFramingReg, txbits)
    wr(emu, m.CommandReg, m.CMD_TRANSCEIVE)
    wr(emu, m.BitFramingReg, 0x80 | txbits)


def xchg(emu, frame: bytes, txbits: int = 0):
    """One Transceive as a driver does it; returns (answer bytes, last bits) or None."""
    start_transceive(emu, frame, txbits)
    for _ in range(200):
        irq = rd(emu, m.ComIrqReg)
        if irq & 0x31:
            break
    else:
        raise AssertionError("no IRQ")
    if not irq & m.IRQ_RX:
        return None
    n = rd(emu, m.FIFOLevelReg)
    bits = rd(emu, m.ControlReg) & 7 or 8
    data = rd(emu, m.FIFODataReg, n) if n > 1 else bytes([rd(emu, m.FIFODataReg)])
    return bytes(data), bits


def select(emu, uid: bytes, wake: bool = True):
    if wake:
        assert xchg(emu, b"\x52", 7) is not None
    levels = [b"\x88" + uid[:3], uid[3:]] if len(uid) == 7 else [uid]
    sak = None
    for lvl, cl in enumerate(levels):
        sel = 0x93 + 2 * lvl
        ans, _ = xchg(emu, bytes([sel, 0x20]))
        assert ans == cl + bytes([m.bcc(cl)])
        ans, _ = xchg(emu, with_crc(bytes([sel, 0x70]) + ans))
        sak = ans[0]
    return sak


# --- the real driver in the real MicroPython, against the emulator ----------------------------

class Bridge:
    """Sim-link subset: `S <bus> <hex>` -> `<hex>`, plus `Q <action>` -> `OK` (test control)."""

    def __init__(self, emu: MFRC522Emulator, actions: dict | None = None):
        self.emu = emu
        self.actions = actions or {}
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn, conn.makefile("rwb") as f:
            for raw in f:
                op, _, rest = raw.decode().strip().partition(" ")
                try:
                    if op == "S":
                        _bus, _, hexdata = rest.partition(" ")
                        f.write(self.emu.transfer(bytes.fromhex(hexdata)).hex().encode() + b"\n")
                    elif op == "Q":
                        self.actions[rest]()
                        f.write(b"OK\n")
                    else:
                        f.write(b"E unknown\n")
                except Exception as exc:  # noqa: BLE001 - report, never hang the firmware
                    self.errors.append(repr(exc))
                    f.write(b"E " + repr(exc).encode() + b"\n")
                f.flush()

    def close(self):
        self.srv.close()


PRELUDE = """
import socket, time, json
from binascii import hexlify, unhexlify
from edge.drivers.mfrc522 import MFRC522

class Spi:
    def __init__(self, port):
        self.s = socket.socket()
        self.s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        self.n = 0
    def ask(self, line):
        self.s.write(line + b"\\n")
        r = self.s.readline().strip()
        if r.startswith(b"E"):
            raise OSError(r)
        return r
    def xfer(self, data):
        self.n += 1
        return unhexlify(self.ask(b"S rfid " + hexlify(data)))

spi = Spi(%(port)d)
def world(name):
    spi.ask(b"Q " + name.encode())
def out(**kw):
    print("R " + json.dumps(kw))
def info(c):
    return None if c is None else [c.uid_hex, c.tech]
rdr = MFRC522(spi)
out(version=rdr.init())
"""


def run_driver(emu, body: str, actions: dict | None = None, heap: str = "64k", timeout: float = 20):
    bridge = Bridge(emu, actions)
    try:
        proc = run_micropython(PRELUDE % {"port": bridge.port} + body, heap=heap, timeout=timeout)
    finally:
        bridge.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not bridge.errors, bridge.errors
    lines = [json.loads(line[2:]) for line in proc.stdout.splitlines() if line.startswith("R ")]
    assert lines and lines[0]["version"] == 0x92
    return lines[1:]
