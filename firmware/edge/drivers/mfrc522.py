# MFRC522 RFID reader driver (ISO 14443A: NTAG21x, MIFARE Classic 1K).
#
#   r = MFRC522(spi_dev)      # spi_dev.xfer(data) -> bytes: one chip-select cycle (docs/hil.md)
#   r.init()                  # -> VersionReg (0x91/0x92 on genuine chips; 0x00/0xFF: no chip)
#   card = r.poll()           # -> Card(uid, uid_hex, sak, tech) or None
#   r.read_sample_id(card)    # -> "S-1001" or None
#
# Several cards at once (fitting room): edge.drivers.inventory.InventoryReader.
#
# Every exchange ends on the chip's own IRQ bits: RxIRq (answer), IdleIRq (command done) or
# TimerIRq. The timer runs in TAuto mode (starts when a frame has been sent, stops when an
# answer starts) and expires after 25 ms, so "no card" costs one WUPA and one timer period.
# A software bound (a few fast reads, then 1 ms sleeps, ~80 ms at most) guards against a chip
# whose timer is not running; it counts in `stalls`.
#
# Presence across polls: a selected (ACTIVE) card ignores REQA and falls back to IDLE, which is
# why a card resting on a reader that only sends REQA is seen every other poll. Here every
# public call leaves the card HALTed and poll() wakes it with WUPA (which HALTed cards answer),
# so a card that stays in the field is seen by every poll. A removed card loses power; the app
# declares removal after 3 polls without it.
#
# CRC_A is computed in software (no CalcCRC round trips); ModeReg still presets the chip's
# coprocessor to 0x6363.
from binascii import hexlify
from time import sleep_ms

from micropython import const

from edge.ndef_tlv import find_tlv

_COMMAND = const(0x01)
_COLL = const(0x0E)
_COMIRQ = const(0x04)
_ERROR = const(0x06)
_STATUS2 = const(0x08)
_FIFODATA = const(0x09)
_FIFOLEVEL = const(0x0A)
_CONTROL = const(0x0C)
_BITFRAMING = const(0x0D)
_MODE = const(0x11)
_TXCONTROL = const(0x14)
_TXASK = const(0x15)
_TMODE = const(0x2A)
_TPRESCALER = const(0x2B)
_TRELOADH = const(0x2C)
_TRELOADL = const(0x2D)
_VERSION = const(0x37)

_IDLE = const(0x00)
_TRANSMIT = const(0x04)
_TRANSCEIVE = const(0x0C)
_MFAUTHENT = const(0x0E)
_SOFTRESET = const(0x0F)

_IRQ_TX = const(0x40)
_IRQ_RX = const(0x20)
_IRQ_IDLE = const(0x10)
_IRQ_TIMER = const(0x01)

_FAST_READS = const(8)   # ComIrqReg reads before the wait loop starts sleeping 1 ms
_MAX_READS = const(80)   # hard bound: ~72 ms of sleeps, 3x the chip timer
_NDEF_MAX = const(256)   # bytes of the NTAG data area read at most (16 READs)

_KEY_DEFAULT = b"\xff\xff\xff\xff\xff\xff"


def _crc_a(buf, start, n):
    crc = 0x6363
    for i in range(start, start + n):
        b = buf[i] ^ (crc & 0xFF)
        b = (b ^ (b << 4)) & 0xFF
        crc = (crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)
    return crc & 0xFFFF


class Card:
    """A card seen by poll(): uid (bytes), uid_hex (str), sak (int), tech (str)."""

    def __init__(self, uid, sak, tech):
        self.uid = uid
        self.uid_hex = hexlify(uid).decode()
        self.sak = sak
        self.tech = tech

    def __repr__(self):
        return "<Card %s %s>" % (self.uid_hex, self.tech)


