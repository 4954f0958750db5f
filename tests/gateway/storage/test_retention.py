"""Retention (gateway/storage/retention.py, issue 17): each rule prunes what is older than its
window and keeps what is younger, and never what is not settled (events above the ack
watermark or not yet applied by a kind, the newest event of an epoch, pending commands, open
alerts, pending webhook deliveries, the chain outbox); pruning goes in batches with the writer
free between them; incremental auto-vacuum gives the space back. A scripted clock, no sleeps."""
import asyncio
import sqlite3

from gateway.aisle import RETENTION as AISLE_RETENTION
from gateway.app import GatewayConfig
from gateway.config_file import ConfigError, parse
from gateway.kinds.registry import retention_rules
from gateway.storage import retention
from gateway.storage.db import Database
from gateway.storage.retention import DAY_MS, HOUR_MS, Retention, RetentionPolicy, kind_floor
from gateway.storage.store import COMMAND_SPLIT, Store, connect, migrate

NOW = 1_000 * DAY_MS            # the scripted clock: day 1000
OLD = NOW - 400 * DAY_MS        # older than every default window
RECENT = NOW - 1 * DAY_MS


def run(coro):
    return asyncio.run(coro)


def _device(store: Store, dev: str, kind: str = "sample-pad", epoch: str = "e1") -> None:
    store.upsert_device(id=dev, kind=kind, fw="1", caps=[], cfg="c", session=1, epoch=epoch,
                        boot=1, reset=None, online=True, now=OLD)


def _events(store: Store, dev: str, seqs, t: int, epoch: str = "e1", body=None) -> list[int]:
    with store.transaction():
        return [store.insert_event(dev, epoch, s, "tag.placed", t, t, body or {"n": s}) for s in seqs]


def _seqs(store: Store, dev: str) -> list[int]:
    return [r[0] for r in store.conn.execute("SELECT seq FROM events WHERE device = ? ORDER BY seq",
                                             (dev,))]


KIND_DAYS = ("fitting_days", "lockers_days", "aisle_days", "door_counts_days")


def _rules(**days):
    """As gateway/app.py hands them over: each kind's rules (DeviceKind.retention) and the
    aisle's, with the age of their [retention] key (GatewayConfig's default unless given)."""
    cfg = GatewayConfig(**{f"retention_{k}": v for k, v in days.items()})
    return [(r, float(getattr(cfg, r.days))) for r in (*retention_rules(), *AISLE_RETENTION)]


async def _open(tmp_path, fill, **policy):
    db = Database(tmp_path / "gw.db")
    await db.__aenter__()
    await db.write(fill)
    if fill is _fill_rest:  # its commands, in the command file
        assert db.commands is not None
        await db.commands.write(_fill_commands)
    floors = policy.pop("floors", ())
    rules = _rules(**{k: policy.pop(k) for k in KIND_DAYS if k in policy})
    return db, Retention(db, RetentionPolicy(**policy), lambda: NOW, floors=floors, rules=rules)


def test_old_settled_events_go_recent_and_unsettled_stay(tmp_path):
    def fill(store):
        for dev in ("pad-1", "pad-2", "pad-3"):
            _device(store, dev)
        _events(store, "pad-1", range(1, 11), OLD)
        store.set_watermark("pad-1", "e1", 8)       # 9 and 10 are not settled yet
        _events(store, "pad-2", range(1, 6), OLD)
        store.set_watermark("pad-2", "e1", 5)       # all settled: 5 is the epoch's newest
        with store.transaction():                   # a gateway-made event (seq NULL), old
            store.insert_event("pad-1", "e1", None, "journal.overflow", OLD, OLD, {"lost": 1})
        _events(store, "pad-3", range(1, 4), RECENT)
        store.set_watermark("pad-3", "e1", 3)

    async def main():
        db, ret = await _open(tmp_path, fill)
        try:
            report = await ret.run_once()
            return report, await db.read(_seqs, "pad-1"), await db.read(_seqs, "pad-2"), \
                await db.read(_seqs, "pad-3"), await db.read(
                    lambda s: s.conn.execute("SELECT COUNT(*) FROM events WHERE seq IS NULL")
                    .fetchone()[0])
        finally:
            await db.close()

    report, pad1, pad2, pad3, made = run(main())
    assert pad1 == [9, 10]          # 1..8 settled and old: gone; above the watermark: kept
    assert pad2 == [5]              # the epoch's newest stays (Store.max_seq at the next birth)
    assert pad3 == [1, 2, 3]        # younger than events_days
    assert made == 0
    assert report.deleted["events"] == 8 + 4 + 1


