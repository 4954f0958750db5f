"""Door counters: two IR break beams across the entrance count people in and out
(docs/door-counter.md)."""
from __future__ import annotations

from typing import Any

from gateway.kinds.base import AlertRule, ConfigKey, DeviceKind, KindContext, RetentionRule, non_negative


def _build(ctx: KindContext) -> Any:
    from gateway.kinds.door_counter.service import DoorCounterService
    return DoorCounterService(ctx.db, clock=ctx.clock)


def _router(doors: Any) -> Any:
    from gateway.kinds.door_counter.api import router
    return router(doors)


def _entries(store: Any, cursor: int, limit: int) -> tuple[list[tuple[str, int, int]], int]:
    from gateway.kinds.door_counter.service import entries_tx
    return entries_tx(store, cursor, limit)


# the kind's own tables (gateway/storage/store.py migrate_kind: versioned per kind, appended here)
MIGRATIONS = (
    # 1: per-minute counts, each counter's live view and the service's event cursor
    """
    CREATE TABLE IF NOT EXISTS door_counts (
        device    TEXT NOT NULL,
        minute    INTEGER NOT NULL,            -- unix ms of the minute's start
        entries   INTEGER NOT NULL,
        exits     INTEGER NOT NULL,
        oos_ms    INTEGER NOT NULL,            -- ms out of service (a stuck beam)
        occupancy INTEGER NOT NULL,            -- the device's estimate at the minute's last period
        PRIMARY KEY (device, minute)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS door_counters (
        device  TEXT PRIMARY KEY,
        live    TEXT NOT NULL,                 -- JSON (gateway/kinds/door_counter/core.py Live)
        updated INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS door_counter_cursor (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        cursor INTEGER NOT NULL                -- events.id applied up to
    );
    """,
    # 2: `ev`: the service's event cursor when a minute's row last changed (the page that
    #    changed it), so the funnel (DeviceKind.entries) reads the minutes that changed since it
    #    last looked, however old they are (a period replayed after an outage); the minutes
    #    counted before it get the cursor of then, so the funnel takes them too
    """
    ALTER TABLE door_counts ADD COLUMN ev INTEGER NOT NULL DEFAULT 0;
    UPDATE door_counts SET ev = (SELECT COALESCE(MAX(cursor), 0) FROM door_counter_cursor);
    CREATE INDEX door_counts_by_ev ON door_counts (ev);
    """,
    # 3: retention walks the minutes in time order ([retention] door_counts_days)
    """
    CREATE INDEX door_counts_by_minute ON door_counts (minute);
    """,
)

# retention ([retention] door_counts_days, docs/door-counter.md): a counter's minute this long
# after it (the funnel keeps its own hourly rollups for years, docs/analytics.md); a WITHOUT
# ROWID table, walked by minute (kind migration 3)
RETENTION: tuple[RetentionRule, ...] = (
    RetentionRule("door_counts", "retention_door_counts_days", "minute", "minute < ?",
                  key="device, minute"),
)

def _event_cursor(store: Any) -> int:
    """The events.id the door counters applied up to (retention keeps what is above it)."""
    row = store.conn.execute("SELECT cursor FROM door_counter_cursor WHERE id = 1").fetchone()
    return row[0] if row else 0


KIND = DeviceKind(
    name="doors",
    apps={"door-counter": ("edge.apps.door_counter", "DoorCounter")},
    docs="docs/door-counter.md",
    build=_build,
    settings=("retention_door_counts_days",),
    migrations=MIGRATIONS,
    retention=RETENTION,
    retention_exempt={
        "door_counters": "one row per counter (its live view)",
        "door_counter_cursor": "one row",
    },
    entries=_entries,
    event_cursor=_event_cursor,
    router=_router,
    auth=(
        ("GET", "/door-counters", ("read",)),                   # counts and occupancy
    ),
    config={"retention": {"door_counts_days": ConfigKey("retention_door_counts_days", "float",
                                                        non_negative)}},
    alerts=(
        AlertRule("event", "beam.stuck", "warning", "beam.stuck:{device}:{beam}",
                  "Door counter {device}: beam {beam} blocked for {blocked_ms} ms: it is out of "
                  "service and counts nothing until the beam clears; check for something in the "
                  "beam or a misaligned sensor"),
        AlertRule("event", "beam.cleared", "info", "", "", resolves="beam.stuck:{device}:{beam}"),
    ),
)
