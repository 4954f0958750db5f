"""Retention: what the gateway keeps, for how long, and how it deletes the rest (issue 17).

One rule per table (`RetentionPolicy`, the `[retention]` section of the config file,
docs/configuration.md), each an age in days (0: kept forever):

* `events`: `t_gateway` older than `events_days`; never an event not yet counted into the
  hourly counts `event_hours` (device, type, UTC hour; `fold_batch` counts every event as it
  comes, a pass every `FOLD_S`, and each pruning pass first catches up), which are kept for
  years (`Store.event_counts`, `GET /events/hours`); never an event above its epoch's ack
  watermark (`acks.upto`), nor the newest event (highest seq) of a (device, epoch) (the
  journal checks compare a birth with it: `Store.max_seq`), nor one a device kind has yet to
  apply (`floors`: the kinds' persisted cursors, `DeviceKind.event_cursor`);
* `commands` (their outcomes with them): final, `updated` older than `commands_days`;
  never a queued, sent or accepted command;
* `audit`: `t` older than `audit_days`;
* `alerts`: resolved, `resolved_at` older than `alerts_days`; never an open or acked one;
* `webhook_deliveries`: delivered, `delivered_at` older than `webhook_days`; never pending;
* `event_hours` (the hourly rollup): `hour` older than `event_hours_days` (two years by
  default: kept far longer than the raw events it counts);
* the rules of the device kinds (`DeviceKind.retention`: each kind names its own history
  tables, their columns and the `[retention]` key of their age, gateway/kinds/*/__init__.py)
  and of the endless aisle (`gateway.aisle.RETENTION`), handed over by `gateway/app.py` with
  their ages: this module knows no kind's table;
* `chain_outbox`: never (its rows leave when the central broker PUBACKs them);
* `stream`: by count (`[database] stream_keep`, gateway/app.py), not here.

Pruning goes through the single writer in small batches: each batch looks at the next
`batch_rows` rows in rowid order (a window: its scan is bounded whatever the rules keep),
deletes the ones its rule allows, and commits; the task yields to the event loop between
batches, so ingest and command writes queued meanwhile run between two batches. A table's
rowids follow its insert time, so the walk stops at the first row younger than the cutoff.
The longest writer hold (statement + COMMIT) is measured and reported.

Space: a database created by this gateway is in `auto_vacuum = INCREMENTAL` (set in
`store.connect` before the first table), so after pruning `PRAGMA incremental_vacuum(N)`
returns the free pages to the file system, `vacuum_pages` pages per step, each step a write
of its own. An older database stays `NONE` (SQLite reuses its free pages but the file never
shrinks) until `phygital db vacuum` rewrites it once with the gateway stopped (see
`gateway/storage/db_cli.py` for why not in a migration).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.storage.db import Database
from gateway.storage.store import FINAL_STATUSES, HOUR_MS, Store

log = logging.getLogger("gateway.retention")

DAY_MS = 86_400_000
FOLD_ROWS = 2000   # events counted into event_hours per transaction (one hold of the writer)
FOLD_S = 60.0      # a fold this often: a read of the hourly counts adds at most ~a minute of raw

#: a device kind's persisted event cursor: one events.id for all its devices, or one per device
#: id (a device without an entry: 0). Events of its devices above it are not applied yet.
Cursor = Callable[[Store], int | Mapping[str, int]]
#: the lowest events.id that must stay (None: no constraint)
Floor = Callable[[Store], int | None]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Ages in days (0: keep forever); see docs/configuration.md `[retention]`."""
    events_days: float = 30.0
    commands_days: float = 90.0
    audit_days: float = 365.0
    alerts_days: float = 90.0
    webhook_days: float = 30.0
    event_hours_days: float = 730.0
    batch_rows: int = 500           # rows looked at per transaction
    vacuum_pages: int = 500         # pages returned per incremental_vacuum step (4 KiB each)
    interval_s: float = 3600.0      # a pass this often (the first one a minute after start)


