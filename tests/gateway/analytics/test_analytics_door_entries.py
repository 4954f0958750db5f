"""A door counter's minutes are the funnel's entries (docs/analytics.md "Entries"), end to end:
a door counter sends `footfall` periods over MQTT to a real gateway, the door-counter kind
keeps them per minute (`door_counts`), the analytics fold reads the minutes that changed
through the kind's `entries` hook and sets them as the door's entries: a minute that gets a
late period counts its new total once, never twice."""
from __future__ import annotations

import time

from hil.fakes import FakeDevice
from hil.harness import wait_for

MIN = 60_000


def test_a_door_counters_footfall_reaches_the_funnel_entries_once(gw, broker):
    door = FakeDevice("door-an1", broker.port, kind="door-counter", caps=()).connect()
    try:
        wait_for(lambda: gw.device("door-an1"), 10, what="door counter registered")
        now = int(time.time() * 1000)
        minute = now - now % MIN - 2 * MIN     # two minutes ago: the same hour or the previous one

        def ff(start: int, n_in: int, n_out: int, occ: int) -> dict:
            return {"start": start, "period_s": 30, "in": n_in, "out": n_out, "occupancy": occ,
                    "oos_ms": 0}

        def entries() -> int:
            hour = minute - minute % (60 * MIN)
            f = gw.get(f"/analytics/funnel?start={hour}&end={hour + 120 * MIN}")
            return f["totals"]["entries"]

        door.emit("footfall", ff(minute, 3, 1, 2))
        door.emit("footfall", ff(minute + MIN, 4, 0, 6))
        wait_for(lambda: entries() == 7, 45, what="the door's 3 + 4 entries in the funnel")
        # a second period of the first minute (its total becomes 5): the funnel takes the new
        # total in place of the old (an added 5 would make 12 and never 9)
        door.emit("footfall", ff(minute + 30_000, 2, 0, 8))
        wait_for(lambda: entries() == 9, 45, what="the minute's new total (5) replacing its old one (3)")
        counts = gw.get(f"/door-counters/door-an1/counts?from={minute}&to={minute + 2 * MIN}")
        assert [(m["minute"], m["entries"]) for m in counts["minutes"]] == [(minute, 5), (minute + MIN, 4)]
    finally:
        door.close()
