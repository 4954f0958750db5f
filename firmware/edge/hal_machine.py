# Board HAL: machine.Pin/SPI/UART/WDT mapped through the board file (boards/<board>.json,
# deployed as board.json next to main.py).
import json

import machine


class _SpiDevice:
    def __init__(self, spi, cs):
        self.spi = spi
        self.cs = cs
        cs.value(1)

    def xfer(self, data):
        buf = bytearray(len(data))
        self.cs.value(0)
        try:
            self.spi.write_readinto(data, buf)
        finally:
            self.cs.value(1)
        return bytes(buf)


class _Uart:
    def __init__(self, uart):
        self.u = uart

    def write(self, b):
        self.u.write(b)

    def read(self):
        if self.u.any():
            return self.u.read()
        return None


_CAUSES = {}
for _n, _v in (("PWRON_RESET", "power"), ("HARD_RESET", "power"), ("WDT_RESET", "watchdog"),
               ("SOFT_RESET", "soft"), ("DEEPSLEEP_RESET", "deep-sleep")):
    if hasattr(machine, _n):
        _CAUSES[getattr(machine, _n)] = _v


class MachineHal:
    name = "machine"

    def __init__(self, cfg, board_file="board.json"):
        with open(cfg.get("board_file", board_file)) as f:
            self.board = json.load(f)
        self.pins = self.board["pins"]

    def _pin(self, name):
        # a GPIO number, or a name the port's machine.Pin knows: the Pico W's LED is "LED", on
        # the CYW43 wireless chip (GPIO 25 is the chip's there). python -m tools.boards checks which.
        if name not in self.pins:
            raise ValueError("board has no pin named " + name)
        return self.pins[name]

    def pin_out(self, name, value=0):
        return machine.Pin(self._pin(name), machine.Pin.OUT, value=value)

    def pin_in(self, name, pull=None):
        p = machine.Pin.PULL_UP if pull == "up" else (machine.Pin.PULL_DOWN if pull == "down" else None)
        # pull None turns the pulls off (the ports' Pin accepts None; the stubs type pull as int).
        # Leaving it out would keep a pin's reset-time pull (ESP32 strapping pins have some).
        return machine.Pin(self._pin(name), machine.Pin.IN, p)  # type: ignore[arg-type]

    def pin_od(self, name):
        # open drain with the pull-up: value(1) releases the line, value(0) pulls it low,
        # value() reads the line (ESP32: GPIO_MODE_INPUT_OUTPUT_OD; RP2 emulates it by
        # switching the pin's direction). A TM1637's DIO, where the chip answers with an ack.
        return machine.Pin(self._pin(name), machine.Pin.OPEN_DRAIN, machine.Pin.PULL_UP, value=1)

    def spi_device(self, name):
        d = self.board["spi"][name]
        spi = machine.SPI(d["id"], baudrate=d.get("baud", 1000000), polarity=0, phase=0,
                          sck=machine.Pin(d["sck"]), mosi=machine.Pin(d["mosi"]),
                          miso=machine.Pin(d["miso"]))
        return _SpiDevice(spi, machine.Pin(d["cs"], machine.Pin.OUT, value=1))

    def uart(self, name):
        d = self.board["uart"][name]
        return _Uart(machine.UART(d["id"], baudrate=d.get("baud", 9600), tx=d["tx"], rx=d["rx"]))

    def wdt(self, timeout_ms):
        # RP2040 caps the watchdog at 8388 ms; it can never be stopped once started.
        return machine.WDT(timeout=min(timeout_ms, 8388))

    def reset_cause(self):
        return _CAUSES.get(machine.reset_cause(), "other")

    def log(self, text):
        print(text)

    async def keep_network(self, cfg):
        """Join the Wi-Fi in config `wifi` {ssid, password} and rejoin whenever it drops.

        Boards on Ethernet, or without `wifi` in their config, skip this. The MQTT client
        just fails to connect (and backs off) while the link is down."""
        w = cfg.get("wifi")
        if not w:
            return
        import asyncio

        import network
        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        while True:
            if not wlan.isconnected():
                self.log("wifi: joining " + w["ssid"])
                try:
                    wlan.connect(w["ssid"], w.get("password", ""))
                except OSError as e:
                    self.log("wifi: " + str(e))
                for _ in range(30):  # give the join up to 15 s before trying again
                    if wlan.isconnected():
                        self.log("wifi: up")
                        break
                    await asyncio.sleep_ms(500)
            await asyncio.sleep_ms(5000)

    def reset(self):
        machine.reset()