@dataclass(frozen=True, slots=True)
class Rule:
    """What may go from one table, and from when. A core rule's `days` names a field of
    `RetentionPolicy`; a kind's (`DeviceKind.retention`) or the aisle's names the GatewayConfig
    field of its `[retention]` key, whose value `gateway/app.py` hands to `Retention` with it."""
    table: str
    days: str
    order: str       # a column that grows with the walk's key (insert time): the walk's stop
    delete: str      # the WHERE clause of what may go, with `?` for the cutoff
    key: str | None = None
    """None: the walk goes in rowid order. A WITHOUT ROWID table names its primary key columns
    ("device, type, hour"): each batch takes the oldest `batch_rows` rows by `order` (indexed)
    that `delete` allows."""
    commands: bool = False
    """The table is in the command file (`Database.commands`), pruned through its writer."""


# `events`: a seq above the ack watermark is kept (not settled); so is the newest seq of each
# (device, epoch) (an index seek on UNIQUE (device, epoch, seq)); gateway-made events (seq
# NULL: journal.overflow, journal.rollback) go by age
_EVENTS_DELETE = (
    "t_gateway < ? AND id < ? AND (seq IS NULL OR ("
    "seq <= (SELECT a.upto FROM acks a WHERE a.device = events.device AND a.epoch = events.epoch)"
    " AND seq < (SELECT MAX(m.seq) FROM events m WHERE m.device = events.device"
    " AND m.epoch = events.epoch)))")
_FINAL = ",".join(f"'{s}'" for s in FINAL_STATUSES)
RULES: tuple[Rule, ...] = (
    Rule("events", "events_days", "t_gateway", _EVENTS_DELETE),
    Rule("commands", "commands_days", "created", f"status IN ({_FINAL}) AND updated < ?",
         commands=True),
    Rule("audit", "audit_days", "t", "t < ?"),
    Rule("alerts", "alerts_days", "created", "state = 'resolved' AND resolved_at < ?"),
    Rule("webhook_deliveries", "webhook_days", "created",
         "status = 'delivered' AND delivered_at < ?"),
    # the hourly rollup of the events above, by its hour (index event_hours_by_hour)
    Rule("event_hours", "event_hours_days", "hour", "hour < ?", key="device, type, hour"),
)


@dataclass(slots=True)
class BatchResult:
    deleted: int
    last: int        # the window's last rowid (the next batch starts after it)
    done: bool       # the walk reached rows younger than the cutoff, or the table's end
    hold_s: float    # the writer's time on this batch, COMMIT included


@dataclass(slots=True)
class RetentionReport:
    deleted: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    fold_batches: int = 0    # event_hours catching up first (their holds in longest_hold_s)
    longest_hold_s: float = 0.0
    vacuum_steps: int = 0
    pages_freed: int = 0
    longest_vacuum_s: float = 0.0


