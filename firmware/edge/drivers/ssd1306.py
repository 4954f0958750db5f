# SSD1306 monochrome OLED (128x32 or 128x64) on SPI, behind the HAL: `spi` is the HAL's SPI
# device (hal.spi_device: chip select per transfer), `dc` an output pin (0 command, 1 data).
# The picture is a framebuf.FrameBuffer in the controller's own layout (MONO_VLSB: one byte
# is 8 pixels of a column in a page), so show() sends the buffer as it is. On the virtual rig
# the same bytes reach an emulated SSD1306 (hil/drivers/rack_display.py) the rig can read.
import framebuf

# (command, arguments) sent by init() after multiplex (0xa8) and COM pins (0xda), which depend
# on the panel's height: display off, clock, offset, start line, charge pump on, horizontal
# addressing, segment remap, COM scan, contrast, precharge, VCOM, resume from RAM, normal (not
# inverted), display on.
_INIT = (b"\xae", b"\xd5\x80", b"\xd3\x00", b"\x40", b"\x8d\x14", b"\x20\x00", b"\xa1",
         b"\xc8", b"\x81\xcf", b"\xd9\xf1", b"\xdb\x40", b"\xa4", b"\xa6", b"\xaf")


class SSD1306:
    def __init__(self, spi, dc, width=128, height=32):
        if width % 8 or height not in (32, 64) or not 0 < width <= 128:
            raise ValueError("ssd1306: width a multiple of 8 up to 128, height 32 or 64")
        self.spi = spi
        self.dc = dc
        self.width = width
        self.height = height
        self.pages = height // 8
        self.buf = bytearray(width * self.pages)
        self.mv = memoryview(self.buf)
        self.fb = framebuf.FrameBuffer(self.buf, width, height, framebuf.MONO_VLSB)

    def _cmd(self, b):
        self.dc.value(0)
        self.spi.xfer(b)

    def init(self):
        self._cmd(b"\xa8" + bytes((self.height - 1,)))
        self._cmd(b"\xda" + (b"\x02" if self.height == 32 else b"\x12"))
        for c in _INIT:
            self._cmd(c)
        self.show()

    def show(self):
        # column and page window = the whole panel, then the buffer as data
        self._cmd(b"\x21\x00" + bytes((self.width - 1,)))
        self._cmd(b"\x22\x00" + bytes((self.pages - 1,)))
        self.dc.value(1)
        # one page (`width` bytes) per transfer: a whole-frame transfer needs ~3 KB of
        # temporaries at once on the sim link (hex out, line in), which a 96 KB heap under a
        # burst of commands could not always find (tests/hil/test_hil_rack_display.py)
        mv = self.mv
        w = self.width
        for p in range(self.pages):
            self.spi.xfer(mv[p * w:(p + 1) * w])

    def power(self, on):
        self._cmd(b"\xaf" if on else b"\xae")
