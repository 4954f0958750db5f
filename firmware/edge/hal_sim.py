# Sim HAL: the unix port talks to the virtual rig over TCP (docs/hil.md, "Sim link").
# Calls block for one loopback round trip (~0.1 ms), like a short SPI transfer on a board.
import socket
from binascii import hexlify, unhexlify


class _Link:
    def __init__(self, host, port, dev):
        ai = socket.getaddrinfo(host, port)[0][-1]
        self.s = socket.socket()
        self.s.connect(ai)
        self.ask("H " + dev)

    def send(self, line):
        self.s.write(line.encode() + b"\n")

    def ask(self, line):
        self.send(line)
        r = self.s.readline()
        if not r:
            raise OSError("rig link closed")
        r = r.decode().strip()
        if r.startswith("E "):
            raise OSError("rig: " + r[2:])
        return r


class _OutPin:
    def __init__(self, link, name, value):
        self.link = link
        self.name = name
        self._v = None
        self.value(value)

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:  # only changes cross the link
            self._v = v
            self.link.send("W %s %d" % (self.name, v))

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class _InPin:
    def __init__(self, link, name):
        self.link = link
        self.name = name

    def value(self):
        return 1 if self.link.ask("R " + self.name) == "1" else 0


class _SpiDevice:
    def __init__(self, link, bus):
        self.link = link
        self.bus = bus

    def xfer(self, data):
        return unhexlify(self.link.ask("S %s %s" % (self.bus, hexlify(data).decode())))


class _Uart:
    def __init__(self, link, name):
        self.link = link
        self.name = name

    def write(self, b):
        self.link.send("T %s %s" % (self.name, hexlify(b).decode()))

    def read(self):
        r = self.link.ask("X " + self.name)
        return None if r == "-" else unhexlify(r)


class _Wdt:
    def __init__(self, link):
        self.link = link

    def feed(self):
        self.link.send("F")


class SimHal:
    name = "sim"

    def __init__(self, cfg):
        sim = cfg.get("sim") or {}
        self.link = _Link(sim.get("host", "127.0.0.1"), sim.get("port", 7000), cfg["device_id"])

    def pin_out(self, name, value=0):
        return _OutPin(self.link, name, value)

    def pin_in(self, name, pull=None):
        return _InPin(self.link, name)

    def spi_device(self, name):
        return _SpiDevice(self.link, name)

    def uart(self, name):
        return _Uart(self.link, name)

    def wdt(self, timeout_ms):
        return _Wdt(self.link)

    def reset_cause(self):
        return "power"

    def log(self, text):
        self.link.send("D " + text)

    async def keep_network(self, cfg):
        return  # the unix port uses the host's network

    def reset(self):
        # A board would reboot; the sim process exits and its supervisor restarts it.
        import sys
        sys.exit(3)
