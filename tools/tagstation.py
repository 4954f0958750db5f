"""Tag station: write a product/sample identity onto a tag, read it back, say yes or no.

A Raspberry Pi with an MFRC522 on SPI (the ``mfrc522`` package), a green LED, a red LED and a
buzzer (gpiozero). Staff put a tag on the reader; the station writes the identity, reads the
tag back and compares: green = the tag carries exactly that identity; red + three beeps = it
does not (the reason is printed). Then it waits for the tag to be taken away.

What is written is what the sample pad firmware reads (docs/protocol.md, gateway/kinds/sample_pad/tags.py):

* NTAG213/215/216: an NDEF message from page 4 — a Text record with the identity, or with
  ``--uri-base`` a URI record ``<base><identity>`` (a GS1 Digital Link or shop URL whose last
  path segment is the identity). The capability container (page 3) is written if blank.
* MIFARE Classic 1K: block 4, the identity in ASCII, NUL-padded (key A, default FF..FF).
* Garments (``--gs1``, docs/fitting-rooms.md): the identity is ``<GTIN>/<serial>``; the tag
  gets a URI record ``https://id.gs1.org/01/<GTIN-14>/21/<serial>`` (GS1 Digital Link). A GTIN
  with a wrong check digit is refused before anything is written. NTAG only.

    python -m tools.tagstation write S-1001 S-1002      # one tag per identity, in order
    python -m tools.tagstation verify S-1001
    python -m tools.tagstation read
    python -m tools.tagstation --emulate write S-1001   # no hardware: the MFRC522 emulator
    python -m tools.tagstation --gs1 write 9506000134352/A17   # garment: GTIN/serial

Pins (BCM): ``--rst 25 --green 23 --red 24 --buzzer 18``, SPI ``--spi-bus 0 --spi-dev 0``.

The reader is the ``mfrc522`` package's ``MFRC522`` class, used through its low-level
methods (``MFRC522_Request``, ``MFRC522_Anticoll``, ``MFRC522_SelectTag``, ``MFRC522_Auth``,
``MFRC522_Read``, ``MFRC522_Write``, ``MFRC522_ToCard``, ``CalulateCRC``): its
``SimpleMFRC522`` only knows 4-byte UIDs and MIFARE blocks 8-10, and its ``MFRC522_Write``
reports nothing, which is why every write here is verified by reading back.
`emulated_mfrc522(emulator)` builds the same class on top of `hil.sim.mfrc522.MFRC522Emulator`,
with the Pi-only modules (``RPi.GPIO``, ``spidev``) replaced at import.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

from gateway.kinds.sample_pad import tags

DEFAULT_KEY = b"\xff" * 6
MIFARE_BLOCK = 4
NTAG_BY_STORAGE = {v["storage"]: k for k, v in tags.NTAG_KINDS.items()}
ACK = 0x0A


class StationError(RuntimeError):
    pass


@dataclass
class Card:
    uid: bytes
    sak: int
    tech: str  # ntag213 | ntag215 | ntag216 | mifare-1k | unknown

    @property
    def uid_hex(self) -> str:
        return self.uid.hex()


@dataclass
class Result:
    ok: bool
    identity: str | None  # what was to be written / verified
    found: str | None = None  # what the tag holds (read back)
    uid: str | None = None
    tech: str | None = None
    reason: str | None = None
    seconds: float = 0.0

    def line(self) -> str:
        head = "OK  " if self.ok else "FAIL"
        tag = f"{self.tech} {self.uid}" if self.uid else "no tag"
        why = "" if self.ok else f" — {self.reason}"
        return f"{head} {tag}: {self.found!r}{why} ({self.seconds * 1000:.0f} ms)"


# --- the reader -----------------------------------------------------------------------------------

class Reader:
    """ISO 14443A operations a tag station needs, on an ``mfrc522.MFRC522`` object."""

    def __init__(self, mf):
        self.mf = mf

    def _ok(self, status) -> bool:
        return status == self.mf.MI_OK

    def _transceive(self, data: list[int], crc: bool = True) -> tuple[bool, list[int], int]:
        mf = self.mf
        mf.Write_MFRC522(mf.BitFramingReg, 0x00)
        buf = list(data) + (mf.CalulateCRC(list(data)) if crc else [])
        status, back, bits = mf.MFRC522_ToCard(mf.PCD_TRANSCEIVE, buf)
        return self._ok(status), list(back or []), bits or 0

    def detect(self, wake: bool = False) -> Card | None:
        """REQA (or WUPA, which also wakes a halted card), anticollision, select (both
        cascade levels for 7-byte UIDs). None when no card answers."""
        mf = self.mf
        for _ in range(2):  # a card that was active drops to idle on the first REQA
            status, _ = mf.MFRC522_Request(mf.PICC_REQALL if wake else mf.PICC_REQIDL)
            if self._ok(status):
                break
        else:
            return None
        status, cl1 = mf.MFRC522_Anticoll()
        if not self._ok(status) or len(cl1) != 5:
            return None
        sak = mf.MFRC522_SelectTag(list(cl1))
        if cl1[0] == 0x88:  # cascade tag: a 7-byte UID continues at level 2
            if not sak & 0x04:
                return None
            ok, cl2, _ = self._transceive([0x95, 0x20], crc=False)
            if not ok or len(cl2) != 5 or cl2[0] ^ cl2[1] ^ cl2[2] ^ cl2[3] != cl2[4]:
                return None
            ok, back, bits = self._transceive([0x95, 0x70] + cl2)
            if not ok or bits != 24:
                return None
            sak = back[0]
            uid = bytes(cl1[1:4] + cl2[0:4])
        else:
            uid = bytes(cl1[0:4])
        if sak & 0x04:
            return None  # still incomplete: not a card we know
        if sak == 0x08:
            tech = "mifare-1k"
        elif sak == 0x00 and len(uid) == 7:
            version = self.get_version()
            tech = NTAG_BY_STORAGE.get(version[6], "unknown") if version and len(version) >= 8 else "unknown"
        else:
            tech = "unknown"
        return Card(uid, sak, tech)

    def get_version(self) -> bytes | None:
        ok, back, _bits = self._transceive([0x60])
        return bytes(back[:8]) if ok and len(back) >= 8 else None

    def read16(self, addr: int) -> bytes:
        """READ: 4 NTAG pages or one MIFARE block."""
        data = self.mf.MFRC522_Read(addr)
        if data is None or len(data) != 16:
            raise StationError(f"read of page/block {addr} failed")
        return bytes(data)

    def ntag_write_page(self, page: int, data: bytes) -> None:
        ok, back, bits = self._transceive([0xA2, page] + list(data))
        if not ok or bits != 4 or (back[0] & 0x0F) != ACK:
            raise StationError(f"NTAG write of page {page} was not acknowledged")

    def mifare_auth(self, block: int, key: bytes, uid: bytes) -> None:
        mf = self.mf
        status = mf.MFRC522_Auth(mf.PICC_AUTHENT1A, block, list(key), list(uid[:4]))
        if not self._ok(status) or not mf.Read_MFRC522(mf.Status2Reg) & 0x08:
            raise StationError(f"authentication with key A for block {block} failed (wrong key?)")

    def mifare_write_block(self, block: int, data: bytes) -> None:
        self.mf.MFRC522_Write(block, list(data))  # returns nothing: verified by reading back

    def stop_crypto(self) -> None:
        self.mf.MFRC522_StopCrypto1()

    def halt(self) -> None:
        """HLTA: the card stays quiet for REQA until it leaves the field (WUPA still wakes it)."""
        self.stop_crypto()
        self._transceive([0x50, 0x00])


# --- what goes on a tag -------------------------------------------------------------------------------

def garment_identity(identity: str) -> str:
    """``<GTIN>/<serial>`` normalised to ``<GTIN-14>/<serial>`` (raises ValueError: bad GTIN)."""
    from gateway.kinds.fitting_room import gs1

    gtin, sep, serial = identity.partition("/")
    if not sep:
        raise ValueError(f"garment identity {identity!r} must be <GTIN>/<serial>")
    return f"{gs1.normalise_gtin(gtin)}/{gs1.validate_serial(serial)}"


def ndef_area(identity: str, uri_base: str | None, gs1: bool = False) -> bytes:
    if gs1:
        from gateway.kinds.fitting_room.gs1 import digital_link

        rec = tags.ndef_uri_record(digital_link(*garment_identity(identity).split("/", 1)))
    else:
        rec = tags.ndef_uri_record(uri_base + identity) if uri_base else tags.ndef_text_record(identity)
    area = tags.ndef_tlv(tags.ndef_message([rec]))
    return area + b"\x00" * (-len(area) % 4)


def write_identity(reader: Reader, card: Card, identity: str, uri_base: str | None = None,
                   key: bytes = DEFAULT_KEY, gs1: bool = False) -> None:
    if gs1 and not card.tech.startswith("ntag"):
        raise StationError(f"garment tags are NTAG21x (GS1 Digital Link in NDEF), not {card.tech}")
    if card.tech == "mifare-1k":
        block = tags.mifare_block4(identity)
        reader.mifare_auth(MIFARE_BLOCK, key, card.uid)
        reader.mifare_write_block(MIFARE_BLOCK, block)
        return
    if not card.tech.startswith("ntag"):
        raise StationError(f"cannot write a {card.tech} tag (SAK {card.sak:#04x}); use NTAG21x or MIFARE Classic 1K")
    geo = tags.NTAG_KINDS[card.tech]
    area = ndef_area(identity, uri_base, gs1)
    user_bytes = (geo["user_last"] - geo["user_first"] + 1) * 4
    if len(area) > user_bytes:
        raise StationError(f"identity needs {len(area)} bytes, a {card.tech} holds {user_bytes}")
    cc_page = reader.read16(3)[:4]
    want_cc = tags.ntag_capability_container(card.tech)
    if cc_page == b"\x00\x00\x00\x00":
        reader.ntag_write_page(3, want_cc)  # one-time programmable: only on a blank tag
    elif cc_page[0] != 0xE1:
        raise StationError(f"page 3 is {cc_page.hex()}, not an NDEF capability container: not formatted for NDEF")
    for i in range(0, len(area), 4):
        reader.ntag_write_page(4 + i // 4, area[i:i + 4])


def read_identity(reader: Reader, card: Card, key: bytes = DEFAULT_KEY,
                  gs1: bool = False) -> tuple[str | None, bytes]:
    """The identity the pad firmware would read (``gs1``: ``<GTIN-14>/<serial>`` as the
    fitting room reads it), and the raw bytes it was read from."""
    if card.tech == "mifare-1k":
        reader.mifare_auth(MIFARE_BLOCK, key, card.uid)
        block = reader.read16(MIFARE_BLOCK)
        return tags.sample_id_from_block4(block), block
    if not card.tech.startswith("ntag"):
        raise StationError(f"cannot read a {card.tech} tag")
    last = tags.NTAG_KINDS[card.tech]["user_last"]
    mem = bytearray()
    page = 0
    while page <= last:
        mem += reader.read16(page)
        page += 4
        if page > 4 and tags.TLV_TERMINATOR in mem[16:]:
            try:
                if tags.find_ndef_tlv(bytes(mem[16:])) is not None:
                    break
            except ValueError:  # TLV longer than what is read so far
                pass
    records = tags.ntag_records_from_pages(bytes(mem))
    if gs1:
        found = tags.garment_from_records(records)
        return (None if found is None else "/".join(found)), bytes(mem)
    return tags.sample_id_from_records(records), bytes(mem)


# --- feedback -----------------------------------------------------------------------------------------

class Feedback:
    """Green LED = written and verified; red LED + beeps = failed. gpiozero devices."""

    def __init__(self, green=None, red=None, buzzer=None, *, beeps: int = 3, beep_s: float = 0.12,
                 pin_factory=None):
        from gpiozero import LED, Buzzer

        def mk(cls, pin):
            if pin is None or not isinstance(pin, (int, str)):
                return pin
            return cls(pin, pin_factory=pin_factory)

        self.green = mk(LED, green)
        self.red = mk(LED, red)
        self.buzzer = mk(Buzzer, buzzer)
        self.beeps, self.beep_s = beeps, beep_s

    def idle(self) -> None:
        for d in (self.green, self.red):
            if d is not None:
                d.off()

    def ok(self) -> None:
        if self.red is not None:
            self.red.off()
        if self.green is not None:
            self.green.on()

    def fail(self) -> None:
        if self.green is not None:
            self.green.off()
        if self.red is not None:
            self.red.on()
        if self.buzzer is not None:
            self.buzzer.beep(on_time=self.beep_s, off_time=self.beep_s, n=self.beeps, background=False)

    def close(self) -> None:
        for d in (self.green, self.red, self.buzzer):
            if d is not None:
                d.close()


# --- the station --------------------------------------------------------------------------------------

class TagStation:
    def __init__(self, reader: Reader, feedback: Feedback | None = None, *, uri_base: str | None = None,
                 key: bytes = DEFAULT_KEY, poll_s: float = 0.05, log=None, gs1: bool = False):
        self.reader = reader
        self.gs1 = gs1
        self.feedback = feedback
        self.uri_base = uri_base
        self.key = key
        self.poll_s = poll_s
        self.log = log or (lambda msg: None)

    def wait_card(self, timeout: float = 30.0, wake: bool = False) -> Card | None:
        """Poll for a card. ``wake=False`` (REQA) ignores a card this station halted after
        writing it, so a finished tag left on the reader is never written again by the next
        `program`; ``wake=True`` (WUPA) finds it too (reading and verifying)."""
        deadline = time.monotonic() + timeout
        while True:
            card = self.reader.detect(wake=wake)
            if card is not None:
                return card
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.poll_s)

    def wait_removed(self, timeout: float = 60.0, misses: int = 3) -> bool:
        """Wait until the (halted) card has left the field: `misses` WUPAs in a row unanswered."""
        deadline = time.monotonic() + timeout
        gone = 0
        while time.monotonic() < deadline:
            if self.reader.detect(wake=True) is None:
                gone += 1
                if gone >= misses:
                    if self.feedback:
                        self.feedback.idle()
                    return True
            else:
                gone = 0
                self.reader.halt()
            time.sleep(self.poll_s)
        return False

    def _finish(self, res: Result, t0: float) -> Result:
        res.seconds = time.monotonic() - t0
        if self.feedback:
            (self.feedback.ok if res.ok else self.feedback.fail)()
        self.log(res.line())
        return res

    def program(self, identity: str, timeout: float = 30.0) -> Result:
        """Wait for a tag, write `identity`, read it back, compare; feedback either way."""
        if self.feedback:
            self.feedback.idle()
        card = self.wait_card(timeout)
        t0 = time.monotonic()
        if card is None:
            return self._finish(Result(False, identity, reason=f"no tag within {timeout:.0f}s"), t0)
        res = Result(False, identity, uid=card.uid_hex, tech=card.tech)
        try:
            want = garment_identity(identity) if self.gs1 else identity
            write_identity(self.reader, card, identity, self.uri_base, self.key, self.gs1)
            res.found, _ = read_identity(self.reader, card, self.key, self.gs1)
            res.ok = res.found == want
            if not res.ok:
                res.reason = f"read back {res.found!r}"
        except (StationError, ValueError) as e:
            res.reason = str(e)
        finally:
            self.reader.halt()
        return self._finish(res, t0)

    def verify(self, identity: str | None, timeout: float = 30.0) -> Result:
        """Wait for a tag and check it holds `identity` (None: just read it)."""
        if self.feedback:
            self.feedback.idle()
        card = self.wait_card(timeout, wake=True)
        t0 = time.monotonic()
        if card is None:
            return self._finish(Result(False, identity, reason=f"no tag within {timeout:.0f}s"), t0)
        res = Result(False, identity, uid=card.uid_hex, tech=card.tech)
        try:
            res.found, _ = read_identity(self.reader, card, self.key, self.gs1)
            if identity is not None and self.gs1:
                identity = garment_identity(identity)
            res.ok = res.found is not None if identity is None else res.found == identity
            if not res.ok:
                res.reason = "no identity on the tag" if res.found is None else f"holds {res.found!r}"
        except (StationError, ValueError) as e:
            res.reason = str(e)
        finally:
            self.reader.halt()
        return self._finish(res, t0)


# --- building the mfrc522 reader --------------------------------------------------------------------

class EmulatedSpiDev:
    """``spidev.SpiDev`` on top of an MFRC522 emulator: one xfer2 = one chip-select cycle.

    Each transfer takes the time it takes on a Pi (the bits at ``max_speed_hz`` plus the
    spidev ioctl, ~20 us): the ``mfrc522`` package times out its wait loops by counting
    register reads (2000), so a bus that is infinitely fast would make an NTAG's 4 ms EEPROM
    write look like a lost card against a ``timing="realtime"`` emulator."""

    def __init__(self, emulator, overhead_s: float = 20e-6):
        self.emulator = emulator
        self.max_speed_hz = 1000000
        self.mode = 0
        self.opened = None
        self.overhead_s = overhead_s
        self.transfers = 0

    def open(self, bus: int, device: int) -> None:
        self.opened = (bus, device)

    def close(self) -> None:
        self.opened = None

    def xfer2(self, data):
        end = time.perf_counter() + self.overhead_s + 8 * len(data) / self.max_speed_hz
        out = list(self.emulator.transfer(bytes(data)))
        self.transfers += 1
        if getattr(self.emulator, "timing", "instant") == "realtime":
            while time.perf_counter() < end:  # sleep() is too coarse for tens of microseconds
                pass
        return out

    xfer = xfer2


def _stub_gpio() -> types.ModuleType:
    gpio = types.ModuleType("RPi.GPIO")
    state = {"mode": None, "pins": {}}
    gpio.BOARD, gpio.BCM, gpio.OUT, gpio.IN, gpio.HIGH, gpio.LOW = 10, 11, 0, 1, 1, 0
    gpio.getmode = lambda: state["mode"]
    gpio.setmode = lambda m: state.__setitem__("mode", m)
    gpio.setwarnings = lambda flag: None
    gpio.setup = lambda pin, mode, *a, **kw: state["pins"].__setitem__(pin, 0)
    gpio.output = lambda pin, v: state["pins"].__setitem__(pin, v)
    gpio.cleanup = lambda *a: state["pins"].clear()
    gpio.state = state
    return gpio


def _load_mfrc522_module(spi_factory=None, name: str = "_mfrc522_station"):
    """The ``mfrc522.MFRC522`` module. With `spi_factory`, a private copy is loaded whose
    ``spidev`` and ``RPi.GPIO`` are stand-ins (RPi.GPIO refuses to import off a Pi)."""
    if spi_factory is None:
        from mfrc522 import MFRC522 as mod_cls

        return sys.modules[mod_cls.__module__]
    spec = importlib.util.find_spec("mfrc522")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise StationError("the mfrc522 package is not installed (pip install mfrc522)")
    path = Path(next(iter(spec.submodule_search_locations))) / "MFRC522.py"
    gpio = _stub_gpio()
    rpi = types.ModuleType("RPi")
    rpi.GPIO = gpio
    spidev = types.ModuleType("spidev")
    spidev.SpiDev = spi_factory
    saved = {k: sys.modules.get(k) for k in ("RPi", "RPi.GPIO", "spidev")}
    sys.modules.update({"RPi": rpi, "RPi.GPIO": gpio, "spidev": spidev})
    try:
        mspec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)  # type: ignore[union-attr]
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mod


def emulated_mfrc522(emulator):
    """An ``mfrc522.MFRC522`` whose SPI bus is the emulator (tests, ``--emulate``)."""
    mod = _load_mfrc522_module(lambda: EmulatedSpiDev(emulator))
    return mod.MFRC522(bus=0, device=0, pin_mode=11, pin_rst=25)


def hardware_mfrc522(bus: int = 0, device: int = 0, rst: int = 25):
    mod = _load_mfrc522_module()
    return mod.MFRC522(bus=bus, device=device, pin_mode=11, pin_rst=rst)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.tagstation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--emulate", action="store_true", help="no hardware: emulated MFRC522 with a blank NTAG213")
    ap.add_argument("--spi-bus", type=int, default=0)
    ap.add_argument("--spi-dev", type=int, default=0)
    ap.add_argument("--rst", type=int, default=25, help="BCM pin on the MFRC522's RST")
    ap.add_argument("--green", default="23", help="BCM pin of the green LED ('' for none)")
    ap.add_argument("--red", default="24", help="BCM pin of the red LED ('' for none)")
    ap.add_argument("--buzzer", default="18", help="BCM pin of the buzzer ('' for none)")
    ap.add_argument("--uri-base", help="write a URI record <base><id> instead of a Text record (NTAG)")
    ap.add_argument("--gs1", action="store_true",
                    help="garment tags: ids are <GTIN>/<serial>, written as a GS1 Digital Link URI")
    ap.add_argument("--key", default="ffffffffffff", help="MIFARE key A (hex)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait for each tag")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write identities, one tag each")
    w.add_argument("ids", nargs="+")
    v = sub.add_parser("verify", help="check a tag holds an identity")
    v.add_argument("id")
    sub.add_parser("read", help="show what a tag holds")
    args = ap.parse_args(argv)

    pin = lambda s: int(s) if s else None
    if args.emulate:
        from gpiozero import Device
        from gpiozero.pins.mock import MockFactory

        from hil.sim.mfrc522 import MFRC522Emulator, NtagTag

        Device.pin_factory = MockFactory()
        emu = MFRC522Emulator(timing="realtime")
        mf = emulated_mfrc522(emu)
    else:
        mf = hardware_mfrc522(args.spi_bus, args.spi_dev, args.rst)
    fb = Feedback(pin(args.green), pin(args.red), pin(args.buzzer))
    station = TagStation(Reader(mf), fb, uri_base=args.uri_base, key=bytes.fromhex(args.key), log=print,
                         gs1=args.gs1)
    failures = 0
    try:
        if args.cmd == "write":
            for n, ident in enumerate(args.ids):
                if args.emulate:  # a fresh blank tag for each identity
                    emu.place(NtagTag(bytes([0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, n & 0xFF])))
                print(f"put a tag for {ident} on the reader ...")
                res = station.program(ident, args.timeout)
                failures += not res.ok
                if not args.emulate:
                    station.wait_removed(args.timeout)
        elif args.cmd == "verify":
            if args.emulate:
                emu.place(NtagTag.with_text(bytes.fromhex("04a1b2c3d4e5f6"), args.id))
            failures += not station.verify(args.id, args.timeout).ok
        else:
            if args.emulate:
                emu.place(NtagTag.with_text(bytes.fromhex("04a1b2c3d4e5f6"), "S-1001"))
            failures += not station.verify(None, args.timeout).ok
    except KeyboardInterrupt:
        return 130
    finally:
        fb.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