def test_an_event_a_kind_has_not_applied_is_kept(tmp_path):
    """The kind's persisted cursor (DeviceKind.event_cursor) is below the old events of its
    device: they stay until it applied them."""
    ids = {}

    def fill(store):
        _device(store, "lk-1", kind="locker-bank")
        _device(store, "pad-1")
        _events(store, "pad-1", range(1, 7), OLD)   # below the bank's first unapplied event
        store.set_watermark("pad-1", "e1", 6)
        ids["lk"] = _events(store, "lk-1", range(1, 7), OLD)
        store.set_watermark("lk-1", "e1", 6)
        _events(store, "pad-1", range(7, 9), OLD)   # above it: the floor is one events.id
        store.set_watermark("pad-1", "e1", 8)

    cursor = {}

    def floor(store):
        return kind_floor(store, ("locker-bank",), lambda s: cursor)

    async def main():
        db, ret = await _open(tmp_path, fill, floors=[floor])
        try:
            cursor["lk-1"] = ids["lk"][2]           # the bank applied seqs 1..3
            await ret.run_once()
            return await db.read(_seqs, "lk-1"), await db.read(_seqs, "pad-1")
        finally:
            await db.close()

    lk, pad = run(main())
    assert lk == [4, 5, 6]
    assert pad == [7, 8]  # below the floor another device's old events go, above it they stay


def _fill_commands(store: Store) -> None:
    """The command file's part of `_fill_rest`."""
    rows = [("c-old-done", "done", OLD, OLD), ("c-old-expired", "expired", OLD, OLD),
            ("c-old-queued", "queued", OLD, OLD), ("c-old-sent", "sent", OLD, OLD),
            ("c-new-done", "done", OLD, RECENT)]      # created long ago, final only yesterday
    for cid, status, created, updated in rows:
        store.conn.execute(
            "INSERT INTO commands (id, device, name, args, idem_key, status, deadline, created, "
            "updated) VALUES (?, 'pad-1', 'blink', '{}', ?, ?, 0, ?, ?)",
            (cid, cid, status, created, updated))


def _fill_rest(store: Store) -> None:
    _device(store, "pad-1")
    for key, state, resolved in (("a-old-resolved", "resolved", OLD), ("a-old-open", "open", None),
                                 ("a-old-acked", "acked", None), ("a-new-resolved", "resolved", RECENT)):
        store.conn.execute(
            "INSERT INTO alerts (key, severity, device, type, text, data, state, count, created, "
            "last, resolved_at, source) VALUES (?, 'warning', 'pad-1', 't', 'x', '{}', ?, 1, ?, ?, ?, 1)",
            (key, state, OLD, OLD, resolved))
    for t in (OLD, RECENT):
        store.conn.execute("INSERT INTO audit (t, who, method, path, status) "
                           "VALUES (?, 'admin', 'GET', '/devices', 200)", (t,))
    store.conn.execute("INSERT INTO webhook_subscriptions (id, url, secret, events, created) "
                       "VALUES ('wh-1', 'http://pos.local/hook', 's', '[\"*\"]', 0)")
    for status, delivered in (("delivered", OLD), ("pending", None), ("delivered", RECENT)):
        store.conn.execute(
            "INSERT INTO webhook_deliveries (sub, stream_id, type, data, created, status, next_at, "
            "delivered_at) VALUES ('wh-1', 1, 't', '{}', ?, ?, 0, ?)", (OLD, status, delivered))
    store.conn.execute("INSERT INTO chain_outbox (stream_id, topic, type, data, created) "
                       "VALUES (1, 'chain/1/s/event', 'event', '{}', ?)", (OLD,))


