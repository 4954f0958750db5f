# The runtime's uptime and gateway clock over a week of ticks. ticks_ms() wraps at the port's
# period (2**30 ms, 12.4 days, on 32-bit ports; 2**62 on the 64-bit unix port) and a
# ticks_diff() is only right within half of it (6.2 days on 32-bit). The ticks are simulated:
# edge.runtime's `time` is replaced by one whose ticks_ms() starts 1 s before the wrap and is
# moved on an hour at a time (the runtime's health loop runs every second; here, every hour).
import json
import time

from memhal import MemHal

import edge.runtime as runtime

PERIOD = time.ticks_add(0, -1) + 1
T0 = 1765000000000  # the gateway's clock at the first ack (unix ms)
HOUR = 3600 * 1000


class FakeTime:
    t = PERIOD - 1000  # 1 s before ticks_ms() wraps
    ticks_diff = staticmethod(time.ticks_diff)
    ticks_add = staticmethod(time.ticks_add)

    @staticmethod
    def ticks_ms():
        return FakeTime.t % PERIOD


runtime.time = FakeTime


class App:
    def __init__(self, rt, hal, cfg):
        pass


class NoMqtt:
    def __init__(self, *a, **k):
        pass


cfg = {"device_id": "pad-w", "data_dir": "data", "journal_max": 10, "wdt_ms": 0,
       "offline_reboot_s": 0, "mqtt": {"host": "127.0.0.1"}, "app": {}}
rt = runtime.Runtime(cfg, MemHal(), App, NoMqtt)
rt._on_ack({"epoch": rt.journal.epoch, "now": T0})
for _ in range(7 * 24):
    FakeTime.t += HOUR
    rt.uptime_ms()  # what the health loop does every second
print(json.dumps({"period": PERIOD, "uptime_ms": rt.uptime_ms(), "now": rt.now(),
                  "expected": 7 * 24 * HOUR}))
