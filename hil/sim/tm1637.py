"""A pin-level TM1637 emulator: the two wires of a 4-digit 7-segment LED module.

The driver under test moves CLK and DIO (``clk(level)``, ``dio(level)``: what the MCU drives;
DIO is open drain, 1 = released) and reads DIO (``read_dio()``: the line as the MCU sees it).
The emulator decodes the wire as the chip does (TM1637 datasheet, "Interface interpretation"):

* start: DIO falls while CLK is high; stop: DIO rises while CLK is high;
* data: DIO is read on each CLK rising edge, LSB first;
* ack: from the 8th falling edge of CLK to the 9th the chip pulls DIO low (``ack=False``
  makes a chip that never answers: not wired, not powered); a 9th clock is required, a driver
  that skips it shifts every later bit;
* a transaction is what lies between a start and a stop; its first byte is a command:
  ``0x40``/``0x44`` data command (write, auto-increment / fixed address), ``0xC0 | addr``
  address command followed by the data bytes (addresses 0-5; a 4-digit module shows 0-3),
  ``0x80 | 0x08 on | brightness`` display control. Anything else, or a byte cut by a stop,
  goes to ``errors`` and changes nothing (the chip ignores what it cannot parse).

The line: the MCU's DIO and the chip's ack are wired-AND with a pull-up (the module's 10k).
"""
from __future__ import annotations

SEGMENTS = {0x3F: "0", 0x06: "1", 0x5B: "2", 0x4F: "3", 0x66: "4", 0x6D: "5", 0x7D: "6", 0x07: "7",
            0x7F: "8", 0x6F: "9", 0x40: "-", 0x75: "k", 0x37: "M", 0x00: " "}


class TM1637Emulator:
    def __init__(self, ack: bool = True) -> None:
        self.ack = ack
        self.clk_level = 1
        self.mcu_dio = 1           # what the MCU drives (1: released)
        self.chip_low = False      # the chip pulling DIO low (its ack)
        self.ram = bytearray(6)    # display register, addresses 0-5
        self.on = False
        self.brightness = 0
        self.auto_increment = True
        self.errors: list[str] = []
        self.transactions: list[bytes] = []
        self._in = False           # between a start and a stop
        self._bits = 0
        self._n = 0                # bits read of the current byte
        self._acking = False       # between the 8th and the 9th falling edge
        self._bytes = bytearray()

    # --- the wire ------------------------------------------------------------------------

    def line(self) -> int:
        return 0 if self.mcu_dio == 0 or self.chip_low else 1

    def read_dio(self) -> int:
        return self.line()

    def dio(self, level: int) -> None:
        before = self.line()
        self.mcu_dio = 1 if level else 0
        after = self.line()
        if self.clk_level and before != after:
            if after == 0:
                self._start()
            else:
                self._stop()

    def clk(self, level: int) -> None:
        level = 1 if level else 0
        if level == self.clk_level:
            return
        self.clk_level = level
        if not self._in:
            return
        if level:  # rising: read a data bit (the 9th clock is the ack's)
            if not self._acking and self._n < 8:
                self._bits |= self.line() << self._n
                self._n += 1
        elif self._acking:  # the 9th falling edge: the ack ends
            self._acking = False
            self.chip_low = False
            self._bits = self._n = 0
        elif self._n == 8:  # the 8th falling edge: a byte, acked
            self._bytes.append(self._bits)
            self._acking = True
            self.chip_low = self.ack

    # --- decoding ------------------------------------------------------------------------

    def _start(self) -> None:
        if self._in and (self._bytes or self._n):
            self.errors.append(f"start inside a transaction after {bytes(self._bytes).hex()}")
        self._in = True
        self._bits = self._n = 0
        self._acking = False
        self._bytes = bytearray()

    def _stop(self) -> None:
        if not self._in:
            return
        self._in = False
        data = bytes(self._bytes)
        # the stop's own CLK rise reads one bit (DIO low): a byte cut later than that is an error
        if self._n > 1 or self._acking:
            self.errors.append(f"stop inside a byte ({self._n} bits) after {data.hex()}")
            return
        if not data:
            return
        if not self.ack:
            return  # a chip that does not answer does not listen either
        self.transactions.append(data)
        self._command(data)

    def _command(self, data: bytes) -> None:
        cmd = data[0]
        kind = cmd & 0xC0
        if kind == 0x40 and cmd & 0x3B == 0 and len(data) == 1:
            self.auto_increment = not cmd & 0x04
        elif kind == 0xC0 and cmd & 0x0F < 6:
            addr = cmd & 0x0F
            for b in data[1:]:
                if addr < 6:
                    self.ram[addr] = b
                if self.auto_increment:
                    addr += 1
        elif kind == 0x80 and len(data) == 1 and not cmd & 0x30:
            self.on = bool(cmd & 0x08)
            self.brightness = cmd & 0x07
        else:
            self.errors.append(f"not a TM1637 command: {data.hex()}")

    # --- what a person sees --------------------------------------------------------------

    def digits(self) -> bytes:
        """The 4 digits' segment bytes (a 4-digit module shows addresses 0-3)."""
        return bytes(self.ram[:4])

    def text(self) -> str:
        """The 4 digits as characters (`?` for a pattern outside the font); a lit bit 7 (the
        decimal point, or the colon of a clock module) reads as `.` after its digit."""
        return "".join(SEGMENTS.get(b & 0x7F, "?") + ("." if b & 0x80 else "") for b in self.digits())

    def marked(self) -> bool:
        """Every digit's bit 7 lit: the rack display's "last known" mark."""
        return all(b & 0x80 for b in self.digits())