def prune_batch(store: Store, rule: Rule, cutoff: int, after: int, limit: int,
                floor: int | None = None) -> BatchResult:
    """One transaction: the `limit` rows of `rule.table` after rowid `after`, up to the first
    one at or past `cutoff` (by `rule.order`); delete those `rule.delete` allows."""
    t0 = time.perf_counter()
    if rule.key is not None:
        return _prune_keyed(store, rule, cutoff, limit, t0)
    with store.transaction():
        window = store.conn.execute(
            f"SELECT rowid, {rule.order} FROM {rule.table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (after, limit)).fetchall()
        hi, done = after, len(window) < limit
        for rowid, at in window:
            if at is not None and at >= cutoff:
                done = True
                break
            hi = rowid
        deleted = 0
        if hi > after:
            args: tuple[int, ...] = (after, hi, cutoff)
            if rule.table == "events":  # below the floor: counted in event_hours, applied
                args += (floor if floor is not None else 1 << 62,)
            deleted = store.conn.execute(
                f"DELETE FROM {rule.table} WHERE rowid > ? AND rowid <= ? AND {rule.delete}",
                args).rowcount
    return BatchResult(deleted, hi, done, time.perf_counter() - t0)


def _prune_keyed(store: Store, rule: Rule, cutoff: int, limit: int, t0: float) -> BatchResult:
    """A WITHOUT ROWID table: the oldest `limit` rows by `rule.order` that `rule.delete` allows
    (an index range from the start: what went before is gone)."""
    assert rule.key is not None
    with store.transaction():
        deleted = store.conn.execute(
            f"DELETE FROM {rule.table} WHERE ({rule.key}) IN (SELECT {rule.key} FROM {rule.table} "
            f"WHERE {rule.order} < ? AND {rule.delete} ORDER BY {rule.order} LIMIT ?)",
            (cutoff, cutoff, limit)).rowcount
    return BatchResult(deleted, 0, deleted < limit, time.perf_counter() - t0)


def event_floor(store: Store, floors: Sequence[Floor]) -> int | None:
    found = [f for f in (floor(store) for floor in floors) if f is not None]
    return min(found) if found else None


def kind_floor(store: Store, device_kinds: Sequence[str], cursor: Cursor) -> int | None:
    """The first event of a device of `device_kinds` above the kind's cursor (None: none),
    one index seek per device (events_by_device)."""
    cur = cursor(store)
    marks = ",".join("?" * len(device_kinds))
    low: int | None = None
    for (dev,) in store.conn.execute(f"SELECT id FROM devices WHERE kind IN ({marks})",
                                     tuple(device_kinds)).fetchall():
        after = cur if isinstance(cur, int) else cur.get(dev, 0)
        row = store.conn.execute("SELECT MIN(id) FROM events WHERE device = ? AND id > ?",
                                 (dev, after)).fetchone()
        if row[0] is not None and (low is None or row[0] < low):
            low = int(row[0])
    return low


def _tables(store: Store) -> set[str]:
    return {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _floor_tx(store: Store, floors: Sequence[Floor]) -> int:
    """The lowest events.id that must stay: above what `event_hours` counts (`fold_batch`), and
    the kinds' floors."""
    counted = store.hours_upto() + 1
    kinds = event_floor(store, floors)
    return counted if kinds is None else min(kinds, counted)


def fold_batch(store: Store, limit: int) -> tuple[int, bool, float]:
    """One transaction: count the next `limit` events above `hours_upto` into `event_hours`
    (per device, type and UTC hour) and move the cursor past them. Returns (ids passed,
    caught up, the writer's time on it with COMMIT). AUTOINCREMENT ids are never reused and
    every id up to MAX(id) is committed (this runs on the single writer), so no event is
    counted twice or skipped."""
    t0 = time.perf_counter()
    with store.transaction():
        upto = store.hours_upto()
        row = store.conn.execute("SELECT id FROM events WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?",
                                 (upto, limit - 1)).fetchone()
        hi = int(row[0]) if row is not None else \
            int(store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
        if hi <= upto:
            return 0, True, time.perf_counter() - t0
        store.conn.execute(
            "INSERT INTO event_hours (device, type, hour, n) "
            f"SELECT device, type, t_gateway / {HOUR_MS} * {HOUR_MS}, COUNT(*) FROM events "
            "WHERE id > ? AND id <= ? GROUP BY 1, 2, 3 ON CONFLICT (device, type, hour) "
            "DO UPDATE SET n = n + excluded.n", (upto, hi))
        store.conn.execute("UPDATE event_hours_cursor SET upto = ? WHERE id = 1", (hi,))
    return hi - upto, row is None, time.perf_counter() - t0


def vacuum_step(store: Store, pages: int) -> tuple[int, float]:
    """`PRAGMA incremental_vacuum(pages)` (a no-op unless auto_vacuum is INCREMENTAL): the pages
    it returned to the file system and the time it held the writer."""
    t0 = time.perf_counter()
    before = int(store.conn.execute("PRAGMA freelist_count").fetchone()[0])
    # the pragma frees one page per step of its statement, and Python's execute() steps a
    # statement without result rows once: executescript (sqlite3_exec) runs it to the end
    store.conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
    after = int(store.conn.execute("PRAGMA freelist_count").fetchone()[0])
    return before - after, time.perf_counter() - t0


def auto_vacuum_mode(store: Store) -> int:
    """0 NONE, 1 FULL, 2 INCREMENTAL."""
    return int(store.conn.execute("PRAGMA auto_vacuum").fetchone()[0])


class Retention:
    """Runs the policy through the database's writer, a pass every `policy.interval_s`."""

    def __init__(self, db: Database, policy: RetentionPolicy, clock: Callable[[], int],
                 floors: Sequence[Floor] = (), rules: Sequence[tuple[Rule, float]] = ()) -> None:
        """`rules`: the rules of the device kinds (`DeviceKind.retention`) and of the aisle, each
        with its age in days (0: kept forever), applied after the core `RULES` in that order."""
        self.db = db
        self.policy = policy
        self.rules: tuple[tuple[Rule, float], ...] = \
            tuple((r, float(getattr(policy, r.days))) for r in RULES) + tuple(rules)
        self.clock = clock
        self.floors = tuple(floors)
        self.last: RetentionReport | None = None
        self._hinted = False

    async def fold(self, report: RetentionReport | None = None) -> int:
        """Count every event not counted yet into `event_hours`, `FOLD_ROWS` a transaction,
        yielding between them (the writer's queue runs in between). Returns the batches; with
        a `report`, their holds of the writer count in its `longest_hold_s`."""
        batches = 0
        while True:
            _, done, held = await self.db.write(fold_batch, FOLD_ROWS)
            batches += 1
            if report is not None:
                report.fold_batches += 1
                report.longest_hold_s = max(report.longest_hold_s, held)
            if done:
                return batches
            await asyncio.sleep(0)

    async def run_folds(self) -> None:
        """The hourly counts follow the events: a fold every `FOLD_S` (forever; cancel)."""
        while True:
            try:
                await self.fold()
            except Exception:
                log.exception("hourly counts fold failed (retried in %.0f s)", FOLD_S)
            await asyncio.sleep(FOLD_S)

    async def run(self) -> None:
        await asyncio.sleep(min(60.0, self.policy.interval_s))
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("retention pass failed (retried at the next pass)")
            await asyncio.sleep(self.policy.interval_s)

    async def run_once(self) -> RetentionReport:
        report = RetentionReport()
        now = self.clock()
        p = self.policy
        tables = await self.db.read(_tables)
        cdb = self.db.commands
        ctables = await cdb.read(_tables) if cdb is not None else set()
        await self.fold(report)   # an event is pruned only once counted in event_hours
        for rule, days in self.rules:
            db = cdb if rule.commands else self.db
            if days <= 0 or db is None or rule.table not in (ctables if rule.commands else tables):
                continue
            cutoff = now - int(days * DAY_MS)
            floor = await self.db.read(_floor_tx, self.floors) if rule.table == "events" else None
            after, total = 0, 0
            while True:
                b = await db.write(prune_batch, rule, cutoff, after, p.batch_rows, floor)
                report.batches += 1
                report.longest_hold_s = max(report.longest_hold_s, b.hold_s)
                total += b.deleted
                after = b.last
                if b.done:
                    break
                await asyncio.sleep(0)  # the writer's queue runs between two batches
            report.deleted[rule.table] = total
        if sum(report.deleted.values()):
            await self.vacuum(report)
        if cdb is not None and any(report.deleted.get(r.table) for r, _ in self.rules
                                   if r.commands):
            await self.vacuum(report, cdb)
        self.last = report
        if sum(report.deleted.values()):
            log.info("retention pruned %s batches=%d longest_hold_ms=%.1f pages_freed=%d",
                     " ".join(f"{t}={n}" for t, n in report.deleted.items() if n),
                     report.batches, report.longest_hold_s * 1000, report.pages_freed)
        return report

    async def vacuum(self, report: RetentionReport, db: Database | None = None) -> None:
        """Return the freed pages of `db` (the gateway's file by default) to the file system."""
        db = self.db if db is None else db
        if await db.read(auto_vacuum_mode) != 2:
            if not self._hinted:
                self._hinted = True
                log.warning("database is not in incremental auto-vacuum: pruned space is reused "
                            "but the file does not shrink; stop the gateway and run `phygital db "
                            "vacuum --db %s` once to convert it", self.db.path)
            return
        while True:
            freed, held = await db.write(vacuum_step, self.policy.vacuum_pages)
            report.vacuum_steps += 1
            report.pages_freed += freed
            report.longest_vacuum_s = max(report.longest_vacuum_s, held)
            if freed < self.policy.vacuum_pages:
                return
            await asyncio.sleep(0)
