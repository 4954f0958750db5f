# The locker bank app (edge/apps/locker.py) on MemHal, with a fake runtime: a pickup opens
# exactly its door, an expired code is refused, a spent code powers no lock. Prints one JSON
# line per event and a summary. Runs in the unix port and the 32-bit WebAssembly lane
# (tools/wasm32/run.mjs) alike; tests/firmware/test_wasm32.py compares them. Input: ./locker_in.json
# {"macs": {"<n>": mac hex}, "salt_id": .., "key_id": .., "app": {...}}.
import asyncio
import gc
import json
import time

from memhal import MemHal

from edge.apps.locker import LockerBank
from edge.runtime import Failed, Rejected

inp = json.load(open("locker_in.json"))
events = []
KEEP = []  # the running bank: measured after the program (bench/wasm32_heap.py)


class FakeRuntime:
    def __init__(self):
        self.cfg = {"data_dir": "data"}
        self.gateway_online = True

    def now(self):
        return int(time.time() * 1000)  # 13 digits: a long int on a 32-bit port

    def uptime_ms(self):
        return time.ticks_ms()

    def heartbeat(self):
        pass

    def emit(self, etype, body):
        events.append((etype, body))
        print(json.dumps({"evt": etype, "body": body}))
        return len(events)


async def cmd(app, name, **args):
    try:
        return ["done", await app.commands.get(name)(args)]
    except Rejected as r:
        return ["rejected", r.reason]
    except Failed as f:
        return ["failed", f.reason]


async def wait_event(etype, since, ms=5000):
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < ms:
        for e in events[since:]:
            if e[0] == etype:
                return e[1]
        await asyncio.sleep_ms(20)
    raise AssertionError("no %s event within %d ms" % (etype, ms))


async def main():
    hal = MemHal()
    for n in (1, 2, 3):
        hal.pins["door_%d" % n] = 0
        hal.pins["occ_%d" % n] = 0

    def spring(pin, v):  # a powered lock releases its door
        if v and pin.startswith("lock_"):
            hal.pins["door_" + pin[5:]] = 1

    hal.on_output.append(spring)
    rt = FakeRuntime()
    app = LockerBank(rt, hal, inp["app"])
    asyncio.create_task(app.run())
    await asyncio.sleep_ms(100)
    now = rt.now()
    ids = {"salt_id": inp["salt_id"], "key_id": inp["key_id"]}
    out = {"now_type": type(now).__name__, "now_digits": len(str(now))}
    out["set2"] = await cmd(app, "set_order", compartment=2, order="ord-2", mac=inp["macs"]["2"],
                            exp=now + 86400000, **ids)
    out["set1_expired"] = await cmd(app, "set_order", compartment=1, order="ord-1",
                                    mac=inp["macs"]["1"], exp=now - 1000, **ids)
    hal.pins["occ_2"] = 1
    mark = len(hal.trace)
    k = len(events)
    hal.feed("keypad", b"482913#")
    out["opened"] = await wait_event("door.opened", k)
    out["locks_pulsed"] = sorted(set(p for p, v in hal.trace[mark:] if p.startswith("lock_") and v))
    hal.pins["occ_2"] = 0
    hal.pins["door_2"] = 0
    out["collected"] = await wait_event("pickup.collected", k)
    mark = len(hal.trace)
    k = len(events)
    hal.feed("keypad", b"482913#")
    out["reused"] = await wait_event("code.reused", k)
    await asyncio.sleep_ms(300)
    out["locks_pulsed_after_reuse"] = [p for p, v in hal.trace[mark:] if p.startswith("lock_") and v]
    out["status"] = [c[2] for c in (await cmd(app, "status"))[1]["compartments"]]
    out["events"] = [e[0] for e in events]
    events.clear()
    KEEP.extend((app, rt, hal))
    gc.collect()
    out["heap_alloc"] = gc.mem_alloc()
    print(json.dumps({"summary": out}))


asyncio.run(main())
