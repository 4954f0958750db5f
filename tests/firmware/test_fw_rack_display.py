"""The rack display app (firmware/edge/apps/rack_display.py) and its SSD1306 driver in the real
MicroPython binary (bytecode from mpy-cross, 96 KB heap), on the real sim HAL against a virtual
rig whose SPI bus has the emulated SSD1306 (hil/drivers/rack_display.py): the test reads the
picture the firmware drew.

No MQTT here: a fake runtime takes `show` commands as JSON lines on a rig UART `ctl` and the
test sets what the runtime would know (link up, gateway online, session) the same way."""
from __future__ import annotations

import json
import time

import pytest

from hil.drivers.rack_display import SSD1306Emulator, read_text
from hil.sim.rig import VirtualRig
from tests.support.app_process import AppProcess

FAKE_RUNTIME = r'''
import asyncio, json, sys
from edge.hal_sim import SimHal
from edge.runtime import Rejected
from edge.apps.rack_display import RackDisplay

cfg = json.load(open(sys.argv[1]))

class Client:
    up = True
    def is_connected(self):
        return self.up

class FakeRuntime:
    def __init__(self, cfg):
        self.cfg = cfg
        self.state = {"session": 1}
        self.client = Client()
        self.gateway_online = True
    def heartbeat(self):
        pass
    def log(self, *parts):
        print(json.dumps({"log": " ".join(str(p) for p in parts)}))

async def run_cmd(rt, app, msg):
    if msg.get("link") is not None:  # the test plays the link: up/down, a new session
        rt.client.up = msg["link"]
        rt.state["session"] = msg.get("session", rt.state["session"])
        print(json.dumps({"reply": msg["id"], "status": "done"}))
        return
    if msg.get("mem"):
        import gc
        gc.collect()
        print(json.dumps({"reply": msg["id"], "free": gc.mem_free(), "alloc": gc.mem_alloc(), "frames": app.frames}))
        return
    status, reason, result = "done", None, None
    try:
        result = await app.commands[msg["name"]](msg.get("args") or {})
    except Rejected as r:
        status, reason = "rejected", r.reason
    print(json.dumps({"reply": msg["id"], "status": status, "reason": reason, "result": result}))

async def commands(hal, rt, app):
    u = hal.uart("ctl")
    buf = b""
    while True:
        d = u.read()
        if d:
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                asyncio.create_task(run_cmd(rt, app, json.loads(line)))
        await asyncio.sleep_ms(20)

async def main():
    hal = SimHal(cfg)
    rt = FakeRuntime(cfg)
    app = RackDisplay(rt, hal, cfg["app"])
    print(json.dumps({"ready": 1}))
    asyncio.create_task(commands(hal, rt, app))
    await app.run()

asyncio.run(main())
'''


class Display(AppProcess):
    def __init__(self, rig: VirtualRig, workdir, dev: str = "rack-fw", app: dict | None = None):
        super().__init__(workdir, dev, FAKE_RUNTIME, {
            "device_id": dev, "data_dir": str(workdir / dev / "flash"),
            "app": {"label": "RACK A", **(app or {})},
            "sim": {"host": "127.0.0.1", "port": rig.port}})
        self.rig = rig
        self.sim = rig.device(dev)
        self.panel = SSD1306Emulator(self.sim)
        self.sim.attach_spi("display", self.panel)
        (self.dir / "flash").mkdir(exist_ok=True)
        self.n = 0

    def start(self) -> Display:
        with self.cond:
            self.msgs.clear()
        self.launch(timeout=8.0)
        return self

    def wait(self, pred, what: str, timeout: float = 8.0, start: int = 0) -> dict:
        return super().wait(pred, what, timeout, start)

    def send(self, **msg) -> dict:
        self.n += 1
        cid = f"c{self.n}"
        self.sim.uart_feed("ctl", json.dumps({"id": cid, **msg}).encode() + b"\n")
        return self.wait(lambda m: m.get("reply") == cid, f"reply to {cid}")

    def show(self, rev, likes, **extra) -> dict:
        return self.send(name="show", args={"rev": rev, "likes": likes, **extra})

    def screen(self) -> list[str]:
        return read_text(self.panel.pixels())

    def wait_screen(self, count: str, status: str = "", timeout: float = 8.0) -> list[str]:
        end = time.monotonic() + timeout  # the panel does not notify: poll it
        while time.monotonic() < end:
            lines = self.screen()
            if lines[1] == count and lines[2] == status:
                return lines
            time.sleep(0.03)
        raise AssertionError(f"screen never showed {count!r}/{status!r}: {self.screen()}")


