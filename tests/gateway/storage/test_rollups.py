"""Hourly rollups (issue 17): the events retention deletes are counted per device, type and UTC
hour into `event_hours` in the deleting transaction, so history past the raw window keeps its
counts. A rollup that disagrees with the raw events it replaced, counts one twice or loses one,
fails here. A scripted clock, no sleeps."""
import asyncio
import random
from collections import Counter

from gateway.storage.db import Database
from gateway.storage.retention import DAY_MS, HOUR_MS, Retention, RetentionPolicy
from gateway.storage.store import Store

NOW = 1_000 * DAY_MS
OLD = NOW - 60 * DAY_MS          # outside the 30 days of raw events
DEVS = ("pad-1", "pad-2", "lk-1")
TYPES = ("tag.placed", "tag.removed", "door.opened")


def _fill(store: Store) -> None:
    rng = random.Random(17)
    for dev in DEVS:
        store.upsert_device(id=dev, kind="sample-pad", fw="1", caps=[], cfg="c", session=1,
                            epoch="e1", boot=1, reset=None, online=True, now=OLD)
    seq = dict.fromkeys(DEVS, 0)
    t = OLD
    with store.transaction():
        for _ in range(3000):            # ~40 hours of old events, uneven
            t += rng.randrange(1, 100_000)
            dev = rng.choice(DEVS)
            seq[dev] += 1
            store.insert_event(dev, "e1", seq[dev], rng.choice(TYPES), t, t, {})
        # a device gone quiet: only old events; its newest stays raw (the journal checks need
        # it) and so do the 3 its watermark does not cover
        store.upsert_device(id="pad-9", kind="sample-pad", fw="1", caps=[], cfg="c", session=1,
                            epoch="e1", boot=1, reset=None, online=False, now=OLD)
        for i in range(1, 11):
            store.insert_event("pad-9", "e1", i, "tag.placed", OLD + i, OLD + i, {})
        # a gateway-made event (seq NULL), old: it goes by age
        store.insert_event("pad-1", "e1", None, "journal.overflow", t + 1, t + 1, {"lost": 2})
        for i in range(50):              # recent ones: kept raw
            dev = DEVS[i % 3]
            seq[dev] += 1
            store.insert_event(dev, "e1", seq[dev], "tag.placed", NOW - HOUR_MS + i, NOW - HOUR_MS + i, {})
    with store.transaction():
        for dev in DEVS:
            store.set_watermark(dev, "e1", seq[dev] - (5 if dev == "lk-1" else 0))  # 5 unsettled
        store.set_watermark("pad-9", "e1", 7)


def _raw(store: Store) -> Counter:
    return Counter({(h, d, t): n for h, d, t, n in store.conn.execute(
        f"SELECT t_gateway / {HOUR_MS} * {HOUR_MS}, device, type, COUNT(*) FROM events "
        "GROUP BY 1, 2, 3")})


def _rolled(store: Store) -> Counter:
    return Counter({(h, d, t): n for h, d, t, n in store.conn.execute(
        "SELECT hour, device, type, n FROM event_hours")})


def test_pruned_events_are_counted_per_hour_exactly_once(tmp_path):
    async def main():
        async with Database(tmp_path / "gw.db") as db:
            await db.write(_fill)
            before = await db.read(_raw)
            ret = Retention(db, RetentionPolicy(events_days=30, batch_rows=97), lambda: NOW)
            report = await ret.run_once()
            assert report.deleted["events"] > 2900 and report.batches > 30
            after, rolled = await db.read(_raw), await db.read(_rolled)
            # the rollup holds exactly what was deleted, hour by hour, device by device
            assert rolled == before - after, "a rollup disagrees with the raw events it replaced"
            assert sum(rolled.values()) == report.deleted["events"]
            assert sum(n for (_, _, t), n in rolled.items() if t == "journal.overflow") == 1
            # what was kept raw (recent, unsettled, newest of an epoch) is not in the rollup
            assert sum(n for (h, d, t), n in after.items() if d == "pad-9") == 3
            assert sum(after.values()) == sum(before.values()) - report.deleted["events"]
            assert rolled and max(h for (h, _, _) in rolled) < NOW - 30 * DAY_MS

            # history across the raw window: rollup + raw = every event, once
            counts = await db.read(lambda s: s.event_counts(since=0, until=NOW + DAY_MS))
            assert Counter({(h, d, t): n for h, d, t, n in counts}) == before
            one = await db.read(lambda s: s.event_counts(since=OLD, until=OLD + 6 * HOUR_MS,
                                                         device="lk-1", type="door.opened"))
            assert one and [(h, d, t, n) for h, d, t, n in one] == sorted(
                (h, d, t, n) for (h, d, t), n in before.items()
                if d == "lk-1" and t == "door.opened" and OLD <= h < OLD + 6 * HOUR_MS)

            # a second pass deletes nothing more and counts nothing twice
            again = await ret.run_once()
            assert again.deleted["events"] == 0 and await db.read(_rolled) == rolled
    asyncio.run(main())
