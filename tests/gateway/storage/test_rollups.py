"""Hourly counts (issue 17): every event is counted per device, type and UTC hour into
`event_hours` as it comes (`fold_batch`, a pass a minute), retention prunes only events already
counted, and `Store.event_counts` adds the few raw events not counted yet, so history past the
raw window keeps its counts. A count that disagrees with the raw events, counts one twice or
loses one, fails here. A scripted clock, no sleeps."""
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


def test_every_event_is_counted_per_hour_exactly_once_and_pruning_keeps_the_counts(tmp_path):
    async def main():
        async with Database(tmp_path / "gw.db") as db:
            await db.write(_fill)
            before = await db.read(_raw)
            counts = await db.read(lambda s: s.event_counts(since=0, until=NOW + DAY_MS))
            assert Counter({(h, d, t): n for h, d, t, n in counts}) == before  # all raw yet
            ret = Retention(db, RetentionPolicy(events_days=30, batch_rows=97), lambda: NOW)
            report = await ret.run_once()
            assert report.deleted["events"] > 2900 and report.batches > 30
            after, rolled = await db.read(_raw), await db.read(_rolled)
            # the pass first counted every event, then deleted only counted ones
            assert rolled == before, "an hourly count disagrees with the raw events"
            assert sum(after.values()) == sum(before.values()) - report.deleted["events"]
            assert sum(n for (_, _, t), n in before.items() if t == "journal.overflow") == 1
            assert sum(n for (h, d, t), n in after.items() if d == "pad-9") == 3  # kept raw

            # history across the raw window: counted + raw not counted = every event, once
            counts = await db.read(lambda s: s.event_counts(since=0, until=NOW + DAY_MS))
            assert Counter({(h, d, t): n for h, d, t, n in counts}) == before
            one = await db.read(lambda s: s.event_counts(since=OLD, until=OLD + 6 * HOUR_MS,
                                                         device="lk-1", type="door.opened"))
            assert one and [(h, d, t, n) for h, d, t, n in one] == sorted(
                (h, d, t, n) for (h, d, t), n in before.items()
                if d == "lk-1" and t == "door.opened" and OLD <= h < OLD + 6 * HOUR_MS)

            # new events after the fold: raw until the next one, then counted; never twice
            def more(store):
                with store.transaction():
                    for i in range(7):
                        store.insert_event("pad-2", "e1", 10_000 + i, "tag.placed", NOW + i,
                                           NOW + i, {})
            await db.write(more)
            expect = before + Counter({(NOW // HOUR_MS * HOUR_MS, "pad-2", "tag.placed"): 7})
            for _ in range(2):
                counts = await db.read(lambda s: s.event_counts(since=0, until=NOW + DAY_MS))
                assert Counter({(h, d, t): n for h, d, t, n in counts}) == expect
                assert await ret.fold() >= 1
            assert await db.read(_rolled) == expect and await db.read(Store.hours_lag) == 0

            # a second pass deletes nothing more and counts nothing twice
            again = await ret.run_once()
            assert again.deleted["events"] == 0 and await db.read(_rolled) == expect
    asyncio.run(main())


def test_an_event_not_counted_yet_is_not_pruned(tmp_path):
    """The floor: an old, settled event above the fold's cursor stays until it is counted."""
    async def main():
        async with Database(tmp_path / "gw.db") as db:
            await db.write(_fill)
            await db.write(lambda s: s.conn.execute(
                "UPDATE event_hours_cursor SET upto = 100"))   # as if only 100 were counted
            ret = Retention(db, RetentionPolicy(events_days=30), lambda: NOW)
            ret.fold = _no_fold  # type: ignore[method-assign]
            report = await ret.run_once()
            low = await db.read(lambda s: s.conn.execute("SELECT MIN(id) FROM events").fetchone()[0])
            assert report.deleted["events"] == 100 and low == 101   # the 2,900 others wait
    asyncio.run(main())


async def _no_fold(report=None) -> int:
    return 0


def test_paging_the_hourly_counts_gives_each_row_once_whatever_the_filter(tmp_path):
    """`Store.event_hours_page` (GET /events/hours): pages of 7 rows, counted and raw rows mixed
    (half the events folded), add up to `event_counts` for every filter."""
    async def main():
        async with Database(tmp_path / "gw.db") as db:
            await db.write(_fill)
            await db.write(lambda s: s.conn.execute(
                "INSERT INTO event_hours (device, type, hour, n) SELECT device, type, "
                f"t_gateway / {HOUR_MS} * {HOUR_MS}, COUNT(*) FROM events WHERE id <= 1500 "
                "GROUP BY 1, 2, 3"))
            await db.write(lambda s: s.conn.execute("UPDATE event_hours_cursor SET upto = 1500"))
            before = await db.read(_raw)
            for device, type_ in ((None, None), ("lk-1", None), (None, "tag.placed"),
                                  ("pad-1", "tag.removed")):
                got, after, pages = [], None, 0
                while True:
                    page, after = await db.read(lambda s, a=after, d=device, t=type_: s.event_hours_page(
                        since=0, until=NOW + DAY_MS, device=d, type=t, after=a, limit=7))
                    got += page
                    pages += 1
                    if after is None:
                        break
                assert len(got) == len({(h, d, t) for h, d, t, _ in got})      # no row twice
                assert got == sorted(got)
                want = {k: n for k, n in before.items()
                        if device in (None, k[1]) and type_ in (None, k[2])}
                assert {(h, d, t): n for h, d, t, n in got} == want, (device, type_)
                assert pages == -(-len(want) // 7)   # the last page says it is the last
    asyncio.run(main())


def test_an_upgraded_store_counts_each_event_once(tmp_path):
    """Migration 21 on a store of schema v20, whose `event_hours` held only the pruned events'
    counts: the fold starts at 0 and counts the raw events still kept, so the old counts and the
    raw events add up, none twice and none lost."""
    from gateway.storage.store import connect, migrate
    conn = connect(tmp_path / "gw.db")
    migrate(conn, upto=20)
    store = Store(conn)
    _fill(store)
    old_hour = OLD - 10 * DAY_MS     # what v20's retention had pruned and counted
    conn.execute("INSERT INTO event_hours (device, type, hour, n) VALUES "
                 "('pad-1', 'tag.placed', ?, 5), ('lk-1', 'door.opened', ?, 2)",
                 (old_hour, old_hour + HOUR_MS))
    raw = _raw(store)
    migrate(conn)
    conn.close()

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            assert await db.read(Store.hours_upto) == 0
            expect = raw + Counter({(old_hour, "pad-1", "tag.placed"): 5,
                                    (old_hour + HOUR_MS, "lk-1", "door.opened"): 2})
            for _ in range(2):   # before the fold (all raw) and after it (all counted)
                counts = await db.read(lambda s: s.event_counts(since=0, until=NOW + DAY_MS))
                assert Counter({(h, d, t): n for h, d, t, n in counts}) == expect
                await Retention(db, RetentionPolicy(), lambda: NOW).fold()
            assert await db.read(_rolled) == expect
    asyncio.run(main())


def test_a_fold_between_the_two_reads_of_a_page_loses_nothing(tmp_path, monkeypatch):
    """A page reads the counted rows, then the raw events above the cursor. A fold the writer
    commits in between moves events from one side to the other: without one snapshot for both
    reads they were read on neither side (lost). The fold is made to commit exactly there."""
    from gateway.storage.retention import fold_batch
    from gateway.storage.store import connect, migrate
    path = tmp_path / "gw.db"
    writer = Store(connect(path))
    migrate(writer.conn)
    _fill(writer)
    expect = _raw(writer)
    reader = Store(connect(path))
    real = Store.hours_upto

    def upto_after_a_fold(self):
        if self is reader:
            fold_batch(writer, 1_000_000)       # another connection commits meanwhile
        return real(self)
    monkeypatch.setattr(Store, "hours_upto", upto_after_a_fold)
    counts = reader.event_counts(since=0, until=NOW + DAY_MS)
    assert Counter({(h, d, t): n for h, d, t, n in counts}) == expect
    assert real(writer) > 0                     # the fold did happen in between