def test_commands_alerts_audit_and_deliveries_each_by_their_rule(tmp_path):
    def q(sql):
        return lambda s: [tuple(r) for r in s.conn.execute(sql)]

    async def main():
        db, ret = await _open(tmp_path, _fill_rest)
        try:
            await ret.run_once()
            return (await db.read(q("SELECT id FROM commands ORDER BY id")),
                    await db.read(q("SELECT key FROM alerts ORDER BY key")),
                    await db.read(q("SELECT t FROM audit")),
                    await db.read(q("SELECT status, delivered_at FROM webhook_deliveries ORDER BY id")),
                    await db.read(q("SELECT COUNT(*) FROM chain_outbox")),
                    await db.read(Store.count_commands),
                    await db.read(q("SELECT status, COUNT(*) FROM commands GROUP BY status")))
        finally:
            await db.close()

    commands, alerts, audit, deliveries, outbox, counts, grouped = run(main())
    assert commands == [("c-new-done",), ("c-old-queued",), ("c-old-sent",)]
    assert alerts == [("a-new-resolved",), ("a-old-acked",), ("a-old-open",)]
    assert audit == [(RECENT,)]                     # 400 days > audit_days (365) > 1 day
    assert deliveries == [("pending", None), ("delivered", RECENT)]
    assert outbox == [(1,)]                         # not PUBACKed: never pruned
    assert counts == dict(grouped)                  # the counts the triggers keep agree


def test_zero_days_keeps_forever(tmp_path):
    async def main():
        db, ret = await _open(tmp_path, _fill_rest, commands_days=0, alerts_days=0, audit_days=0,
                              webhook_days=0)
        try:
            report = await ret.run_once()
            return report, await db.read(lambda s: s.conn.execute(
                "SELECT COUNT(*) FROM commands").fetchone()[0])
        finally:
            await db.close()

    report, commands = run(main())
    assert commands == 5 and sum(report.deleted.values()) == 0


def test_batches_respect_the_size_and_let_other_writes_in_between(tmp_path, monkeypatch):
    """50 old events, 7 rows a batch: no batch deletes more than 7, and a write submitted while
    the pass runs commits before the pass ends (the writer is not held for the whole pass)."""
    def fill(store):
        _device(store, "pad-1")
        _events(store, "pad-1", range(1, 52), OLD)
        store.set_watermark("pad-1", "e1", 51)

    order: list[str] = []
    real = retention.prune_batch

    def counted(store, rule, *args):
        b = real(store, rule, *args)
        if rule.table == "events":
            order.append(f"batch:{b.deleted}")
        return b

    async def main():
        db, ret = await _open(tmp_path, fill, batch_rows=7)
        monkeypatch.setattr(retention, "prune_batch", counted)
        try:
            async def other():
                while not order:              # once the pass has started
                    await asyncio.sleep(0)
                await db.write(lambda s: order.append("other"))
            task = asyncio.create_task(other())
            report = await ret.run_once()
            await task
            return report
        finally:
            await db.close()

    report = run(main())
    batches = [int(o.split(":")[1]) for o in order if o.startswith("batch:")]
    assert report.deleted["events"] == sum(batches) == 50
    assert max(batches) <= 7 and len(batches) >= 8
    assert order.index("other") < len(order) - 1, order   # in between, not after the last batch
    assert report.longest_hold_s > 0


def _big_fill(store):
    _device(store, "pad-1")
    for start in range(1, 4001, 500):
        _events(store, "pad-1", range(start, start + 500), OLD, body={"pad": "x" * 600})
    store.set_watermark("pad-1", "e1", 4000)
    store.conn.execute("DELETE FROM stream")  # [database] stream_keep prunes the stream by count


