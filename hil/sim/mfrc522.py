"""A register-level MFRC522 emulator with ISO 14443A cards (NTAG21x, MIFARE Classic 1K).

The emulator sits behind the virtual rig's SPI bus (``SimDevice.attach_spi(bus, emu)``): the
firmware's real driver talks to it register by register, exactly as it would to the chip.

SPI (datasheet 8.1.2): one chip-select cycle per ``transfer``. The first byte is an address
byte ``(reg << 1) & 0x7E``, bit 7 set for a read. In a read cycle every byte sent is the next
address to read and the chip answers it in the following byte (so ``[A, A, ..., A, 0]`` pops
successive FIFO bytes). In a write cycle every byte after the address is written to that
register (several bytes into FIFODataReg).

Emulated: SoftReset, VersionReg, antenna via TxControlReg, ComIrqReg/DivIrqReg Set1/Set2
semantics, the 64-byte FIFO (FlushBuffer, BufferOvfl, water-level alerts), BitFramingReg
(TxLastBits, StartSend), ControlReg (RxLastBits, TStartNow/TStopNow), ErrorReg,
Status1Reg/Status2Reg (MFCrypto1On), the CRC coprocessor (CalcCRC, CRC_A, ModeReg preset),
TxModeReg/RxModeReg hardware CRC, the Transceive, Transmit and MFAuthent commands and the
timer (TModeReg TAuto/TAutoRestart, prescaler, reload), which raises TimerIRq when no card
answers. MFAuthent compares keys instead of running Crypto1; "encrypted" frames are modelled
as a flag both ends must agree on (a reader that forgets to clear MFCrypto1On cannot talk to a
fresh card, as on hardware).

Several cards in the field (a fitting room's shelf): every card that is addressed answers,
and answers that differ collide. The first differing bit sets CollErr in ErrorReg, ErrIRq, and
CollReg.CollPos (1-based, counted from bit 0 of the first received byte, so it includes the
RxAlign offset; 0 = bit 32, CollPosNotValid past 32); the FIFO holds the bits received before
the collision (ValuesAfterColl = 0: later bits read as 0). Cards answer bit-oriented
anticollision frames (NVB with a bit count, TxLastBits) with the rest of their cascade level,
the bits the reader sent masked to 0 (what RxAlign would align). ``place`` keeps the one-card
behaviour (it replaces whatever is on the reader); ``add``/``remove(tag)`` hold several.

The IRQ pin: ``irq_pin()`` gives its level from the enabled request bits (ComIEnReg/ComIrqReg,
DivIEnReg/DivIrqReg), inverted by IRqInv, open-drain unless IRQPushPull; the virtual rig wires
it to an input the firmware reads (``attach_spi(..., irq=...)``, docs/hil.md). The sim link has
no edge interrupts: a driver polls the pin's level.

Not emulated: RxAlign itself (see above), parity/modem settings, receive gain, power-down, the
Mem/RandomID buffer, MSBFirst CRC, WrErr when the FIFO is written during MFAuthent.

Timing: ``timing="instant"`` (default) runs the air interface in zero time: a card's answer
or the timer's expiry is visible at the next register access. ``timing="realtime"`` uses wall
clock: frames take their 106 kbit/s air time and the timer expires after its programmed
period, so a driver's wait loop is exercised as on a board. In both modes the timer only
fires if the driver programmed it (TAuto or TStartNow): a driver that never sets the timer up
never sees TimerIRq.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from gateway.kinds.sample_pad import tags as _tags

# --- registers (datasheet table 20) ---------------------------------------------------------
CommandReg, ComIEnReg, DivIEnReg, ComIrqReg, DivIrqReg = 0x01, 0x02, 0x03, 0x04, 0x05
ErrorReg, Status1Reg, Status2Reg, FIFODataReg, FIFOLevelReg = 0x06, 0x07, 0x08, 0x09, 0x0A
WaterLevelReg, ControlReg, BitFramingReg, CollReg = 0x0B, 0x0C, 0x0D, 0x0E
ModeReg, TxModeReg, RxModeReg, TxControlReg, TxASKReg = 0x11, 0x12, 0x13, 0x14, 0x15
CRCResultRegH, CRCResultRegL = 0x21, 0x22
DemodReg = 0x19
TModeReg, TPrescalerReg, TReloadRegH, TReloadRegL = 0x2A, 0x2B, 0x2C, 0x2D
TCounterValRegH, TCounterValRegL = 0x2E, 0x2F
VersionReg = 0x37

# commands
CMD_IDLE, CMD_MEM, CMD_RANDOM_ID, CMD_CALC_CRC, CMD_TRANSMIT = 0x00, 0x01, 0x02, 0x03, 0x04
CMD_NO_CHANGE, CMD_RECEIVE, CMD_TRANSCEIVE, CMD_MF_AUTHENT, CMD_SOFT_RESET = 0x07, 0x08, 0x0C, 0x0E, 0x0F

# ComIrqReg bits
IRQ_TX, IRQ_RX, IRQ_IDLE, IRQ_HIALERT, IRQ_LOALERT, IRQ_ERR, IRQ_TIMER = 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01
# DivIrqReg bits
DIV_MFIN_ACT, DIV_CRC = 0x10, 0x04
# ErrorReg bits
ERR_WR, ERR_TEMP, ERR_BUFFER_OVFL, ERR_COLL = 0x80, 0x40, 0x10, 0x08
ERR_CRC, ERR_PARITY, ERR_PROTOCOL = 0x04, 0x02, 0x01
STATUS2_CRYPTO1_ON = 0x08

FIFO_SIZE = 64
F_CLOCK = 13.56e6
BIT_TIME = 128 / F_CLOCK  # 106 kbit/s
FDT = 90e-6  # frame delay time: card starts answering ~86-91 us after the reader's frame

_RESET_VALUES = {
    CommandReg: 0x20, ComIEnReg: 0x80, ComIrqReg: 0x14, WaterLevelReg: 0x08, ControlReg: 0x10,
    CollReg: 0xA0, ModeReg: 0x3F, TxControlReg: 0x80, 0x16: 0x10, 0x17: 0x84, 0x18: 0x84,
    DemodReg: 0x4D, 0x1C: 0x62, 0x1F: 0xEB, CRCResultRegH: 0xFF, CRCResultRegL: 0xFF,
    0x24: 0x26, 0x26: 0x48, 0x27: 0x88, 0x28: 0x20, 0x29: 0x20,
}
_CRC_PRESETS = (0x0000, 0x6363, 0xA671, 0xFFFF)

# ISO 14443A
REQA, WUPA, HLTA = 0x26, 0x52, 0x50
SEL_CL = (0x93, 0x95, 0x97)
CASCADE_TAG = 0x88
ACK, NAK_INVALID, NAK_CRC = 0x0A, 0x00, 0x01


def crc_a(data: bytes, preset: int = 0x6363) -> int:
    """ISO/IEC 14443-3 CRC_A (as a 16-bit int; sent LSB first)."""
    crc = preset
    for b in data:
        b ^= crc & 0xFF
        b = (b ^ (b << 4)) & 0xFF
        crc = ((crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)) & 0xFFFF
    return crc


def with_crc(data: bytes) -> bytes:
    c = crc_a(data)
    return bytes(data) + bytes((c & 0xFF, c >> 8))


def check_crc(frame: bytes) -> bool:
    return len(frame) >= 3 and crc_a(frame[:-2]) == (frame[-2] | frame[-1] << 8)


def bcc(data: bytes) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


def merge_answers(replies: list, values_after_coll: bool = False) -> tuple[bytes, int, int | None] | None:
    """What the reader receives when `replies` ((data, last-byte bits) each) are sent at once:
    (data, bits, None) if they agree, else (data, bits, 1-based position of the first
    differing bit). The frame is as long as the longest answer: the chip goes on receiving
    after a collision. Every bit from the collision on reads as 0 (CollReg.ValuesAfterColl =
    0, datasheet 9.3.1.15), or, with `values_after_coll`, keeps what arrived: the load
    modulation of all cards, a 1 wherever any card sent a 1."""
    if not replies:
        return None
    first = replies[0]
    if all(r == first for r in replies):
        return first[0], first[1], None

    def nbits(r):
        return (len(r[0]) - 1) * 8 + r[1] if r[0] else 0

    def bit(r, i):
        return (r[0][i // 8] >> (i % 8)) & 1 if i < nbits(r) else None

    i = 0
    while len({bit(r, i) for r in replies}) == 1:
        i += 1
    longest = max(replies, key=nbits)
    total = nbits(longest)
    data = bytearray((total + 7) // 8)
    for j in range(total):
        if (j < i or values_after_coll) and any(bit(r, j) for r in replies):
            data[j // 8] |= 1 << (j % 8)
    return bytes(data), (total % 8) or 8, i + 1


# --- cards ----------------------------------------------------------------------------------

class Iso14443aTag:
    """A Type A card's ISO 14443-3 state machine (IDLE/READY/ACTIVE/HALT), anticollision,
    SELECT and HLTA. Subclasses add their command sets in ``_active``.

    Real behaviour kept: REQA wakes only IDLE cards, WUPA also HALT ones; any unexpected frame
    in READY/ACTIVE sends the card back to IDLE (or HALT, if it was woken from HALT) without an
    answer, which is why a selected card "flickers" for a reader that only sends REQA.
    """

    tech = "unknown"

    def __init__(self, uid: bytes, atqa: bytes = b"\x04\x00", sak: int = 0x20):
        uid = bytes(uid)
        if len(uid) not in (4, 7):
            raise ValueError("UID must be 4 or 7 bytes")
        if uid[0] == CASCADE_TAG:
            raise ValueError("UID cannot start with the cascade tag 0x88")
        self.uid = uid
        self.atqa = bytes(atqa)
        self.sak = sak
        self.state = "OFF"
        self._from_halt = False
        self.busy_s = 0.0  # extra answer delay of the last command (EEPROM write)

    @property
    def uid_hex(self) -> str:
        return self.uid.hex()

    def cascade_levels(self) -> list[bytes]:
        if len(self.uid) == 4:
            return [self.uid]
        return [bytes([CASCADE_TAG]) + self.uid[:3], self.uid[3:]]

    # power (field on/off, placed/removed)
    def power_on(self) -> None:
        self.state = "IDLE"
        self._from_halt = False
        self._reset_session()

    def power_off(self) -> None:
        self.state = "OFF"
        self._reset_session()

    def _reset_session(self) -> None:
        self._level = 0

    def _to_idle(self) -> None:
        self.state = "HALT" if self._from_halt else "IDLE"
        self._reset_session()

    @property
    def authenticated(self) -> bool:
        return self.state == "AUTH"

    def receive(self, data: bytes, bits: int, encrypted: bool = False):
        """One frame from the reader; returns the answer (bytes, last-byte bits) or None."""
        self.busy_s = 0.0
        if self.state == "OFF":
            return None
        if encrypted != self.authenticated:
            # the two ends disagree on Crypto1: what arrives is garbage to the card
            if self.state not in ("IDLE", "HALT"):
                self._to_idle()
            return None
        if len(data) == 1 and bits == 7:
            cmd = data[0]
            if (cmd == REQA and self.state == "IDLE") or (cmd == WUPA and self.state in ("IDLE", "HALT")):
                self._from_halt = self.state == "HALT"
                self.state = "READY"
                self._level = 0
                return self.atqa, 8
            if self.state not in ("IDLE", "HALT"):
                self._to_idle()
            return None
        if self.state in ("IDLE", "HALT"):
            return None
        if self.state == "READY" and data:  # bit-oriented anticollision frames end mid-byte
            return self._anticollision(data, bits)
        if bits != 8 or not data:
            self._to_idle()
            return None
        return self._active(data)

    def _anticollision(self, data: bytes, bits: int = 8):
        levels = self.cascade_levels()
        level = self._level
        if len(data) < 2 or data[0] != SEL_CL[level]:
            self._to_idle()
            return None
        nvb = data[1]
        cl = levels[level] + bytes([bcc(levels[level])])
        if nvb == 0x70:  # SELECT
            if len(data) != 9 or not check_crc(data):
                self._to_idle()
                return None
            if data[2:7] != cl:
                return None  # another card is being selected: stay READY
            if level + 1 < len(levels):
                self._level = level + 1
                return with_crc(bytes([0x04])), 8  # cascade bit: UID not complete
            self.state = "ACTIVE"
            return with_crc(bytes([self.sak])), 8
        nbytes, nbits = nvb >> 4, nvb & 0x0F
        if not 2 <= nbytes <= 6 or nbits > 7 or len(data) != nbytes + (1 if nbits else 0) \
                or (bits if nbits else 8) != (nbits or 8) or nbytes * 8 + nbits >= 56:
            self._to_idle()
            return None
        k = (nbytes - 2) * 8 + nbits  # UID bits the reader already knows
        for i in range(k):
            if (data[2 + i // 8] >> (i % 8)) & 1 != (cl[i // 8] >> (i % 8)) & 1:
                return None  # not this card: stay READY, silent
        rest = bytearray(cl[k // 8:])
        rest[0] &= (0xFF << (k % 8)) & 0xFF  # only the bits after the known ones are sent
        return bytes(rest), 8

    def _halt_frame(self, data: bytes) -> bool:
        return len(data) == 4 and data[0] == HLTA and data[1] == 0x00 and check_crc(data)

    def _active(self, data: bytes):
        if self._halt_frame(data):
            self.state = "HALT"
            self._reset_session()
            return
        self._to_idle()
        return


GenericTag = Iso14443aTag


def _nak(code: int):
    return bytes([code]), 4


class NtagTag(Iso14443aTag):
    """NXP NTAG213/215/216 (NFC Forum Type 2): 7-byte UID, 4-byte pages.

    ``pages``: memory image from page 0 (e.g. ``gateway.kinds.sample_pad.tags.ntag_pages_for_text``); pages 0-2
    (UID, BCC, internal, static lock bytes) are always made from ``uid7``. Commands:
    GET_VERSION, READ (4 pages, rolling over to page 0), FAST_READ, WRITE, COMPATIBILITY_WRITE,
    HLTA. PWD/PACK read as zeros; lock bits and password protection are not enforced.
    """

    def __init__(self, uid7: bytes, kind: str = "ntag213", pages: bytes | None = None):
        if kind not in _tags.NTAG_KINDS:
            raise ValueError(f"unknown NTAG kind {kind!r}")
        if len(bytes(uid7)) != 7:
            raise ValueError("NTAG UIDs are 7 bytes")
        super().__init__(uid7, atqa=b"\x44\x00", sak=0x00)
        self.kind = kind
        self.tech = kind
        geo = _tags.NTAG_KINDS[kind]
        self.npages = geo["pages"]
        mem = bytearray(4 * self.npages)
        if pages is None:
            mem[12:16] = _tags.ntag_capability_container(kind)
            mem[16:19] = b"\x03\x00\xfe"  # empty NDEF message
        else:
            if len(pages) > 4 * (geo["user_last"] + 1):
                raise ValueError("pages do not fit the user memory")
            mem[:len(pages)] = pages
        u = self.uid
        mem[0:4] = bytes([u[0], u[1], u[2], CASCADE_TAG ^ u[0] ^ u[1] ^ u[2]])
        mem[4:8] = u[3:7]
        mem[8] = u[3] ^ u[4] ^ u[5] ^ u[6]
        mem[9] = 0x48
        dl = geo["dyn_lock"]
        mem[4 * dl:4 * dl + 4] = b"\x00\x00\x00\xbd"
        mem[4 * (dl + 1):4 * (dl + 2)] = b"\x04\x00\x00\xff"  # CFG0: AUTH0 = 0xFF (no password)
        mem[4 * (dl + 2):4 * (dl + 3)] = b"\x00\x05\x00\x00"  # CFG1
        mem[4 * (dl + 3):4 * (dl + 4)] = b"\xff\xff\xff\xff"  # PWD (reads as 00)
        self.mem = mem
        self.version = bytes([0x00, 0x04, 0x04, 0x02, 0x01, 0x00, geo["storage"], 0x03])
        self._compat_page: int | None = None

    @classmethod
    def with_text(cls, uid7: bytes, text: str, kind: str = "ntag213") -> NtagTag:
        return cls(uid7, kind, _tags.ntag_pages_for_text(text, kind))

    @classmethod
    def with_uri(cls, uid7: bytes, uri: str, kind: str = "ntag213") -> NtagTag:
        return cls(uid7, kind, _tags.ntag_pages_for_uri(uri, kind))

    def _reset_session(self) -> None:
        super()._reset_session()
        self._compat_page = None

    def page(self, n: int) -> bytes:
        if n >= self.npages - 2:  # PWD, PACK
            return b"\x00\x00\x00\x00"
        return bytes(self.mem[4 * n:4 * n + 4])

    def _write_page(self, n: int, d: bytes) -> bool:
        if n < 2 or n >= self.npages:
            return False
        if n == 2:  # only the static lock bytes; bits can only be set
            self.mem[10] |= d[2]
            self.mem[11] |= d[3]
        elif n == 3:  # capability container is OTP
            for i in range(4):
                self.mem[12 + i] |= d[i]
        else:
            self.mem[4 * n:4 * n + 4] = d
        self.busy_s = 4.1e-3  # EEPROM programming time
        return True

    def _active(self, data: bytes):
        if not check_crc(data):
            self._to_idle()
            return _nak(NAK_CRC)
        body = data[:-2]
        if self._compat_page is not None:  # second phase of COMPATIBILITY_WRITE
            page, self._compat_page = self._compat_page, None
            if len(body) != 16 or not self._write_page(page, body[:4]):
                self._to_idle()
                return _nak(NAK_INVALID)
            return bytes([ACK]), 4
        cmd = body[0]
        if cmd == 0x60 and len(body) == 1:  # GET_VERSION
            return with_crc(self.version), 8
        if cmd == 0x30 and len(body) == 2:  # READ: 4 pages, roll over at the end of memory
            a = body[1]
            if a >= self.npages:
                self._to_idle()
                return _nak(NAK_INVALID)
            return with_crc(b"".join(self.page((a + i) % self.npages) for i in range(4))), 8
        if cmd == 0x3A and len(body) == 3:  # FAST_READ start..end
            s, e = body[1], body[2]
            if s > e or e >= self.npages:
                self._to_idle()
                return _nak(NAK_INVALID)
            return with_crc(b"".join(self.page(i) for i in range(s, e + 1))), 8
        if cmd == 0xA2 and len(body) == 6:  # WRITE one page
            if not self._write_page(body[1], body[2:6]):
                self._to_idle()
                return _nak(NAK_INVALID)
            return bytes([ACK]), 4
        if cmd == 0xA0 and len(body) == 2:  # COMPATIBILITY_WRITE, phase 1
            if not 2 <= body[1] < self.npages:
                self._to_idle()
                return _nak(NAK_INVALID)
            self._compat_page = body[1]
            return bytes([ACK]), 4
        if cmd == HLTA and len(body) == 2 and body[1] == 0:
            self.state = "HALT"
            self._reset_session()
            return None
        self._to_idle()
        return _nak(NAK_INVALID)


class MifareClassic1K(Iso14443aTag):
    """MIFARE Classic 1K: 4-byte NUID, 16 sectors x 4 blocks of 16 bytes, SAK 0x08.

    ``blocks``: a 1024-byte image or ``{block: 16 bytes}`` overlaid on a fresh card (block 0
    is always made from the UID; trailers get ``key_a``/``key_b`` and transport access bits).
    Authentication (MFAuthent on the reader) compares keys; READ/WRITE work on the
    authenticated sector only; reading a trailer shows key A as zeros.
    """

    tech = "mifare-1k"

    def __init__(self, uid4: bytes, blocks=None, key_a: bytes = b"\xff" * 6, key_b: bytes = b"\xff" * 6):
        if len(bytes(uid4)) != 4:
            raise ValueError("MIFARE Classic 1K NUIDs are 4 bytes")
        super().__init__(uid4, atqa=b"\x04\x00", sak=0x08)
        mem = bytearray(1024)
        if isinstance(blocks, (bytes, bytearray)):
            if len(blocks) != 1024:
                raise ValueError("a MIFARE 1K image is 1024 bytes")
            mem[:] = blocks
        else:
            for s in range(16):
                mem[16 * (4 * s + 3):16 * (4 * s + 4)] = bytes(key_a) + b"\xff\x07\x80\x69" + bytes(key_b)
            for b, v in (blocks or {}).items():
                if len(v) != 16:
                    raise ValueError("blocks are 16 bytes")
                mem[16 * b:16 * b + 16] = v
        u = self.uid
        mem[0:16] = u + bytes([bcc(u), 0x08, 0x04, 0x00]) + b"\x62\x63\x64\x65\x66\x67\x68\x69"
        self.mem = mem
        self._sector: int | None = None
        self._write_block: int | None = None

    @classmethod
    def with_sample(cls, uid4: bytes, sample_id: str, key_a: bytes = b"\xff" * 6) -> MifareClassic1K:
        return cls(uid4, {4: _tags.mifare_block4(sample_id)}, key_a=key_a)

    def block(self, n: int) -> bytes:
        return bytes(self.mem[16 * n:16 * n + 16])

    def _reset_session(self) -> None:
        super()._reset_session()
        self._sector = None
        self._write_block = None

    def authenticate(self, key_type: int, block: int, key: bytes, uid4: bytes, encrypted: bool = False) -> bool:
        """The MFAuthent exchange, reduced to a key comparison."""
        if self.state not in ("ACTIVE", "AUTH"):
            return False
        if encrypted != self.authenticated or key_type not in (0x60, 0x61) or block >= 64 \
                or bytes(uid4) != self.uid:
            self._to_idle()
            return False
        t = self.block(4 * (block // 4) + 3)
        if bytes(key) != (t[0:6] if key_type == 0x60 else t[10:16]):
            self._to_idle()
            return False
        self.state = "AUTH"
        self._sector = block // 4
        self._write_block = None
        return True

    def _active(self, data: bytes):
        if self.state == "ACTIVE":  # selected, not authenticated: only HLTA means anything
            return super()._active(data)
        if not check_crc(data):
            self._to_idle()
            return _nak(0x05)
        body = data[:-2]
        if self._write_block is not None:  # WRITE phase 2: 16 data bytes
            blk, self._write_block = self._write_block, None
            if len(body) != 16:
                self._to_idle()
                return _nak(0x04)
            self.mem[16 * blk:16 * blk + 16] = body
            self.busy_s = 2.5e-3
            return bytes([ACK]), 4
        cmd = body[0]
        if cmd == 0x30 and len(body) == 2:
            blk = body[1]
            if blk >= 64 or blk // 4 != self._sector:
                self._to_idle()
                return _nak(0x04)
            d = self.block(blk)
            if blk % 4 == 3:
                d = b"\x00" * 6 + d[6:]  # key A is never readable
            return with_crc(d), 8
        if cmd == 0xA0 and len(body) == 2:
            blk = body[1]
            if blk == 0 or blk >= 64 or blk // 4 != self._sector:
                self._to_idle()
                return _nak(0x04)
            self._write_block = blk
            return bytes([ACK]), 4
        return super()._active(data)  # HLTA, or anything else: back to idle


# --- the reader chip ------------------------------------------------------------------------

class MFRC522Emulator:
    """The MFRC522 as its SPI registers show it, with the cards in its field."""

    def __init__(self, version: int = 0x92, timing: str = "instant"):
        if timing not in ("instant", "realtime"):
            raise ValueError("timing is 'instant' or 'realtime'")
        self.version = version
        self.timing = timing
        self._lock = threading.RLock()
        self._tags: list[Iso14443aTag] = []
        self.collisions = 0  # answers that collided
        self.transfers = 0  # SPI chip-select cycles
        self.exchanges = 0  # frames sent over the air
        self.frames: deque = deque(maxlen=256)  # (sent, sent_bits, answer-or-None)
        self.resets = 0
        self._reset()

    # --- the world ------------------------------------------------------------------------
    @property
    def tag(self) -> Iso14443aTag | None:
        """The (first) card in the field."""
        return self._tags[0] if self._tags else None

    @property
    def tags(self) -> list[Iso14443aTag]:
        return list(self._tags)

    def place(self, tag: Iso14443aTag) -> Iso14443aTag:
        """Put a card on the reader (replacing any card there)."""
        with self._lock:
            for t in self._tags:
                t.power_off()
            self._tags = []
            return self.add(tag)

    def add(self, tag: Iso14443aTag) -> Iso14443aTag:
        """Bring one more card into the field (the others stay)."""
        with self._lock:
            if any(t is tag for t in self._tags):
                return tag
            self._tags.append(tag)
            if self.field_on:
                tag.power_on()
            else:
                tag.power_off()
            return tag

    def remove(self, tag: Iso14443aTag | None = None) -> Iso14443aTag | None:
        """Take `tag` (default: every card) away. A card out of the field loses power: a
        HALTed card answers REQA again when it comes back."""
        with self._lock:
            gone = [t for t in self._tags if tag is None or t is tag]
            self._tags = [t for t in self._tags if not any(t is g for g in gone)]
            for t in gone:
                t.power_off()
            return gone[0] if gone else None

    @property
    def field_on(self) -> bool:
        return bool(self.regs[TxControlReg] & 0x03)

    @property
    def crypto1_on(self) -> bool:
        return bool(self.regs[Status2Reg] & STATUS2_CRYPTO1_ON)

    @property
    def timer_period_s(self) -> float:
        """The programmed timer period: (TReload + 1) * (2 * TPrescaler + 1) / 13.56 MHz."""
        pre = ((self.regs[TModeReg] & 0x0F) << 8) | self.regs[TPrescalerReg]
        div = 2 * pre + (2 if self.regs[DemodReg] & 0x10 else 1)
        reload = (self.regs[TReloadRegH] << 8) | self.regs[TReloadRegL]
        return (reload + 1) * div / F_CLOCK

    def irq_pin(self) -> int | None:
        """The level on the IRQ pin: Status1Reg.IRq, inverted when ComIEnReg.IRqInv (bit 7,
        set at reset: active low). DivIEnReg.IRQPushPull (bit 7) clear, as at reset, makes
        the pin open-drain: it only pulls low, and the released level (None) is whatever the
        host's pull-up or pull-down makes it. Reading the pin lets due events happen first
        (a card's answer, the timer), as a wire would show them without an SPI access."""
        with self._lock:
            self._tick()
            level = int(self._irq_requested()) ^ (1 if self.regs[ComIEnReg] & 0x80 else 0)
            if level and not self.regs[DivIEnReg] & 0x80:
                return None  # open-drain, released
            return level

    def reset_counters(self) -> None:
        with self._lock:
            self.transfers = 0
            self.exchanges = 0
            self.frames.clear()

    def register(self, reg: int) -> int:
        """Peek at a register without side effects (the FIFO is not popped)."""
        with self._lock:
            self._tick()
            if reg == FIFODataReg:
                return self.fifo[0] if self.fifo else 0
            return self._read(reg)

    # --- SPI --------------------------------------------------------------------------------
    def transfer(self, data: bytes) -> bytes:
        """One chip-select cycle; returns the bytes clocked out on MISO."""
        data = bytes(data)
        with self._lock:
            self.transfers += 1
            self._tick()
            out = bytearray(len(data))
            if not data:
                return bytes(out)
            if data[0] & 0x80:
                for i in range(1, len(data)):
                    out[i] = self._read((data[i - 1] >> 1) & 0x3F)
            else:
                reg = (data[0] >> 1) & 0x3F
                for b in data[1:]:
                    self._write(reg, b)
            return bytes(out)

    # --- internals ----------------------------------------------------------------------------
    def _reset(self) -> None:
        self.regs = bytearray(64)
        for r, v in _RESET_VALUES.items():
            self.regs[r] = v
        self.fifo = bytearray()
        self._events: list = []  # (due, order, generation, fn)
        self._order = 0
        self._gen = 0
        self._timer_running = False
        self._timer_due = 0.0
        self._timer_start = 0.0
        self._crc = 0xFFFF
        self._crc_done = True
        self._modem = 0
        for t in getattr(self, "_tags", ()):
            t.power_off()  # TxControlReg reset: antenna off
        self._collpos = 0x20  # CollReg: CollPosNotValid
        self._busy = 0.0

    def _now(self) -> float:
        return time.monotonic()

    def _delay(self, seconds: float) -> float:
        return 0.0 if self.timing == "instant" else seconds

    def _schedule(self, delay: float, fn) -> None:
        self._order += 1
        self._events.append((self._now() + self._delay(delay), self._order, self._gen, fn))
        self._events.sort(key=lambda e: (e[0], e[1]))

    def _tick(self) -> None:
        while True:
            now = self._now()
            t_timer = self._timer_due if self._timer_running else float("inf")
            # In "instant" mode every delay is 0, so a card's reply and the chip timer fall due
            # at (nearly) the same instant; the reply must win, as it does on a real chip
            # where the frame delay (~0.1 ms) is far shorter than the timer period (25 ms).
            if self._events and self._events[0][0] <= now and (
                    self.timing == "instant" or self._events[0][0] <= t_timer):
                _, _, gen, fn = self._events.pop(0)
                if gen == self._gen:
                    fn()
                continue
            if t_timer <= now:
                self._timer_expired()
                continue
            break

    # timer
    def _timer_start_now(self) -> None:
        self._timer_running = True
        self._timer_start = self._now()
        self._timer_due = self._timer_start + self._delay(self.timer_period_s)

    def _timer_stop(self) -> None:
        self._timer_running = False

    def _timer_expired(self) -> None:
        self.regs[ComIrqReg] |= IRQ_TIMER
        period = self._delay(self.timer_period_s)
        if self.regs[TModeReg] & 0x10 and period > 0:  # TAutoRestart (one-shot in instant mode)
            self._timer_due += period
        else:
            self._timer_running = False

    def _tauto(self) -> bool:
        return bool(self.regs[TModeReg] & 0x80)

    # FIFO
    def _fifo_push(self, data: bytes) -> None:
        for b in data:
            if len(self.fifo) >= FIFO_SIZE:
                self.regs[ErrorReg] |= ERR_BUFFER_OVFL
                self.regs[ComIrqReg] |= IRQ_ERR
                break
            self.fifo.append(b)
        self._alerts()

    def _alerts(self) -> None:
        wl = self.regs[WaterLevelReg] & 0x3F
        if len(self.fifo) <= wl:
            self.regs[ComIrqReg] |= IRQ_LOALERT
        if FIFO_SIZE - len(self.fifo) <= wl:
            self.regs[ComIrqReg] |= IRQ_HIALERT

    # CRC coprocessor
    def _crc_feed(self, data: bytes) -> None:
        self._crc = crc_a(data, self._crc)
        self.regs[CRCResultRegH] = self._crc >> 8
        self.regs[CRCResultRegL] = self._crc & 0xFF
        self._crc_done = True
        self.regs[DivIrqReg] |= DIV_CRC

    def _command(self) -> int:
        return self.regs[CommandReg] & 0x0F

    def _set_command(self, cmd: int) -> None:
        self.regs[CommandReg] = (self.regs[CommandReg] & 0x30) | cmd

    def _finish_command(self) -> None:
        self._set_command(CMD_IDLE)
        self._modem = 0
        self.regs[ComIrqReg] |= IRQ_IDLE

    # air interface
    @staticmethod
    def _air_time(nbytes: int, bits: int) -> float:
        return ((nbytes - 1) * 9 + bits + 3) * BIT_TIME

    def _air(self, frame: bytes, bits: int):
        """Every card hears the frame; returns (data, last-byte bits, collision pos or None)."""
        self.exchanges += 1
        replies = []
        self._busy = 0.0
        if self.field_on:
            for tag in self._tags:
                r = tag.receive(frame, bits, encrypted=self.crypto1_on)
                self._busy = max(self._busy, tag.busy_s)
                if r is not None:
                    replies.append(r)
        reply = merge_answers(replies, values_after_coll=bool(self.regs[CollReg] & 0x80))
        if reply is not None and reply[2] is not None:
            self.collisions += 1
        self.frames.append((frame, bits, reply[:2] if reply else None))
        return reply

    def _begin_tx(self) -> None:
        frame = bytes(self.fifo)
        self.fifo.clear()
        self._alerts()
        if not frame:
            return
        bits = self.regs[BitFramingReg] & 0x07 or 8
        self.regs[ErrorReg] &= ~(ERR_PROTOCOL | ERR_PARITY | ERR_CRC | ERR_COLL) & 0xFF
        if self.regs[TxModeReg] & 0x80 and bits == 8:
            c = crc_a(frame, _CRC_PRESETS[self.regs[ModeReg] & 0x03])
            frame += bytes((c & 0xFF, c >> 8))
        self._modem = 3
        self._schedule(self._air_time(len(frame), bits), lambda: self._tx_done(frame, bits))

    def _tx_done(self, frame: bytes, bits: int) -> None:
        self.regs[ComIrqReg] |= IRQ_TX
        reply = self._air(frame, bits)
        if self._command() == CMD_TRANSMIT:
            self._finish_command()
            return
        self._modem = 5
        if self._tauto():
            self._timer_start_now()
        if reply is not None:
            data, rbits, coll = reply
            fdt = FDT + self._busy
            self._schedule(fdt, self._rx_start)
            self._schedule(fdt + self._air_time(max(1, len(data)), rbits),
                           lambda: self._rx_done(data, rbits, coll))

    def _rx_start(self) -> None:
        self._modem = 6
        if self._tauto():
            self._timer_stop()

    def _rx_done(self, data: bytes, rbits: int, coll: int | None = None) -> None:
        self._collpos = 0x20
        if coll is not None:
            self.regs[ErrorReg] |= ERR_COLL
            self._collpos = 0x20 if coll > 32 else coll & 0x1F
        if self.regs[RxModeReg] & 0x80 and coll is None:
            if rbits != 8 or len(data) < 3:
                self.regs[ErrorReg] |= ERR_CRC
            else:
                c = crc_a(data[:-2], _CRC_PRESETS[self.regs[ModeReg] & 0x03])
                if (c & 0xFF, c >> 8) != (data[-2], data[-1]):
                    self.regs[ErrorReg] |= ERR_CRC
                data = data[:-2]
        self._fifo_push(data)
        self.regs[ControlReg] = (self.regs[ControlReg] & ~0x07) | (rbits & 0x07)
        self.regs[ComIrqReg] |= IRQ_RX
        if self.regs[ErrorReg] & 0xDF:
            self.regs[ComIrqReg] |= IRQ_ERR
        self._modem = 1  # Transceive waits for the next StartSend

    def _mf_authent(self) -> None:
        data = bytes(self.fifo)
        self.fifo.clear()
        self._alerts()
        if len(data) != 12:
            self.regs[ErrorReg] |= ERR_PROTOCOL
            self.regs[ComIrqReg] |= IRQ_ERR
            self._finish_command()
            return
        self._schedule(1.5e-3, lambda: self._auth_done(data))

    def _auth_done(self, data: bytes) -> None:
        # no TxIRq/RxIRq: they are blocked while MFAuthent runs (datasheet 10.3.1.9); the
        # command ends with IdleIRq (authenticated) or, if the card goes quiet, TimerIRq
        self.exchanges += 1
        tag = next((t for t in self._tags if t.state in ("ACTIVE", "AUTH")), None)
        ok = (self.field_on and tag is not None and hasattr(tag, "authenticate")
              and tag.authenticate(data[0], data[1], data[2:8], data[8:12], encrypted=self.crypto1_on))
        self.frames.append((data[:2], 8, b"auth-ok" if ok else None))
        if ok:
            self.regs[Status2Reg] |= STATUS2_CRYPTO1_ON
            self._finish_command()
        else:
            # the card stops answering; MFAuthent does not end by itself: the timer ends it
            self.regs[Status2Reg] &= ~STATUS2_CRYPTO1_ON & 0xFF
            if self._tauto():
                self._timer_start_now()

    def _irq_requested(self) -> bool:
        """Status1Reg.IRq: an enabled interrupt request is set (ComIEnReg, DivIEnReg)."""
        return bool((self.regs[ComIrqReg] & self.regs[ComIEnReg] & 0x7F)
                    or (self.regs[DivIrqReg] & self.regs[DivIEnReg] & (DIV_MFIN_ACT | DIV_CRC)))

    # registers
    def _read(self, reg: int) -> int:
        if reg == FIFODataReg:
            if not self.fifo:
                return 0
            b = self.fifo.pop(0)
            self._alerts()
            return b
        if reg == FIFOLevelReg:
            return len(self.fifo)
        if reg == VersionReg:
            return self.version
        if reg == ComIrqReg:
            return self.regs[ComIrqReg] & 0x7F
        if reg == DivIrqReg:
            return self.regs[DivIrqReg] & 0x7F
        if reg == Status1Reg:
            v = 0
            if self._crc == 0:
                v |= 0x40
            if self._crc_done:
                v |= 0x20
            if self._irq_requested():
                v |= 0x10
            if self._timer_running:
                v |= 0x08
            wl = self.regs[WaterLevelReg] & 0x3F
            if FIFO_SIZE - len(self.fifo) <= wl:
                v |= 0x02
            if len(self.fifo) <= wl:
                v |= 0x01
            return v
        if reg == Status2Reg:
            return (self.regs[Status2Reg] & 0xF8) | (self._modem & 0x07)
        if reg == CollReg:
            return (self.regs[CollReg] & 0x80) | self._collpos
        if reg in (TCounterValRegH, TCounterValRegL):
            reload = (self.regs[TReloadRegH] << 8) | self.regs[TReloadRegL]
            val = 0
            if self._timer_running and self.timer_period_s > 0:
                left = max(0.0, self._timer_due - self._now())
                span = self._delay(self.timer_period_s) or 1.0
                val = int(reload * left / span) if self.timing == "realtime" else reload
            return val >> 8 if reg == TCounterValRegH else val & 0xFF
        return self.regs[reg]

    def _write(self, reg: int, val: int) -> None:
        if reg == CommandReg:
            self._write_command(val)
        elif reg in (ComIrqReg, DivIrqReg):
            bits = val & 0x7F
            if val & 0x80:
                self.regs[reg] |= bits
            else:
                self.regs[reg] &= ~bits & 0xFF
        elif reg in (ErrorReg, Status1Reg, FIFOLevelReg, VersionReg, CRCResultRegH, CRCResultRegL,
                     TCounterValRegH, TCounterValRegL):
            if reg == FIFOLevelReg and val & 0x80:
                self.fifo.clear()
                self.regs[ErrorReg] &= ~ERR_BUFFER_OVFL & 0xFF
                self._alerts()
            # otherwise read-only
        elif reg == Status2Reg:
            old = self.regs[Status2Reg]
            self.regs[Status2Reg] = (val & 0xC0) | (old & val & STATUS2_CRYPTO1_ON)
        elif reg == FIFODataReg:
            if self._command() == CMD_CALC_CRC:
                self._crc_feed(bytes([val]))  # the coprocessor consumes what is written
            else:
                self._fifo_push(bytes([val]))
        elif reg == ControlReg:
            if val & 0x80:
                self._timer_stop()
            if val & 0x40:
                self._timer_start_now()
            self.regs[ControlReg] = (self.regs[ControlReg] & 0x07) | 0x10
        elif reg == BitFramingReg:
            self.regs[BitFramingReg] = val & 0x7F  # StartSend is write-only: reads 0 (9.3.1.14)
            if val & 0x80 and self._command() == CMD_TRANSCEIVE:
                self._begin_tx()
        elif reg == TxControlReg:
            was = self.field_on
            self.regs[TxControlReg] = val
            if was != self.field_on:
                for t in self._tags:
                    if self.field_on:
                        t.power_on()
                    else:
                        t.power_off()
                if not self.field_on:
                    self.regs[Status2Reg] &= ~STATUS2_CRYPTO1_ON & 0xFF
        else:
            self.regs[reg] = val

    def _write_command(self, val: int) -> None:
        cmd = val & 0x0F
        if cmd == CMD_SOFT_RESET:
            self.resets += 1
            self._reset()
            return
        if cmd == CMD_NO_CHANGE:
            self.regs[CommandReg] = (val & 0x30) | self._command()
            return
        self._gen += 1  # a new command cancels what the previous one had in flight
        self._events = []
        self.regs[CommandReg] = (val & 0x30) | cmd
        self._modem = 0
        if cmd == CMD_IDLE:
            return
        if cmd in (CMD_MEM, CMD_RANDOM_ID):
            self._finish_command()
        elif cmd == CMD_CALC_CRC:
            self._crc = _CRC_PRESETS[self.regs[ModeReg] & 0x03]
            self._crc_done = False
            data = bytes(self.fifo)
            self.fifo.clear()
            self._alerts()
            self._crc_feed(data)
        elif cmd == CMD_TRANSMIT:
            self._begin_tx()
            if not self._events:
                self._finish_command()
        elif cmd == CMD_TRANSCEIVE:
            self._modem = 1
        elif cmd == CMD_MF_AUTHENT:
            self._mf_authent()
        elif cmd == CMD_RECEIVE:
            self._modem = 5