@pytest.fixture
def rig():
    with VirtualRig() as r:
        yield r


@pytest.fixture
def display(rig, tmp_path):
    d = Display(rig, tmp_path)
    yield d
    d.kill()


def test_shows_the_count_and_marks_it_last_known_until_the_gateway_confirms(display):
    display.start()
    # just booted, nothing shown yet: "--", not live (no show on this session)
    assert display.wait_screen("--", "LAST KNOWN")[0] == "RACK A"
    r = display.show(1, 42)
    assert r["status"] == "done" and r["result"] == {"rev": 1}
    assert display.wait_screen("42") == ["RACK A", "42", ""]
    assert display.panel.on


def test_older_revs_are_ignored_and_bad_args_rejected(display):
    display.start()
    display.show(5, 100)
    display.wait_screen("100")
    r = display.show(4, 7)  # a late redelivery of an older picture
    assert r["result"] == {"rev": 5, "stale": True}
    assert display.show(5, 100)["result"] == {"rev": 5}  # the same picture again: idempotent
    assert display.wait_screen("100") == ["RACK A", "100", ""]
    for bad in ({"rev": 0, "likes": 1}, {"rev": 6, "likes": -1}, {"rev": "6", "likes": 1},
                {"rev": 6, "likes": 1, "label": "x" * 17}, {"rev": 6}):
        assert display.send(name="show", args=bad)["reason"] == "bad-args", bad
    assert display.screen()[1] == "100"


def test_offline_shows_last_known_then_catches_up_on_the_next_session(display):
    display.start()
    display.show(1, 10, label="DENIM")
    display.wait_screen("10")
    display.send(link=False)  # the link drops
    assert display.wait_screen("10", "LAST KNOWN") == ["DENIM", "10", "LAST KNOWN"]
    display.send(link=True, session=2)  # reconnected: still last known until the gateway says
    assert display.wait_screen("10", "LAST KNOWN")
    display.show(2, 25, label="DENIM")
    assert display.wait_screen("25") == ["DENIM", "25", ""]


def test_the_stores_words_for_last_known_are_shown_offline_and_kept_over_a_reboot(display):
    display.start()
    display.show(1, 10, label="DENIM", stale="DERNIER CHIFFRE")  # [screens] rack_stale, in French
    display.wait_screen("10")
    assert display.send(name="show", args={"rev": 2, "likes": 1, "stale": "x" * 17})["reason"] == "bad-args"
    display.send(link=False)
    assert display.wait_screen("10", "DERNIER CHIFFRE") == ["DENIM", "10", "DERNIER CHIFFRE"]
    display.kill()
    display.start()  # the words come back from flash with the value
    assert display.wait_screen("10", "DERNIER CHIFFRE")
    display.show(2, 11)  # a gateway that does not say keeps the words the display has
    display.send(link=False)
    assert display.wait_screen("11", "DERNIER CHIFFRE")


def test_after_a_reboot_it_shows_the_value_from_flash_as_last_known(display):
    display.start()
    display.show(3, 77)
    display.wait_screen("77")
    display.kill()
    display.panel.ram[:] = bytes(len(display.panel.ram))  # a power cut blanks the panel
    display.start()
    assert display.wait_screen("77", "LAST KNOWN")
    assert display.show(3, 77)["result"] == {"rev": 3}  # the gateway confirms: live again
    assert display.wait_screen("77")


def test_a_burst_of_shows_is_coalesced_to_the_refresh_rate_latest_wins(display):
    display.start()
    display.show(1, 0)
    display.wait_screen("0")
    before = display.panel.frames
    for first in range(2, 202, 10):  # 200 shows, ten at a time as fast as the link takes them
        for i in range(first, first + 10):
            display.sim.uart_feed("ctl", json.dumps({"id": f"b{i}", "name": "show",
                                                     "args": {"rev": i, "likes": i}}).encode() + b"\n")
        display.wait(lambda m, last=f"b{first + 9}": m.get("reply") == last, "the group's last reply")
    assert display.wait_screen("201")
    drawn = display.panel.frames - before
    assert 1 <= drawn < 200 // 4, f"{drawn} redraws for 200 shows: not coalesced"


def test_heap_within_96k_after_drawing(display):
    display.start()
    for i in range(1, 20):
        display.show(i, 10 ** (i % 9))
    display.wait_screen(str(10 ** (19 % 9)))
    m = display.send(mem=True)
    assert m["frames"] >= 2
    assert m["alloc"] + m["free"] <= 96 * 1024 and m["free"] > 16 * 1024, m
