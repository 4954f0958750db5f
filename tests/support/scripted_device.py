"""A device running the real firmware runtime (bytecode from mpy-cross) in the MicroPython unix
port, with a scripted app instead of a device app: `act` records an actuation in
`actuations.txt`, `emit` journals `n` events (more than 50: rejected `too-many`). Over MQTT, or
over CoAP with `coap={...}` (CoapTransport keywords). Used by tests/firmware/test_fw_runtime.py and
tests/support/coap_harness.py.

App config (`app=`): `tick_ms` emits `test.tick` by itself every tick_ms; `heap_log` prints the
free heap and the transport's stats every 2 s to the console.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hil.sim.firmware import build_mpy, micropython_binary, micropython_env

APP = '''
import asyncio, gc, sys, time
from edge import config
from edge.runtime import Runtime, Rejected

class FakeHal:
    class _W:
        def feed(self): pass
    def wdt(self, ms): return self._W()
    def reset_cause(self): return "power"
    def reset(self): sys.exit(3)

class App:
    caps = ["act", "emit"]
    def __init__(self, rt, hal, cfg):
        self.rt = rt
        self.cfg_tick = cfg.get("tick_ms", 0)
        self.heap_log = cfg.get("heap_log", False)
        self.commands = {"act": self.act, "emit": self.emit}
    async def act(self, args):
        with open("actuations.txt", "a") as f:
            f.write("%s\\n" % args.get("tag"))
        await asyncio.sleep_ms(args.get("ms", 0))
        return {"tag": args.get("tag")}
    async def emit(self, args):
        n = args.get("n", 1)
        if n > 50:
            raise Rejected("too-many")
        for i in range(n):
            self.rt.emit("test.n", {"i": i})
            if args.get("gap_ms"):
                await asyncio.sleep_ms(args["gap_ms"])
        return {"n": n}
    async def run(self):
        t = last = time.ticks_ms()
        while True:
            self.rt.heartbeat()
            await asyncio.sleep_ms(100)
            if self.cfg_tick and time.ticks_diff(time.ticks_ms(), last) >= self.cfg_tick:
                last = time.ticks_ms()
                self.rt.emit("test.tick", {})
            if self.heap_log and time.ticks_diff(time.ticks_ms(), t) > 2000:
                t = time.ticks_ms()
                gc.collect()
                print("heap free", gc.mem_free(), "stats", self.rt.client.stats)

cfg = config.load(sys.argv[1])
opts = cfg.get("coap_test")
transport = None
if opts is not None:
    from edge.coap import CoapTransport
    def transport(*a, **k):
        for name in opts:
            k[name] = opts[name]
        return CoapTransport(*a, **k)
asyncio.run(Runtime(cfg, FakeHal(), App, mqtt_class=transport).run())
'''


class ScriptedDevice:
    def __init__(self, tmp_path: Path, port: int, dev: str, *, keepalive: int = 5,
                 app: dict | None = None, coap: dict | None = None) -> None:
        self.dev = dev
        self.dir = Path(tmp_path) / dev
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "app.py").write_text(APP)
        self.config = {"device_id": dev, "kind": "sample-pad",
                       "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": keepalive},
                       "data_dir": str(self.dir / "flash"), "journal_max": 100,
                       "app": app or {}}
        if coap is not None:
            self.config |= {"transport": "coap", "coap_test": coap}
        self.write_config()
        self.env = micropython_env(path=build_mpy())
        self.env["MICROPYPATH"] = f"{self.dir}:{self.env['MICROPYPATH']}"
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> None:
        (self.dir / "config.json").write_text(json.dumps(self.config))

    def start(self) -> ScriptedDevice:
        with open(self.dir / "console.log", "a") as console:  # the child keeps its own fd
            self.proc = subprocess.Popen(
                [micropython_binary(), "-X", "heapsize=96k", str(self.dir / "app.py"),
                 str(self.dir / "config.json")], cwd=self.dir, env=self.env,
                stdout=console, stderr=subprocess.STDOUT)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def console(self) -> str:
        p = self.dir / "console.log"
        return p.read_text() if p.exists() else ""

    def actuations(self) -> list[str]:
        p = self.dir / "actuations.txt"
        return p.read_text().split() if p.exists() else []
