# TM1637: 4-digit 7-segment LED driver on two wires, CLK and DIO, bit-banged on two
# machine.Pin as the common MicroPython TM1637 drivers do (docs/rack-display.md, "On a board").
#
# The wire (TM1637 datasheet): a start is DIO falling while CLK is high, a stop DIO rising
# while CLK is high; data changes while CLK is low and is read on CLK rising, LSB first; after
# the 8th bit the chip pulls DIO low from the 8th falling edge to the 9th (the ack).
# CLK is a push-pull output; DIO is open drain (value(1) releases the line to the module's
# pull-up, value(0) pulls it low, value() reads the line): hal.pin_od(). The driver reads the
# ack and raises OSError when the chip does not answer (not wired, not powered).
#
# Segments: bit 0 = a ... bit 6 = g, bit 7 = the decimal point (on the clock modules, bit 7 of
# digit 1 drives the colon and the other bits 7 drive nothing).
import time

_DELAY_US = 5  # half a clock period: ~100 kHz, well under the chip's limit
_CMD_DATA = 0x40  # data command: write to the display register, address auto-increment
_CMD_ADDR = 0xC0  # address command: from digit 0
_CMD_CTRL = 0x88  # display control: display on | brightness 0-7

DIGITS = b"\x3f\x06\x5b\x4f\x66\x6d\x7d\x07\x7f\x6f"
MINUS = 0x40
KILO = 0x75  # "k": a, c, e, f, g
MEGA = 0x37  # "M" as the usual upside-down U: a, b, c, e, f
MARK = 0x80  # the decimal points, or the colon


def encode_count(n, out=None):
    """The 4 segment bytes for a like count, right-aligned: 0-9999 as is, 10000-999999 in
    thousands with a "k" ("12k", "999k"), from 1000000 in millions with an "M" (capped at
    "999M"); always rounded down, so it never shows more than there is. None: "----"."""
    out = out if out is not None else bytearray(4)
    if n is None:
        for i in range(4):
            out[i] = MINUS
        return out
    if n < 10000:
        s, suffix = str(n), 0
    elif n < 1000000:
        s, suffix = str(n // 1000), KILO
    else:
        s, suffix = str(min(n // 1000000, 999)), MEGA
    i = 4 - len(s) - (1 if suffix else 0)
    for j in range(i):
        out[j] = 0
    for c in s:
        out[i] = DIGITS[ord(c) - 48]
        i += 1
    if suffix:
        out[3] = suffix
    return out


class TM1637:
    def __init__(self, clk, dio, brightness=4):
        self.clk = clk
        self.dio = dio
        self.brightness = brightness & 7
        self.buf = bytearray(4)
        clk.value(1)
        dio.value(1)

    def _start(self):
        self.dio.value(0)
        time.sleep_us(_DELAY_US)
        self.clk.value(0)
        time.sleep_us(_DELAY_US)

    def _stop(self):
        self.dio.value(0)
        time.sleep_us(_DELAY_US)
        self.clk.value(1)
        time.sleep_us(_DELAY_US)
        self.dio.value(1)
        time.sleep_us(_DELAY_US)

    def _byte(self, b):
        clk = self.clk
        dio = self.dio
        for i in range(8):
            dio.value((b >> i) & 1)
            time.sleep_us(_DELAY_US)
            clk.value(1)
            time.sleep_us(_DELAY_US)
            clk.value(0)
        dio.value(1)  # release DIO: the chip holds it low until the 9th falling edge
        time.sleep_us(_DELAY_US)
        clk.value(1)
        time.sleep_us(_DELAY_US)
        ack = dio.value() == 0
        clk.value(0)
        time.sleep_us(_DELAY_US)
        if not ack:
            self._stop()  # leave the bus idle for the next try
            raise OSError("TM1637: no ack; check its CLK/DIO wiring, its power and the board file's pins")

    def write(self, segs):
        """Show 4 segment bytes (digit 0 on the left)."""
        self._start()
        self._byte(_CMD_DATA)
        self._stop()
        self._start()
        self._byte(_CMD_ADDR)
        for b in segs:
            self._byte(b)
        self._stop()
        self._start()
        self._byte(_CMD_CTRL | self.brightness)
        self._stop()

    def show_count(self, n, mark=False):
        """A like count (encode_count); `mark` lights every digit's bit 7: the four decimal
        points, or the colon on a clock module (the rack display's "last known" mark)."""
        segs = encode_count(n, self.buf)
        if mark:
            for i in range(4):
                segs[i] |= MARK
        self.write(segs)
