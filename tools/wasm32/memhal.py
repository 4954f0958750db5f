# An in-memory HAL with the API of edge/hal_sim.py, for ports without sockets (the 32-bit
# WebAssembly lane, docs/wasm32.md): the program plays the world through `pins`, `feed()`
# and `on_output` instead of the virtual rig. Not firmware: it is never deployed.


class _Io:
    def __init__(self, hal, name):
        self.h = hal
        self.n = name

    def value(self, v=None):
        h = self.h
        if v is None:
            return h.pins.get(self.n, 0)
        v = 1 if v else 0
        if h.pins.get(self.n) != v:
            h.pins[self.n] = v
            h.trace.append((self.n, v))
            for f in h.on_output:
                f(self.n, v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def write(self, b):  # UART to the world
        h = self.h
        h.uart_out[self.n] = h.uart_out.get(self.n, b"") + bytes(b)

    def read(self):  # UART from the world
        return self.h.uart_in.pop(self.n, None) or None

    def feed(self):  # watchdog
        self.h.fed += 1


class MemHal:
    name = "sim"

    def __init__(self, cfg=None):
        self.pins = {}
        self.trace = []  # (pin, value) of every output change, in order
        self.on_output = []  # f(pin, value)
        self.uart_in = {}
        self.uart_out = {}
        self.fed = 0
        self.lines = []

    def feed(self, uart, data):
        self.uart_in[uart] = self.uart_in.get(uart, b"") + data

    def pin_out(self, name, value=0):
        p = _Io(self, name)
        p.value(value)
        return p

    def pin_in(self, name, pull=None):
        return _Io(self, name)

    def spi_device(self, name):
        raise OSError("MemHal has no SPI devices")

    def uart(self, name):
        return _Io(self, name)

    def wdt(self, timeout_ms):
        return _Io(self, "wdt")

    def reset_cause(self):
        return "power"

    def log(self, text):
        self.lines.append(text)

    async def keep_network(self, cfg):
        return

    def reset(self):
        import sys
        sys.exit(3)