def _size(path):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size


def test_incremental_vacuum_gives_the_space_back(tmp_path):
    async def main():
        db, ret = await _open(tmp_path, _big_fill)
        try:
            before = _size(tmp_path / "gw.db")
            report = await ret.run_once()
            freelist = await db.read(lambda s: s.conn.execute("PRAGMA freelist_count").fetchone()[0])
            return before, report, freelist
        finally:
            await db.close()

    before, report, freelist = run(main())
    after = _size(tmp_path / "gw.db")
    assert report.deleted["events"] == 3999
    assert report.pages_freed > 500 and freelist == 0
    assert after < before / 3, (before, after)


def test_an_old_database_keeps_its_size_until_db_vacuum(tmp_path):
    """A file made before incremental auto-vacuum: pruned pages are reused, the file does not
    shrink; `phygital db vacuum` converts it once."""
    from gateway.storage.db_cli import vacuum
    path = tmp_path / "gw.db"
    conn = sqlite3.connect(path, isolation_level=None)  # as an older gateway created it
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    conn = connect(path)
    conn.execute("PRAGMA auto_vacuum = NONE")  # connect() asks for incremental: undo that
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()

    async def main():
        db, ret = await _open(tmp_path, _big_fill)
        try:
            await ret.run_once()
            return await db.read(lambda s: s.conn.execute("PRAGMA freelist_count").fetchone()[0])
        finally:
            await db.close()

    free = run(main())
    assert free > 500                         # pages free inside the file, which kept them
    kept = _size(path)
    r = vacuum(path)
    assert r["auto_vacuum"] == "incremental"
    assert _size(path) < kept / 3, (kept, _size(path))


def test_migration_16_counts_the_commands_an_upgraded_store_has(tmp_path):
    conn = connect(tmp_path / "gw.db")
    migrate(conn, upto=15)
    store = Store(conn)
    _device(store, "pad-1")
    for i, status in enumerate(("done", "done", "queued", "expired")):
        conn.execute("INSERT INTO commands (id, device, name, args, idem_key, status, deadline, "
                     "created, updated) VALUES (?, 'pad-1', 'b', '{}', ?, ?, 0, 0, 0)",
                     (f"c{i}", f"k{i}", status))
    migrate(conn, upto=COMMAND_SPLIT - 1)  # (v22 moves them to the command file)
    assert store.count_commands() == {"done": 2, "queued": 1, "expired": 1}
    with store.transaction():
        store.update_command("c2", status="sent", now=1, expect=("queued",))
        conn.execute("DELETE FROM commands WHERE id = 'c0'")
    assert store.count_commands() == {"done": 1, "sent": 1, "expired": 1}


def test_the_retention_section_of_the_config_file():
    cfg = parse({"retention": {"events_days": 7, "commands_days": 0, "batch_rows": 500}}).gateway
    assert (cfg.retention_events_days, cfg.retention_commands_days, cfg.retention_batch_rows) == \
        (7.0, 0.0, 500)
    cfg = parse({"retention": {"fitting_days": 730, "lockers_days": 0, "aisle_days": 30,
                               "event_hours_days": 1000}}).gateway
    assert (cfg.retention_fitting_days, cfg.retention_lockers_days, cfg.retention_aisle_days,
            cfg.retention_event_hours_days) == (730.0, 0.0, 30.0, 1000.0)
    try:
        parse({"retention": {"events_days": -1, "batch_rows": 10**6}})
    except ConfigError as exc:
        assert "[retention] events_days: must be >= 0" in str(exc)
        assert "[retention] batch_rows: must be 1..100000" in str(exc)
    else:
        raise AssertionError("a negative age and a huge batch were accepted")