class MFRC522:
    def __init__(self, spi_dev):
        self._dev = spi_dev
        self._b2 = bytearray(2)
        self._tx = bytearray(65)      # [FIFODataReg write address] + frame
        self._txv = memoryview(self._tx)
        self._rdf = bytearray(65)     # [FIFODataReg read address] * n + [0]
        for i in range(65):
            self._rdf[i] = 0x80 | (_FIFODATA << 1)
        self._rdfv = memoryview(self._rdf)
        self._buf = bytearray(64)     # last answer
        self._uid = bytearray(10)
        self._ulen = 0
        self.rxbits = 8               # valid bits in the last answer byte
        self._crypto = False
        self._last = None
        self.stalls = 0               # exchanges ended by the software bound (chip timer failed)
        self.errors = 0               # answers with ErrorReg set
        self.coll = 0

    # --- registers ------------------------------------------------------------------------
    def _wr(self, reg, val):
        b = self._b2
        b[0] = (reg << 1) & 0x7E
        b[1] = val
        self._dev.xfer(b)

    def _rd(self, reg):
        b = self._b2
        b[0] = 0x80 | ((reg << 1) & 0x7E)
        b[1] = 0
        return self._dev.xfer(b)[1]

    def version(self):
        return self._rd(_VERSION)

    def self_test(self):
        # None when the chip answers (an app's self_test, edge/ota_trial.py): VersionReg reads
        # 0x00 or 0xFF when no chip is on the bus (a driver, the pins or the SPI wrong)
        v = self._rd(_VERSION)
        if v in (0x00, 0xFF):
            return "reader: no answer (VersionReg 0x%02x)" % v
        return None

    def init(self):
        self._wr(_COMMAND, _SOFTRESET)
        for _ in range(50):  # PowerDown stays set until the oscillator runs again
            if not self._rd(_COMMAND) & 0x10:
                break
            sleep_ms(1)
        # timer: TAuto, prescaler 0xD3E -> 13.56 MHz / (2 * 3390 + 1) = 2 kHz (0.5 ms per tick),
        # reload 49 -> (49 + 1) * 0.5 ms = 25 ms without an answer ends the exchange
        self._wr(_TMODE, 0x8D)
        self._wr(_TPRESCALER, 0x3E)
        self._wr(_TRELOADH, 0)
        self._wr(_TRELOADL, 49)
        self._wr(_TXASK, 0x40)   # 100 % ASK
        self._wr(_MODE, 0x3D)    # CRC preset 0x6363
        self._wr(_TXCONTROL, self._rd(_TXCONTROL) | 0x03)  # antenna on
        self._crypto = False
        self._last = None
        return self.version()

    # --- exchanges ------------------------------------------------------------------------
    def _load(self, n, txbits):
        # stop any command, clear IRQs, flush and fill the FIFO with self._tx[1:1 + n]
        self._wr(_COMMAND, _IDLE)
        self._wr(_COMIRQ, 0x7F)
        self._wr(_FIFOLEVEL, 0x80)
        self._tx[0] = (_FIFODATA << 1) & 0x7E
        self._dev.xfer(self._txv[:1 + n])
        self._wr(_BITFRAMING, txbits)

    def _wait(self, mask):
        for i in range(_MAX_READS):
            irq = self._rd(_COMIRQ)
            if irq & mask:
                return irq
            if i >= _FAST_READS:
                sleep_ms(1)
        self.stalls += 1
        return 0

    def _transceive(self, n, txbits=0, errs=0x1B):
        # send self._tx[1:1 + n]; answer -> self._buf, returns its length (-1: none/error).
        # errs: ErrorReg bits that void the answer (BufferOvfl, CollErr, ParityErr,
        # ProtocolErr); self.coll is CollReg's CollPos after a collision, else 0
        self._load(n, txbits)
        self._wr(_COMMAND, _TRANSCEIVE)
        self._wr(_BITFRAMING, 0x80 | txbits)  # StartSend
        irq = self._wait(_IRQ_RX | _IRQ_IDLE | _IRQ_TIMER)
        if not irq & _IRQ_RX:
            return -1  # timer: nobody answered
        err = self._rd(_ERROR)
        self.coll = 0
        if err & 0x08:
            c = self._rd(_COLL)
            self.coll = -1 if c & 0x20 else (c & 0x1F) or 32
        if err & errs:
            self.errors += 1
            return -1
        n = self._rd(_FIFOLEVEL)
        if n == 0:
            return 0
        self.rxbits = 8
        if n == 1:  # a 4-bit ACK/NAK?
            self.rxbits = (self._rd(_CONTROL) & 0x07) or 8
        r = self._rdfv
        r[n] = 0
        d = self._dev.xfer(r[:n + 1])
        r[n] = 0x80 | (_FIFODATA << 1)
        b = self._buf
        for i in range(n):
            b[i] = d[i + 1]
        return n

    def _send(self, n):
        # frame self._tx[1:1 + n] + CRC_A
        c = _crc_a(self._tx, 1, n)
        self._tx[1 + n] = c & 0xFF
        self._tx[2 + n] = c >> 8
        return self._transceive(n + 2)

    def _crc_ok(self, n):
        return n >= 3 and _crc_a(self._buf, 0, n - 2) == (self._buf[n - 2] | (self._buf[n - 1] << 8))

    def _ack(self, n):
        return n == 1 and self.rxbits == 4 and self._buf[0] & 0x0F == 0x0A

    def _stop_crypto(self):
        self._wr(_STATUS2, 0x00)  # clears MFCrypto1On
        self._crypto = False

    def _wupa(self, cmd=0x52):
        # WUPA (or REQA 0x26): some card answered. ATQAs of different cards may collide.
        if self._crypto:
            self._stop_crypto()
        self._tx[1] = cmd
        return self._transceive(1, 7, 0x13) > 0

    def _select(self, uid=None):
        # anticollision + select (uid None), or select a known UID; returns SAK or -1
        t = self._tx
        ulen = 0
        levels = 1 if uid is None else len(uid) // 3
        pos = 0
        for level in range(3):
            t[1] = 0x93 + 2 * level
            if uid is None:
                if not self._anticoll():
                    return -1
            else:
                if level < levels - 1:
                    t[3] = 0x88
                    for i in range(3):
                        t[4 + i] = uid[pos + i]
                    pos += 3
                else:
                    for i in range(4):
                        t[3 + i] = uid[pos + i]
                t[7] = t[3] ^ t[4] ^ t[5] ^ t[6]
            t[1] = 0x93 + 2 * level
            t[2] = 0x70
            if self._send(7) != 3 or not self._crc_ok(3):
                return -1
            sak = self._buf[0]
            if sak & 0x04:  # UID not complete: this level held the cascade tag + 3 bytes
                if t[3] != 0x88:
                    return -1
                for i in range(3):
                    self._uid[ulen + i] = t[4 + i]
                ulen += 3
            else:
                for i in range(4):
                    self._uid[ulen + i] = t[3 + i]
                self._ulen = ulen + 4
                return sak
        return -1

    def _anticoll(self):
        # this cascade level's 4 UID bytes + BCC -> self._tx[3:8] (SEL code in self._tx[1]);
        # one card in the field: a collision fails (edge.drivers.inventory resolves them)
        t = self._tx
        t[2] = 0x20
        if self._transceive(2) != 5:
            return False
        b = self._buf
        if b[0] ^ b[1] ^ b[2] ^ b[3] != b[4]:
            return False
        for i in range(5):
            t[3 + i] = b[i]
        return True

    def _tech(self, sak):
        if sak == 0x08:
            return "mifare-1k"
        if sak == 0x00:
            self._tx[1] = 0x60  # GET_VERSION
            n = self._send(1)
            b = self._buf
            if n == 10 and self._crc_ok(10) and b[1] == 0x04 and b[2] == 0x04:
                if b[6] == 0x0F:
                    return "ntag213"
                if b[6] == 0x11:
                    return "ntag215"
                if b[6] == 0x13:
                    return "ntag216"
        return "unknown"

    def _same_as_last(self, sak):
        c = self._last
        if c is None or c.sak != sak or len(c.uid) != self._ulen:
            return False
        u = c.uid
        for i in range(self._ulen):
            if u[i] != self._uid[i]:
                return False
        return True

    # --- public -----------------------------------------------------------------------------
    def poll(self):
        """The card in the field (a Card), or None. Leaves the card HALTed."""
        if not self._wupa():
            return None
        sak = self._select()
        if sak < 0:
            return None
        if self._same_as_last(sak):  # no allocation, no GET_VERSION while a card rests
            card = self._last
        else:
            card = Card(bytes(self._uid[:self._ulen]), sak, self._tech(sak))
            self._last = card
        self.halt()
        return card

    def halt(self):
        """HLTA the selected card (sent without waiting for the timer), then stop Crypto1."""
        t = self._tx
        t[1] = 0x50
        t[2] = 0x00
        c = _crc_a(t, 1, 2)
        t[3] = c & 0xFF
        t[4] = c >> 8
        self._load(4, 0)
        self._wr(_COMMAND, _TRANSMIT)
        self._wait(_IRQ_IDLE | _IRQ_TX)
        self._wr(_COMMAND, _IDLE)
        if self._crypto:
            self._stop_crypto()

    def read_sample_id(self, card, parse=None):
        """Sample id on `card` (NDEF Text/URI on Type 2 tags, block 4 on MIFARE 1K) or None.
        `parse(buf, start, length)`: what to take from the NDEF message instead (NTAG only)."""
        if card is None:
            return None
        sak = -1
        for _ in range(2):  # a card left ACTIVE ignores the first WUPA
            if self._wupa():
                sak = self._select(card.uid)
                break
        if sak < 0:
            return None
        try:
            if card.tech == "mifare-1k" and parse is None:
                return self._read_mifare(card.uid)
            if sak == 0x00:
                if parse is None:  # the sample pad's rules (its app imports edge.ndef at boot)
                    from edge.ndef import sample_id as parse
                return self._read_ndef(parse)
            return None
        finally:
            self.halt()

    def _read_mifare(self, uid):
        t = self._tx
        t[1] = 0x60  # key A
        t[2] = 4     # block 4
        for i in range(6):
            t[3 + i] = _KEY_DEFAULT[i]
        u = len(uid) - 4  # Crypto1 uses the last 4 UID bytes
        for i in range(4):
            t[9 + i] = uid[u + i]
        self._load(12, 0)
        self._wr(_COMMAND, _MFAUTHENT)
        irq = self._wait(_IRQ_IDLE | _IRQ_TIMER)
        if not irq & _IRQ_IDLE or not self._rd(_STATUS2) & 0x08:
            self._wr(_COMMAND, _IDLE)
            return None  # wrong key or card gone
        self._crypto = True
        t[1] = 0x30
        t[2] = 4
        n = self._send(2)
        if n != 18 or not self._crc_ok(18):
            return None
        b = self._buf
        e = 0
        while e < 16 and b[e] != 0:
            e += 1
        a = 0
        while a < e and b[a] == 0x20:
            a += 1
        while e > a and b[e - 1] == 0x20:
            e -= 1
        if a == e:
            return None
        for i in range(a, e):
            if b[i] < 0x20 or b[i] > 0x7E:
                return None
        return bytes(b[a:e]).decode()

    def _read_ndef(self, parse):
        area = bytearray(_NDEF_MAX)
        n = 0
        page = 4
        while n < _NDEF_MAX:
            t = self._tx
            t[1] = 0x30
            t[2] = page
            got = self._send(2)
            if got != 18 or not self._crc_ok(18):
                return None
            b = self._buf
            for i in range(16):
                area[n + i] = b[i]
            n += 16
            page += 4
            start, ln = find_tlv(area, n)
            if start < 0:
                return None
            if ln >= 0 and start + ln <= n:
                return parse(area, start, ln) if ln else None
            if ln >= 0 and start + ln > _NDEF_MAX:
                return None  # message larger than we read
        return None
