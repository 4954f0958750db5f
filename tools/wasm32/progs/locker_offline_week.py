# A locker bank that reboots offline and stays offline a week: its clock is the one saved on
# flash plus the time since boot, and a code that expired meanwhile must be refused.
# `locker_offline_week.py setup` (online: an order whose code expires in a day, the clock saved),
# then `locker_offline_week.py week` on the same flash (rebooted, no gateway clock; ticks_ms()
# moved on an hour at a time for 7 days, wrapping at the port's period as on a board; the
# runtime's uptime, which never wraps, moves with it). Input: ./locker_in.json as locker_bank.py.
import asyncio
import json
import sys
import time

from memhal import MemHal

import edge.apps.locker as locker_mod
from edge.apps.locker import LockerBank

PERIOD = time.ticks_add(0, -1) + 1
HOUR = 3600 * 1000
inp = json.load(open("locker_in.json"))
events = []
offset = [0]  # simulated ms on top of the real ones


class FakeTime:  # the locker's `time`: ticks moved on by `offset`, wrapping as the port's do
    ticks_diff = staticmethod(time.ticks_diff)
    ticks_add = staticmethod(time.ticks_add)
    time = staticmethod(time.time)

    @staticmethod
    def ticks_ms():
        return (time.ticks_ms() + offset[0]) % PERIOD


class FakeRuntime:
    def __init__(self, online):
        self.cfg = {"data_dir": "data"}
        self.gateway_online = online
        self.online = online
        self.t0 = time.ticks_ms()

    def now(self):
        return int(time.time() * 1000) if self.online else None

    def uptime_ms(self):
        return time.ticks_diff(time.ticks_ms(), self.t0) + offset[0]

    def heartbeat(self):
        pass

    def emit(self, etype, body):
        events.append((etype, body))
        print(json.dumps({"evt": etype, "body": body}))
        return len(events)


async def main():
    phase = sys.argv[1]
    hal = MemHal()
    for n in (1, 2, 3):
        hal.pins["door_%d" % n] = 0
        hal.pins["occ_%d" % n] = 1

    def spring(pin, v):
        if v and pin.startswith("lock_"):
            hal.pins["door_" + pin[5:]] = 1

    hal.on_output.append(spring)
    if phase == "week":
        import edge.apps.locker_boot as boot_mod
        locker_mod.time = boot_mod.time = FakeTime
    rt = FakeRuntime(phase == "setup")
    app = LockerBank(rt, hal, inp["app"])
    asyncio.create_task(app.run())
    await asyncio.sleep_ms(100)
    if phase == "setup":
        r = await app.commands.get("set_order")({
            "compartment": 2, "order": "ord-2", "mac": inp["macs"]["2"], "exp": rt.now() + 24 * HOUR,
            "salt_id": inp["salt_id"], "key_id": inp["key_id"]})
        print(json.dumps({"set": r}))
        return
    for _ in range(7 * 24):
        offset[0] += HOUR
        await asyncio.sleep_ms(10)
    mark = len(hal.trace)
    hal.feed("keypad", b"482913#")
    for _ in range(100):
        if events:
            break
        await asyncio.sleep_ms(20)
    await asyncio.sleep_ms(300)
    print(json.dumps({"summary": {"events": events, "locks_pulsed": [p for p, v in hal.trace[mark:]
                                                                      if p.startswith("lock_") and v]}}))


asyncio.run(main())