def _fill_history(store: Store) -> None:
    """The kinds' history tables (their migrations), one row on each side of every rule."""
    from gateway.kinds.fitting_room import MIGRATIONS as FITTING
    from gateway.kinds.locker_bank import MIGRATIONS as LOCKERS
    from gateway.storage.store import migrate_kind
    migrate_kind(store.conn, "fitting", FITTING)
    migrate_kind(store.conn, "lockers", LOCKERS)
    edge = NOW - 365 * DAY_MS      # the default window's edge: at it a row stays, before it goes
    with store.transaction():
        c = store.conn
        for sid, start, end in (("s-old", OLD, OLD + 600_000), ("s-edge", edge - 600_000, edge),
                                ("s-young", RECENT, RECENT + 600_000),
                                ("s-on", OLD, None)):   # started long ago, never ended: stays
            c.execute('INSERT INTO fitting_sessions (id, room, start, "end", data) '
                      "VALUES (?, 'r1', ?, ?, '{}')", (sid, start, end))
            c.execute("INSERT INTO fitting_tryons (session, gtin, start, converted) "
                      "VALUES (?, 'g', ?, 0)", (sid, start))
        for rid, pinned, updated in (("r-old", 0, OLD), ("r-old-open", 1, OLD),
                                     ("r-edge", 0, edge), ("r-young", 0, RECENT)):
            c.execute("INSERT INTO fitting_requests (id, room, state, created, updated, pinned, "
                      "data) VALUES (?, 'r1', 'done', ?, ?, ?, '{}')", (rid, OLD, updated, pinned))
        for receipt, at in (("P-old", OLD), ("P-edge", edge), ("P-young", RECENT)):
            c.execute("INSERT INTO fitting_purchases (receipt, at, data) VALUES (?, ?, '{}')",
                      (receipt, at))
        for n, at in ((1, OLD), (2, edge), (3, RECENT)):
            c.execute("INSERT INTO fitting_footfall (at, entries) VALUES (?, ?)", (at, n))
        for oid, closed in (("o-old", OLD), ("o-edge", edge), ("o-young", RECENT)):
            c.execute("INSERT INTO locker_history (bank, id, state, closed, data) "
                      "VALUES ('lk-1', ?, 'collected', ?, '{}')", (oid, closed))


def _history_left(store: Store) -> dict[str, list]:
    q = {"sessions": "SELECT id FROM fitting_sessions", "tryons": "SELECT session FROM fitting_tryons",
         "requests": "SELECT id FROM fitting_requests", "purchases": "SELECT receipt FROM fitting_purchases",
         "footfall": "SELECT entries FROM fitting_footfall", "lockers": "SELECT id FROM locker_history"}
    return {k: sorted(r[0] for r in store.conn.execute(sql)) for k, sql in q.items()}


def test_the_kinds_history_tables_each_by_their_rule(tmp_path):
    """fitting_days and lockers_days (365 by default): a row older than its window goes, one at
    the window's edge or younger stays, a live session and an unfinished request stay."""
    async def main(**policy):
        db, ret = await _open(tmp_path / str(len(policy)), _fill_history, **policy)
        try:
            report = await ret.run_once()
            return report, await db.read(_history_left)
        finally:
            await db.close()

    (tmp_path / "0").mkdir()
    report, left = run(main())
    assert left == {"sessions": ["s-edge", "s-on", "s-young"], "tryons": ["s-edge", "s-on", "s-young"],
                    "requests": ["r-edge", "r-old-open", "r-young"], "purchases": ["P-edge", "P-young"],
                    "footfall": [2, 3], "lockers": ["o-edge", "o-young"]}
    assert report.deleted["fitting_sessions"] == 1 and report.deleted["locker_history"] == 1
    (tmp_path / "2").mkdir()  # 0 = forever; a shorter window takes the edge rows too
    _, left = run(main(fitting_days=0, lockers_days=300))
    assert left["sessions"] == ["s-edge", "s-old", "s-on", "s-young"] and left["footfall"] == [1, 2, 3]
    assert left["lockers"] == ["o-young"]


