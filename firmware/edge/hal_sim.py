# Sim HAL: the unix port talks to the virtual rig over TCP (docs/hil.md, "Sim link").
# Calls block for one loopback round trip (~0.1 ms), like a short SPI transfer on a board.
#
# Same API as hal_machine.py. Memory (a locker bank has 36+ pins): every rig object (pin, SPI
# device, UART, watchdog) is one small `_Io` of two attributes, the HAL and where its name sits
# in the HAL's shared name buffer; one class instead of one per kind (a class costs ~1 KB).
import socket
from binascii import hexlify, unhexlify


class _Io:
    def __init__(self, hal, name):
        n = hal.names
        o = len(n)
        n.extend(name)  # a str's UTF-8 bytes (no encoded copy: less garbage between pins)
        if not 0 < len(n) - o < 256:
            raise ValueError("rig names are 1-255 bytes")
        self.h = hal
        self.k = o << 8 | (len(n) - o)  # offset << 8 | length

    def _op(self, op, arg=None):
        k = self.k
        o = k >> 8
        line = op + self.h.names[o:o + (k & 0xFF)]
        return line if arg is None else line + b" " + arg

    # pin (in and out); an out pin's last value lives in the HAL's `out` dict (few per device)
    def value(self, v=None):
        h = self.h
        if v is None:
            if self.k in h.out:
                return h.out[self.k]
            return 1 if h.ask(self._op(b"R ")) == b"1" else 0
        v = 1 if v else 0
        if h.out.get(self.k) != v:  # only changes cross the link
            h.out[self.k] = v
            h.send(self._op(b"W ", b"1" if v else b"0"))

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    # SPI device
    def xfer(self, data):
        return unhexlify(self.h.ask(self._op(b"S ", hexlify(data))))

    # UART
    def write(self, b):
        self.h.send(self._op(b"T ", hexlify(b)))

    def read(self):
        r = self.h.ask(self._op(b"X "))
        return None if r == b"-" else unhexlify(r)

    # watchdog
    def feed(self):
        self.h.send(b"F")


class SimHal:
    name = "sim"

    def __init__(self, cfg):
        sim = cfg.get("sim") or {}
        self.names = bytearray()
        self.out = {}  # out pin key -> last value written
        ai = socket.getaddrinfo(sim.get("host", "127.0.0.1"), sim.get("port", 7000))[0][-1]
        self.s = socket.socket()
        # writes (pins, UART) are not answered and an ask follows them: with Nagle the ask sat
        # out the rig's delayed ACK, ~40 ms (IPPROTO_TCP 6, TCP_NODELAY 1: no constants here)
        self.s.setsockopt(6, 1, 1)
        self.s.connect(ai)
        self.ask(b"H " + cfg["device_id"].encode())

    def send(self, line):
        self.s.write(line + b"\n")

    def ask(self, line):
        self.send(line)
        r = self.s.readline()
        if not r:
            raise OSError("rig link closed")
        r = r.strip()
        if r[:2] == b"E ":
            raise OSError("rig: " + r[2:].decode())
        return r

    def pin_out(self, name, value=0):
        p = _Io(self, name)
        p.value(value)
        return p

    def pin_in(self, name, pull=None):
        return _Io(self, name)

    def pin_od(self, name):
        # the sim link caches an out pin's value and cannot read a line both sides drive:
        # the virtual rig's rack display is the SSD1306 (docs/rack-display.md)
        raise ValueError("the sim HAL has no open-drain pins (" + name + "): use the SSD1306 display on the rig")

    def spi_device(self, name):
        return _Io(self, name)

    def uart(self, name):
        return _Io(self, name)

    def wdt(self, timeout_ms):
        return _Io(self, "wdt")

    def reset_cause(self):
        return "power"

    def log(self, text):
        self.send(b"D " + text.encode())

    async def keep_network(self, cfg):
        return  # the unix port uses the host's network

    def reset(self):
        # A board would reboot; the sim process exits and its supervisor restarts it.
        import sys
        sys.exit(3)