def test_a_database_without_the_kinds_tables_is_pruned_all_the_same(tmp_path):
    async def main():
        db, ret = await _open(tmp_path, _fill_rest)
        try:
            return await ret.run_once()
        finally:
            await db.close()

    report = run(main())
    assert "fitting_sessions" not in report.deleted and report.deleted["commands"] == 2


def _fill_aisle(store: Store) -> None:
    """The endless aisle's tables (core migration 19): each request in a state a rule must
    tell apart, old unless its name says otherwise."""
    def request(rid, route, state, updated):
        store.conn.execute(
            "INSERT INTO aisle_requests (id, who, digest, origin, gtin, name, route, state, lang, "
            "created, updated) VALUES (?, 't', 'd', 'pad-1', 'g', 'n', ?, ?, 'en', ?, ?)",
            (rid, route, state, OLD, updated))

    def message(rid, state, attempts_at):
        mid = store.conn.execute(
            "INSERT INTO aisle_outbox (request, channel, masked, state, attempts, next_at, created) "
            "VALUES (?, 'sms', 'x', ?, ?, 0, ?)", (rid, state, len(attempts_at), OLD)).lastrowid
        for n, t in enumerate(attempts_at, 1):
            store.conn.execute("INSERT INTO aisle_deliveries (message, attempt, t, ok) "
                               "VALUES (?, ?, ?, 1)", (mid, n, t))
    with store.transaction():
        request("floor-old", "floor", "open", OLD)            # a floor request: nothing follows it
        request("tube-young", "tube", "open", RECENT)
        request("order-open", "order", "open", OLD)           # the locker flow still follows it
        request("order-done", "order", "closed", OLD)
        message("order-done", "delivered", [OLD, OLD])
        request("order-failed", "order", "closed", OLD)
        message("order-failed", "failed", [OLD, RECENT])      # its last attempt is recent
        request("order-pending", "order", "closed", OLD)
        message("order-pending", "pending", [OLD])            # still being sent: never


def _aisle_left(store: Store) -> dict[str, list]:
    q = {"requests": "SELECT id FROM aisle_requests",
         "messages": "SELECT r.id FROM aisle_outbox o JOIN aisle_requests r ON r.id = o.request",
         "attempts": "SELECT r.id || ':' || d.attempt FROM aisle_deliveries d "
                     "JOIN aisle_outbox o ON o.id = d.message JOIN aisle_requests r ON r.id = o.request"}
    return {k: sorted(r[0] for r in store.conn.execute(sql)) for k, sql in q.items()}


def test_the_aisle_tables_by_aisle_days(tmp_path):
    """aisle_days (90 by default): a request, its message and their delivery log go once old
    and final, children first (the foreign keys hold); an open order, a pending message and
    what hangs on a recent attempt stay."""
    async def main(**policy):
        db, ret = await _open(tmp_path, _fill_aisle, **policy)
        try:
            report = await ret.run_once()
            return report, await db.read(_aisle_left)
        finally:
            await db.close()

    report, left = run(main())
    assert left == {"requests": ["order-failed", "order-open", "order-pending", "tube-young"],
                    "messages": ["order-failed", "order-pending"],
                    "attempts": ["order-failed:2", "order-pending:1"]}
    assert (report.deleted["aisle_requests"], report.deleted["aisle_outbox"],
            report.deleted["aisle_deliveries"]) == (2, 1, 3)


def test_aisle_days_zero_keeps_the_aisle_forever(tmp_path):
    async def main():
        db, ret = await _open(tmp_path, _fill_aisle, aisle_days=0)
        try:
            await ret.run_once()
            return await db.read(_aisle_left)
        finally:
            await db.close()

    left = run(main())
    assert len(left["requests"]) == 6 and len(left["attempts"]) == 5


def _fill_hours(store: Store) -> None:
    """Hourly rollups on each side of event_hours_days (730 by default): far past the raw
    events' 30 days, they stay."""
    with store.transaction():
        for days_ago in (800, 731, 729, 400, 31):
            hour = (NOW - days_ago * DAY_MS) // HOUR_MS * HOUR_MS
            for dev in ("pad-1", "pad-2"):
                store.conn.execute("INSERT INTO event_hours (device, type, hour, n) "
                                   "VALUES (?, 'tag.placed', ?, ?)", (dev, hour, days_ago))


async def _hours_with(path, **policy):
    path.mkdir()
    db, ret = await _open(path, _fill_hours, **policy)
    try:
        report = await ret.run_once()
        return report, await db.read(lambda s: sorted(
            r[0] for r in s.conn.execute("SELECT DISTINCT n FROM event_hours")))
    finally:
        await db.close()


def test_hourly_rollups_by_event_hours_days(tmp_path):
    report, left = run(_hours_with(tmp_path / "a"))
    assert left == [31, 400, 729] and report.deleted["event_hours"] == 4
    # one row a batch: the walk goes on until no row is older than the cutoff
    report, left = run(_hours_with(tmp_path / "b", batch_rows=1, event_hours_days=30))
    assert left == [] and report.deleted["event_hours"] == 10 and report.batches >= 11


def test_the_gateway_hands_every_kinds_and_the_aisles_rules_with_their_configured_age(tmp_path):
    """gateway/app.py: the core rules with the policy's ages, then each kind's and the aisle's
    with the age of their [retention] key (a key set in the config reaches its rule)."""
    from gateway.app import Gateway
    gw = Gateway(GatewayConfig(db_path=tmp_path / "gw.db", retention_fitting_days=200.0,
                               retention_aisle_days=7.0, retention_event_hours_days=1000.0))
    ages = {rule.table: days for rule, days in gw.retention.rules}
    assert ages["fitting_sessions"] == ages["fitting_footfall"] == 200.0
    assert ages["locker_history"] == 365.0 and ages["event_hours"] == 1000.0
    assert ages["aisle_requests"] == ages["aisle_outbox"] == ages["aisle_deliveries"] == 7.0
    assert ages["events"] == 30.0
    order = [rule.table for rule, _ in gw.retention.rules]
    assert order.index("fitting_tryons") < order.index("fitting_sessions")   # child first
    assert order.index("aisle_deliveries") < order.index("aisle_outbox") < order.index("aisle_requests")


def test_the_door_counters_minutes_by_door_counts_days(tmp_path):
    """A WITHOUT ROWID table of a kind (door_counts: device, minute), walked by minute: the
    minutes before the window go, the ones at its edge and after stay, for every counter."""
    from gateway.kinds.door_counter import MIGRATIONS as DOORS
    from gateway.storage.store import migrate_kind
    edge = NOW - 365 * DAY_MS

    def fill(store):
        migrate_kind(store.conn, "doors", DOORS)
        with store.transaction():
            for dev in ("door-1", "door-2"):
                for minute in (OLD, OLD + 60_000, edge - 60_000, edge, RECENT):
                    store.conn.execute(
                        "INSERT INTO door_counts (device, minute, entries, exits, oos_ms, "
                        "occupancy, ev) VALUES (?, ?, 1, 1, 0, 0, 1)", (dev, minute))

    def left(store):
        return sorted(tuple(r) for r in store.conn.execute("SELECT device, minute FROM door_counts"))

    async def main(path, **policy):
        path.mkdir()
        db, ret = await _open(path, fill, **policy)
        try:
            report = await ret.run_once()
            return report, await db.read(left)
        finally:
            await db.close()

    report, rows = run(main(tmp_path / "a", batch_rows=2))
    assert rows == [(d, m) for d in ("door-1", "door-2") for m in (edge, RECENT)]
    assert report.deleted["door_counts"] == 6
    _, rows = run(main(tmp_path / "b", door_counts_days=0))
    assert len(rows) == 10
