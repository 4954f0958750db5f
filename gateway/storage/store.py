"""SQLite persistence: schema, migrations and the queries the gateway needs.

Synchronous on purpose: a `Store` belongs to one thread (see `gateway.storage.db`, which runs the
single writer and one reader each on a thread of their own). Every state change that the
outside world should hear about is also appended to the `stream` table in the same
transaction (a transactional outbox); the items appended in a transaction are handed to
`Store.take_outbox()` after it commits, so live subscribers never see something that was
rolled back and can resume from the table after a disconnect.

Durability: WAL with `synchronous=FULL`. The gateway acknowledges an event to the device
after the commit, and the device then deletes it from its journal, so a committed
transaction must survive power loss, not only a crash of the process. `NORMAL` in WAL mode
survives a process crash but may lose the last commits on power loss: an acknowledged event
would then be gone from both sides. The cost of FULL (one fsync per commit) is paid once
per ingest batch, not once per event.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.http.redact import redact_command

PENDING_STATUSES = ("queued", "sent", "accepted")
FINAL_STATUSES = ("done", "rejected", "failed", "expired")
COMMAND_STATUSES = PENDING_STATUSES + FINAL_STATUSES

MIGRATIONS: tuple[str, ...] = (
    # 1: the walking skeleton
    """
    CREATE TABLE devices (
        id         TEXT PRIMARY KEY,
        kind       TEXT NOT NULL,
        fw         TEXT NOT NULL,
        caps       TEXT NOT NULL,              -- JSON list
        cfg        TEXT NOT NULL,
        session    INTEGER NOT NULL,
        epoch      TEXT NOT NULL,
        boot       INTEGER NOT NULL,
        reset      TEXT,
        online     INTEGER NOT NULL DEFAULT 0,
        last_seen  INTEGER NOT NULL,
        first_seen INTEGER NOT NULL
    );
    CREATE TABLE events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        device    TEXT NOT NULL,
        epoch     TEXT NOT NULL,
        seq       INTEGER,                     -- NULL: made by the gateway (journal.overflow)
        type      TEXT NOT NULL,
        t_device  INTEGER,
        t_gateway INTEGER NOT NULL,
        body      TEXT NOT NULL,               -- JSON object
        UNIQUE (device, epoch, seq)
    );
    CREATE INDEX events_by_type ON events (type, id);
    CREATE INDEX events_by_device ON events (device, id);
    CREATE TABLE acks (
        device TEXT NOT NULL,
        epoch  TEXT NOT NULL,
        upto   INTEGER NOT NULL,               -- every seq <= upto of this epoch is settled
        PRIMARY KEY (device, epoch)
    );
    CREATE TABLE commands (
        id        TEXT PRIMARY KEY,
        device    TEXT NOT NULL,
        name      TEXT NOT NULL,
        args      TEXT NOT NULL,               -- JSON object
        idem_key  TEXT NOT NULL,
        status    TEXT NOT NULL CHECK (status IN
                  ('queued','sent','accepted','done','rejected','failed','expired')),
        reason    TEXT,
        result    TEXT,                        -- JSON object or NULL
        deadline  INTEGER NOT NULL,
        created   INTEGER NOT NULL,
        updated   INTEGER NOT NULL,
        late      INTEGER NOT NULL DEFAULT 0,
        sends     INTEGER NOT NULL DEFAULT 0,
        last_sent INTEGER,
        UNIQUE (device, idem_key)
    );
    CREATE INDEX commands_pending ON commands (status) WHERE status IN ('queued','sent','accepted');
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE TABLE rejections (
        reason TEXT PRIMARY KEY,
        count  INTEGER NOT NULL
    );
    CREATE TABLE samples (
        id          TEXT PRIMARY KEY,
        title       TEXT NOT NULL,
        image       TEXT,
        url         TEXT,
        description TEXT,
        uid         TEXT UNIQUE
    );
    CREATE TABLE stream (
        id    INTEGER PRIMARY KEY AUTOINCREMENT,
        kind  TEXT NOT NULL,                   -- event | device | command
        data  TEXT NOT NULL
    );
    """,
    # 2: remember which version of a samples-file entry was imported, so API edits survive a
    #    restart unless the file's entry itself changed
    """
    ALTER TABLE samples ADD COLUMN seed TEXT;
    """,
    # 3: locker banks: the pure core's state (`LockerBank.to_dict()`, never a plain code) and
    #    the id of the last device event applied to it
    """
    CREATE TABLE lockers (
        bank    TEXT PRIMARY KEY,
        state   TEXT NOT NULL,                 -- JSON: {"bank": to_dict(), "meta": {...}}
        cursor  INTEGER NOT NULL DEFAULT 0,    -- events.id of the last event applied
        updated INTEGER NOT NULL
    );
    """,
    # 4: staff alerts derived from the stream (gateway/devices/alerts.py); the cursor starts
    #    at the stream's end, so an upgraded gateway does not raise alerts for old history
    """
    CREATE TABLE alerts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        key         TEXT NOT NULL,             -- one open (or acked) alert per key
        severity    TEXT NOT NULL,             -- info | warning | critical
        device      TEXT,
        type        TEXT NOT NULL,
        text        TEXT NOT NULL,
        data        TEXT NOT NULL,             -- JSON: the item's fields
        state       TEXT NOT NULL,             -- open | acked | resolved
        count       INTEGER NOT NULL,
        created     INTEGER NOT NULL,
        last        INTEGER NOT NULL,
        acked_by    TEXT,
        acked_at    INTEGER,
        resolved_at INTEGER,
        source      INTEGER NOT NULL           -- stream.id of the item that raised it
    );
    CREATE INDEX alerts_by_key ON alerts (key, state);
    CREATE TABLE alerts_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO alerts_meta (name, value) SELECT 'cursor', COALESCE(MAX(id), 0) FROM stream;
    """,
    # 5 and later: tables that services used to create on start with CREATE TABLE IF NOT
    # EXISTS. A store upgraded from such a gateway already has them without this migration's
    # row, so each keeps IF NOT EXISTS (same columns as before): running it there only records
    # the version (tests/gateway/storage/test_gateway_migrations.py).
    # 5: the tube network's arbiter state and its dispatches (gateway/kinds/tube/service.py)
    """
    CREATE TABLE IF NOT EXISTS tube_state (
        network TEXT PRIMARY KEY,
        state   TEXT NOT NULL,             -- JSON: {"arbiter": to_dict(), "meta": {...}}
        cursor  INTEGER NOT NULL,          -- events.id of the last tube event applied
        updated INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS tube_jobs (
        id      TEXT PRIMARY KEY,
        data    TEXT NOT NULL,             -- JSON: the public dispatch record
        updated INTEGER NOT NULL);
    """,
    # 6: the fitting rooms' state, one row (gateway/kinds/fitting_room/service.py)
    """
    CREATE TABLE IF NOT EXISTS fitting (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        state   TEXT NOT NULL,              -- JSON: FittingRooms.to_dict()
        cursor  INTEGER NOT NULL,           -- events.id of the last event applied
        updated INTEGER NOT NULL);
    """,
    # 7: webhook subscriptions and their delivery outbox (gateway/integrations/webhooks.py)
    """
    CREATE TABLE IF NOT EXISTS webhook_subscriptions (
        id          TEXT PRIMARY KEY,
        url         TEXT NOT NULL,
        secret      TEXT NOT NULL,
        events      TEXT NOT NULL,                 -- JSON list of patterns
        description TEXT,
        created     INTEGER NOT NULL,
        delivered   INTEGER NOT NULL DEFAULT 0,    -- deliveries answered 2xx
        failures    INTEGER NOT NULL DEFAULT 0,    -- failed attempts, all time
        failing     INTEGER NOT NULL DEFAULT 0,    -- failed attempts since the last success
        last_attempt INTEGER,
        last_success INTEGER,
        last_error  TEXT
    );
    CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        sub         TEXT NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
        stream_id   INTEGER NOT NULL,
        type        TEXT NOT NULL,
        data        TEXT NOT NULL,                 -- JSON, as committed with the event
        created     INTEGER NOT NULL,
        status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     INTEGER NOT NULL,
        last_attempt INTEGER,
        last_code   INTEGER,
        last_error  TEXT,
        delivered_at INTEGER
    );
    CREATE INDEX IF NOT EXISTS webhook_pending ON webhook_deliveries (sub, id)
        WHERE status = 'pending';
    """,
    # 8: messages for the chain's central broker, until PUBACKed (gateway/integrations/chain.py)
    """
    CREATE TABLE IF NOT EXISTS chain_outbox (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,   -- the chain message's `seq`
        stream_id INTEGER NOT NULL,
        topic     TEXT NOT NULL,
        type      TEXT NOT NULL,
        data      TEXT NOT NULL,
        created   INTEGER NOT NULL
    );
    """,
    # 9: API tokens (hashed) and the audit log (gateway/http/auth.py)
    """
    CREATE TABLE IF NOT EXISTS api_tokens (
        id      TEXT PRIMARY KEY,
        name    TEXT NOT NULL,
        scopes  TEXT NOT NULL,          -- space separated
        hash    TEXT NOT NULL,          -- sha256 hex of the secret part
        created INTEGER NOT NULL,
        revoked INTEGER
    );
    CREATE TABLE IF NOT EXISTS audit (
        id      INTEGER PRIMARY KEY,
        t       INTEGER NOT NULL,       -- unix ms
        who     TEXT NOT NULL,
        token   TEXT,
        ip      TEXT,
        method  TEXT NOT NULL,
        path    TEXT NOT NULL,
        status  INTEGER NOT NULL,
        outcome TEXT
    );
    """,
    # 10: a webhook subscription may opt in to plain pickup codes (gateway/http/redact.py)
    """
    ALTER TABLE webhook_subscriptions ADD COLUMN include_secrets INTEGER NOT NULL DEFAULT 0;
    """,
    # 11: `final` is final (docs/protocol.md, "Commands"): a device answer that arrives after
    #     `expired` is kept beside it in `late_outcome` (JSON {status, reason, result, at}) and
    #     no longer replaces it. Rows of the old rule (status replaced, late = 1) go back to
    #     the `expired` their callers were told, with the device's answer moved beside it.
    """
    ALTER TABLE commands ADD COLUMN late_outcome TEXT;
    UPDATE commands SET late_outcome = json_object('status', status, 'reason', reason,
                                                   'result', json(result), 'at', updated),
                        status = 'expired', reason = 'timeout', result = NULL
        WHERE late = 1 AND status IN ('done', 'rejected', 'failed');
    """,
    # 12: a journal rolled back (device restored from an older flash copy, docs/protocol.md
    #     "Journal rolled back"). Per (device, epoch): `verified`, the highest seq the device's
    #     current session has shown us (birth `first - 1`, then seqs it sent that we stored or
    #     that matched what we had) — acks never go past it; `mark`, the last events.id at that
    #     birth (a row above it arrived in this session); `sealed`, the first seq of the epoch
    #     we refuse (NULL: open) and `fork`, the epoch the device was told to go on in
    """
    ALTER TABLE acks ADD COLUMN verified INTEGER;
    ALTER TABLE acks ADD COLUMN mark INTEGER;
    ALTER TABLE acks ADD COLUMN sealed INTEGER;
    ALTER TABLE acks ADD COLUMN fork TEXT;
    UPDATE acks SET verified = upto, mark = (SELECT COALESCE(MAX(id), 0) FROM events);
    """,
    # 13: the product a sample stands for (its GTIN in the stock source): the kiosk shows its
    #     price, colours and stock (gateway/kinds/sample_pad/, docs/protocol.md "Sample kiosk")
    """
    ALTER TABLE samples ADD COLUMN gtin TEXT;
    """,
    # 14: store analytics (gateway/analytics/, docs/analytics.md): the store-wide purchase
    #     ledger, entries per (source, minute), and rollups per hour (an_hour, one row per
    #     hour) and per hour and UTC day (`period` 'h' / 'd') for products and devices; an_*
    #     state rows (open pad placements, tube jobs, locker orders, device state) and the
    #     stream cursor, which starts at the stream's end: an upgraded gateway counts from now
    """
    CREATE TABLE purchases (
        receipt  TEXT PRIMARY KEY,
        at       INTEGER NOT NULL,              -- unix ms
        lines    TEXT NOT NULL,                 -- JSON [{gtin, qty, sessions}]
        units    INTEGER NOT NULL,
        source   TEXT NOT NULL,                 -- api | csv | fitting (POST /fitting/purchases)
        recorded INTEGER NOT NULL);
    CREATE INDEX purchases_by_at ON purchases (at);
    CREATE TABLE entries (
        source TEXT NOT NULL,                   -- footfall-api, or a door counter's id
        minute INTEGER NOT NULL,                -- unix ms of the minute
        n      INTEGER NOT NULL,
        PRIMARY KEY (source, minute)) WITHOUT ROWID;
    CREATE TABLE an_hour (
        hour INTEGER PRIMARY KEY,               -- unix ms of the UTC hour
        entries INTEGER NOT NULL DEFAULT 0, placements INTEGER NOT NULL DEFAULT 0,
        pad_lifts INTEGER NOT NULL DEFAULT 0, pad_dwell_ms INTEGER NOT NULL DEFAULT 0,
        sessions INTEGER NOT NULL DEFAULT 0, try_ons INTEGER NOT NULL DEFAULT 0,
        purchases INTEGER NOT NULL DEFAULT 0, units INTEGER NOT NULL DEFAULT 0,
        lk_loaded INTEGER NOT NULL DEFAULT 0, lk_collected INTEGER NOT NULL DEFAULT 0,
        lk_ontime INTEGER NOT NULL DEFAULT 0, lk_expired INTEGER NOT NULL DEFAULT 0,
        lk_dwell_ms INTEGER NOT NULL DEFAULT 0, tube_delivered INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE an_product (
        period TEXT NOT NULL, t INTEGER NOT NULL, product TEXT NOT NULL,
        placed INTEGER NOT NULL DEFAULT 0, pad_dwell_ms INTEGER NOT NULL DEFAULT 0,
        tried INTEGER NOT NULL DEFAULT 0, bought INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (period, t, product)) WITHOUT ROWID;
    CREATE TABLE an_device_time (
        period TEXT NOT NULL, t INTEGER NOT NULL, device TEXT NOT NULL,
        online_ms INTEGER NOT NULL DEFAULT 0, oos_ms INTEGER NOT NULL DEFAULT 0,
        available_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (period, t, device)) WITHOUT ROWID;
    CREATE TABLE an_device (
        device TEXT PRIMARY KEY, kind TEXT NOT NULL,
        since  INTEGER,                          -- start of the open span (unix ms)
        online INTEGER NOT NULL DEFAULT 0,
        alerts TEXT NOT NULL DEFAULT '[]');      -- JSON: ids of its open critical alerts
    CREATE TABLE an_pad (device TEXT PRIMARY KEY, product TEXT NOT NULL);
    CREATE TABLE an_tube (job TEXT PRIMARY KEY, requested INTEGER NOT NULL, delivered INTEGER,
                          ms INTEGER);
    CREATE INDEX an_tube_delivered ON an_tube (delivered) WHERE delivered IS NOT NULL;
    CREATE TABLE an_locker (ord TEXT PRIMARY KEY, loaded INTEGER NOT NULL, collected INTEGER,
                            dwell_ms INTEGER, expired INTEGER);
    CREATE INDEX an_locker_collected ON an_locker (collected) WHERE collected IS NOT NULL;
    CREATE TABLE an_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO an_meta (name, value) SELECT 'cursor', COALESCE(MAX(id), 0) FROM stream;
    """,
    # 15: analytics per product per UTC calendar month (an_product period 'm'): a year's
    #     product figures read 12 rows per product instead of 365; built here from the day rows
    """
    INSERT INTO an_product (period, t, product, placed, pad_dwell_ms, tried, bought)
    SELECT 'm', CAST(strftime('%s', t / 1000, 'unixepoch', 'start of month') AS INTEGER) * 1000,
           product, SUM(placed), SUM(pad_dwell_ms), SUM(tried), SUM(bought)
    FROM an_product WHERE period = 'd' GROUP BY 2, 3;
    """,
    # 16: commands by status, kept by triggers on every insert, status change and delete
    #     (retention included), so `/stats` and `/metrics` read 7 rows instead of counting the
    #     whole commands table on every scrape (issue 17: 206 ms per million commands)
    """
    CREATE TABLE command_counts (
        status TEXT PRIMARY KEY,
        n      INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO command_counts (status, n) SELECT status, COUNT(*) FROM commands GROUP BY status;
    CREATE TRIGGER command_counts_insert AFTER INSERT ON commands BEGIN
        INSERT INTO command_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER command_counts_update AFTER UPDATE OF status ON commands
        WHEN NEW.status IS NOT OLD.status BEGIN
        UPDATE command_counts SET n = n - 1 WHERE status = OLD.status;
        INSERT INTO command_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER command_counts_delete AFTER DELETE ON commands BEGIN
        UPDATE command_counts SET n = n - 1 WHERE status = OLD.status;
    END;
    """,
    # 17: over-the-air updates (gateway/devices/ota_service.py, docs/ota.md): the staged
    #     rollouts (their state machine, gateway/devices/rollout.py, as JSON) and the cursor of
    #     the journaled ota.* events they follow, which starts at the events' end (the bundles
    #     are files next to the database: <db>.firmware/<version>.zip)
    """
    CREATE TABLE fw_rollouts (
        id      TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        status  TEXT NOT NULL,                 -- running | done | halted
        state   TEXT NOT NULL,                 -- JSON: rollout.Rollout
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL);
    CREATE UNIQUE INDEX fw_rollouts_one_running ON fw_rollouts (status) WHERE status = 'running';
    CREATE TABLE fw_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), cursor INTEGER NOT NULL);
    INSERT INTO fw_cursor (id, cursor) SELECT 1, COALESCE(MAX(id), 0) FROM events;
    """,
    # 18: the hours whose funnel figures changed since they were last reported to head office
    #     (gateway/analytics/rollup.py report_hours_tx, docs/chain.md "The chain-wide
    #     funnel"), kept by triggers on every path that writes an_hour (the fold, purchases,
    #     entries; not `INSERT OR IGNORE`: an upsert's conflict clause overrides a trigger's
    #     OR clause in SQLite, and the upsert into an_hour then fails); every hour so far is
    #     pending, so head office gets the store's history
    """
    CREATE TABLE an_hour_dirty (hour INTEGER PRIMARY KEY);
    INSERT INTO an_hour_dirty (hour) SELECT hour FROM an_hour;
    CREATE TRIGGER an_hour_dirty_insert AFTER INSERT ON an_hour BEGIN
        INSERT INTO an_hour_dirty (hour) SELECT NEW.hour
            WHERE NOT EXISTS (SELECT 1 FROM an_hour_dirty WHERE hour = NEW.hour);
    END;
    CREATE TRIGGER an_hour_dirty_update AFTER UPDATE OF entries, placements, pad_lifts,
        pad_dwell_ms, sessions, try_ons, purchases, units ON an_hour BEGIN
        INSERT INTO an_hour_dirty (hour) SELECT NEW.hour
            WHERE NOT EXISTS (SELECT 1 FROM an_hour_dirty WHERE hour = NEW.hour);
    END;
    """,
    # 19: the endless aisle (gateway/aisle/, docs/endless-aisle.md): customers' requests (keyed
    #     by token and idempotency key), the outbox of pickup-code messages (the recipient until
    #     delivery, never the code) and its delivery log, one row per attempt
    """
    CREATE TABLE aisle_requests (
        id        TEXT PRIMARY KEY,            -- sha256(token id, idempotency key)[:16]
        who       TEXT NOT NULL,               -- token id
        digest    TEXT NOT NULL,               -- sha256 of the request body
        origin    TEXT NOT NULL,               -- the screen's device id
        gtin      TEXT NOT NULL,
        name      TEXT NOT NULL,
        size      TEXT,
        colour    TEXT,
        route     TEXT NOT NULL,               -- floor | tube | staff | order
        state     TEXT NOT NULL,
        station   TEXT,
        job       TEXT,                        -- tube dispatch id
        order_id  TEXT,                        -- locker order id
        bank      TEXT,
        source    TEXT,                        -- where the order system may take it from
        lang      TEXT NOT NULL,
        contact_channel TEXT,                  -- sms | email
        contact_to      TEXT,                  -- NULL once the message is delivered
        contact_masked  TEXT,
        created   INTEGER NOT NULL,
        updated   INTEGER NOT NULL);
    CREATE TABLE aisle_outbox (
        id        INTEGER PRIMARY KEY,
        request   TEXT NOT NULL UNIQUE REFERENCES aisle_requests (id),
        channel   TEXT NOT NULL,
        recipient TEXT,                        -- NULL once delivered (or failed for good)
        masked    TEXT NOT NULL,
        ready_id  TEXT,                        -- the locker service's in-memory code handle
        state     TEXT NOT NULL,               -- pending | delivered | failed
        attempts  INTEGER NOT NULL,
        next_at   INTEGER NOT NULL,
        created   INTEGER NOT NULL,
        delivered_at INTEGER,
        last_error TEXT);
    CREATE INDEX aisle_outbox_due ON aisle_outbox (next_at) WHERE state = 'pending';
    CREATE TABLE aisle_deliveries (
        id        INTEGER PRIMARY KEY,
        message   INTEGER NOT NULL REFERENCES aisle_outbox (id),
        attempt   INTEGER NOT NULL,
        t         INTEGER NOT NULL,
        ok        INTEGER NOT NULL,
        error     TEXT);                       -- never the code (scrubbed)
    CREATE INDEX aisle_deliveries_message ON aisle_deliveries (message);
    """,
    # 20: bounded queues and reads that cannot starve each other (issue 17, docs/operations.md
    #     "Queues, disk and reads"). Webhook subscriptions count their pending deliveries and
    #     the ones dropped past `[webhooks] max_pending` (triggers keep `pending`, so the cap
    #     and /metrics read one row, not the queue); the chain outbox's size is kept the same
    #     way in `queue_counts`. Indexes so that every API filter is an index search:
    #     `/events?device&type` (544 ms at 20M events on (device, id)), `/audit?who`,
    #     `/alerts?state`, `/webhooks/{id}/deliveries[?status]`. `event_hours`: hourly counts
    #     per device and type of the events retention deleted, written in the deleting
    #     transaction, kept for years (`Store.event_counts` adds the raw ones still kept).
    """
    ALTER TABLE webhook_subscriptions ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE webhook_subscriptions ADD COLUMN dropped INTEGER NOT NULL DEFAULT 0;
    UPDATE webhook_subscriptions SET pending = (SELECT COUNT(*) FROM webhook_deliveries d
        WHERE d.sub = webhook_subscriptions.id AND d.status = 'pending');
    CREATE TRIGGER webhook_pending_insert AFTER INSERT ON webhook_deliveries
        WHEN NEW.status = 'pending' BEGIN
        UPDATE webhook_subscriptions SET pending = pending + 1 WHERE id = NEW.sub;
    END;
    CREATE TRIGGER webhook_pending_update AFTER UPDATE OF status ON webhook_deliveries
        WHEN OLD.status = 'pending' AND NEW.status != 'pending' BEGIN
        UPDATE webhook_subscriptions SET pending = pending - 1 WHERE id = OLD.sub;
    END;
    CREATE TRIGGER webhook_pending_delete AFTER DELETE ON webhook_deliveries
        WHEN OLD.status = 'pending' BEGIN
        UPDATE webhook_subscriptions SET pending = pending - 1 WHERE id = OLD.sub;
    END;
    CREATE TABLE queue_counts (
        name TEXT PRIMARY KEY,
        n    INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO queue_counts (name, n) SELECT 'chain_outbox', COUNT(*) FROM chain_outbox;
    CREATE TRIGGER chain_outbox_insert AFTER INSERT ON chain_outbox BEGIN
        UPDATE queue_counts SET n = n + 1 WHERE name = 'chain_outbox';
    END;
    CREATE TRIGGER chain_outbox_delete AFTER DELETE ON chain_outbox BEGIN
        UPDATE queue_counts SET n = n - 1 WHERE name = 'chain_outbox';
    END;
    CREATE INDEX events_by_device_type ON events (device, type, id);
    CREATE INDEX audit_by_who ON audit (who, id);
    CREATE INDEX alerts_by_state ON alerts (state, id);
    CREATE INDEX webhook_by_sub ON webhook_deliveries (sub, id);
    CREATE INDEX webhook_by_sub_status ON webhook_deliveries (sub, status, id);
    CREATE TABLE event_hours (                  -- events pruned by retention, per hour
        device TEXT NOT NULL,
        type   TEXT NOT NULL,
        hour   INTEGER NOT NULL,                -- unix ms of the UTC hour's start
        n      INTEGER NOT NULL,
        PRIMARY KEY (device, type, hour)) WITHOUT ROWID;
    """,
    # 21: hourly counts of every event, not only the pruned ones (issue 17, `GET /events/hours`):
    #     retention folds the events into `event_hours` as they come (`upto`: the events.id
    #     counted up to, a pass a minute, gateway/storage/retention.py), prunes only events
    #     already counted, and a read adds the few events above `upto`. The rows counted before
    #     (the pruned events) are gone from `events`, so the fold starts at 0 without counting
    #     one twice. One index per filter of the route, each in its order (hour, device, type)
    #     and covering `n`; `event_hours_by_hour` also walks the rollup's own retention
    #     (`[retention] event_hours_days`).
    """
    CREATE TABLE event_hours_cursor (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        upto INTEGER NOT NULL);                 -- events.id counted into event_hours up to
    INSERT INTO event_hours_cursor (id, upto) VALUES (1, 0);
    CREATE INDEX event_hours_by_hour ON event_hours (hour, device, type, n);
    CREATE INDEX event_hours_by_device ON event_hours (device, hour, type, n);
    CREATE INDEX event_hours_by_type ON event_hours (type, hour, device, n);
    """,
    # 22: the commands live in a file of their own (issue 18, `COMMAND_MIGRATIONS`): their
    #     rows were copied there first (`_copy_commands_out`, before this step), so a
    #     command's write never waits for the event writer nor shares its fsync. A kind's
    #     commands are committed here with its state (`command_outbox`, atomically), then
    #     moved to the command file (`Database.move_command_outbox`)
    """
    CREATE TABLE command_outbox (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        data TEXT NOT NULL);                   -- JSON {id, device, name, args, idem_key, deadline, created}
    DROP TRIGGER IF EXISTS main.command_counts_insert;
    DROP TRIGGER IF EXISTS main.command_counts_update;
    DROP TRIGGER IF EXISTS main.command_counts_delete;
    DROP TABLE IF EXISTS main.command_counts;
    DROP TABLE IF EXISTS main.commands;
    """,
    # 23: the field the stream's readers filter on (`stream_tag`: an event's type, a device's
    #     or command's change) in a column of its own (issue 18): the analytics fold and the
    #     alerts' scan read every new row, and `json_extract` on each cost them 4.4 us of CPU
    #     an event, 2.1 with the column (`bench/writer_apply.py --fold`). Older rows keep NULL
    #     and are read through their JSON (`COALESCE(tag, json_extract(...))`) until the
    #     cursors pass them.
    """
    ALTER TABLE stream ADD COLUMN tag TEXT;
    """,
)


def stream_tag_field(kind: str) -> str:
    """The field a stream item of `kind` is filtered by: `change` for device and command
    items, `type` for the others (an event's type)."""
    return "change" if kind in ("device", "command") else "type"


def stream_tag(kind: str, data: Mapping[str, Any]) -> str | None:
    """The `tag` column of a stream item: its `stream_tag_field`, None when not a string."""
    v = data.get(stream_tag_field(kind))
    return v if isinstance(v, str) else None


HOUR_MS = 3_600_000   # event_hours: counts per UTC hour (unix ms of its start)


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One entry of the gateway's outward stream (SSE `id:` = `id`)."""
    id: int
    kind: str
    data: dict[str, Any]


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit) with our pragmas."""
    if readonly:
        conn = sqlite3.connect(_uri(path, "ro"), uri=True,
                               isolation_level=None, check_same_thread=True)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # a URI connection: it may ATTACH another file read-only (`attach_readonly`)
        conn = sqlite3.connect(_uri(path), uri=True, isolation_level=None,
                               check_same_thread=True)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        # a new file is created in incremental auto-vacuum (before its first table: it cannot
        # change after that without a VACUUM, `phygital db vacuum`), so retention returns the
        # pages it frees to the file system (gateway/storage/retention.py)
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"could not switch {path} to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _uri(path: str | Path, mode: str | None = None) -> str:
    uri = "file:" + urllib.parse.quote(str(Path(path).resolve()))
    return uri if mode is None else f"{uri}?mode={mode}"


def attach_readonly(conn: sqlite3.Connection, path: str | Path, name: str) -> None:
    """ATTACH `path` as `name`, read-only: a `BEGIN IMMEDIATE` on `conn` then takes no write
    lock on it (its writer is another thread), and a write to it by mistake fails loudly."""
    conn.execute("ATTACH DATABASE ? AS " + name, (_uri(path, "ro"),))


def migrate(conn: sqlite3.Connection, upto: int | None = None) -> int:
    """Bring the schema to the newest version (by `PRAGMA user_version`); returns it.
    `upto`: stop at that version instead (tests build an older gateway's database)."""
    current: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise RuntimeError(f"database schema v{current} is newer than this gateway "
                           f"(v{len(MIGRATIONS)}): upgrade the gateway or use another --db")
    target = len(MIGRATIONS) if upto is None else upto
    for version in range(current + 1, target + 1):
        if version == COMMAND_SPLIT:  # the rows go to the command file first (committed)
            _copy_commands_out(conn)
        _step(conn, MIGRATIONS[version - 1], f"PRAGMA user_version = {version}")
    return max(current, target)


def _step(conn: sqlite3.Connection, script: str, *mark: Any) -> None:
    """One migration step in one transaction: `script`'s statements, then `mark` (the SQL
    and arguments that record the version)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in _statements(script):
            conn.execute(stmt)
        conn.execute(*mark)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def migrate_kind(conn: sqlite3.Connection, kind: str, migrations: Sequence[str]) -> int:
    """Bring one device kind's own tables (`DeviceKind.migrations`) to its newest version;
    returns it. A kind added after the core schema keeps its migrations in its folder and is
    versioned on its own (table `kind_schema`), so a new kind appends nothing to MIGRATIONS and
    kinds never compete for a version number. Same rules as `migrate`: in order, one
    transaction each, and a database newer than the code is refused."""
    conn.execute("CREATE TABLE IF NOT EXISTS kind_schema "
                 "(kind TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID")
    row = conn.execute("SELECT version FROM kind_schema WHERE kind = ?", (kind,)).fetchone()
    current: int = row[0] if row else 0
    if current > len(migrations):
        raise RuntimeError(f"the {kind} tables are at v{current}, newer than this gateway "
                           f"(v{len(migrations)}): upgrade the gateway or use another --db")
    for version in range(current + 1, len(migrations) + 1):
        _step(conn, migrations[version - 1],
              "INSERT INTO kind_schema (kind, version) VALUES (?, ?) ON CONFLICT (kind)"
              " DO UPDATE SET version = excluded.version", (kind, version))
    return max(current, len(migrations))


# -- the command file (issue 18) ---------------------------------------------------------
# The commands live in a SQLite file of their own beside the gateway's (`commands_path`), with
# its own writer thread (`gateway.storage.db.CommandDatabase`): a command's submit, its send
# record and a device's reply commit there, a small fsync that never waits for an event batch
# nor shares its commit (docs/benchmarks.md, "Issue 18, session 11"). Its stream items go to
# `command_stream` in the same transaction and are copied, in order and once, into the main
# `stream` (SSE, webhooks, the chain) by `Database` (`command_stream_upto` counter).
COMMAND_SPLIT = 22  # the main migration that drops the old `commands` table (copied first)
COMMAND_MIGRATIONS: tuple[str, ...] = (
    # 1: as the main file's table was at main v21 (migrations 1, 11 and 16)
    """
    CREATE TABLE commands (
        id           TEXT PRIMARY KEY,
        device       TEXT NOT NULL,
        name         TEXT NOT NULL,
        args         TEXT NOT NULL,            -- JSON object
        idem_key     TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN
                     ('queued','sent','accepted','done','rejected','failed','expired')),
        reason       TEXT,
        result       TEXT,                     -- JSON object or NULL
        deadline     INTEGER NOT NULL,
        created      INTEGER NOT NULL,
        updated      INTEGER NOT NULL,
        late         INTEGER NOT NULL DEFAULT 0,
        sends        INTEGER NOT NULL DEFAULT 0,
        last_sent    INTEGER,
        late_outcome TEXT,                     -- JSON {status, reason, result, at} or NULL
        UNIQUE (device, idem_key)
    );
    CREATE INDEX commands_pending ON commands (status) WHERE status IN ('queued','sent','accepted');
    CREATE TABLE command_counts (
        status TEXT PRIMARY KEY,
        n      INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TRIGGER command_counts_insert AFTER INSERT ON commands BEGIN
        INSERT INTO command_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER command_counts_update AFTER UPDATE OF status ON commands
        WHEN NEW.status IS NOT OLD.status BEGIN
        UPDATE command_counts SET n = n - 1 WHERE status = OLD.status;
        INSERT INTO command_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER command_counts_delete AFTER DELETE ON commands BEGIN
        UPDATE command_counts SET n = n - 1 WHERE status = OLD.status;
    END;
    CREATE TABLE command_stream (              -- items not yet copied to the main stream
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        data TEXT NOT NULL);
    """,
)
_COMMAND_COLUMNS = ("id, device, name, args, idem_key, status, reason, result, deadline, "
                    "created, updated, late, sends, last_sent, late_outcome")


def commands_path(path: str | Path) -> Path:
    """The command file beside the gateway's database: `gw.db` → `gw.commands.db`."""
    p = Path(path)
    return p.with_name(f"{p.stem}.commands{p.suffix}")


def connect_all(path: str | Path) -> sqlite3.Connection:
    """One connection to the gateway's file (migrated) with its command file attached
    read-write as `cmds`, so one `Store` reads and writes both: for tools and tests. (The
    gateway writes each file from its own thread, `gateway.storage.db`.)"""
    conn = connect(path)
    migrate_all(conn, path)
    conn.execute("ATTACH DATABASE ? AS cmds", (_uri(commands_path(path)),))
    return conn


def migrate_commands(conn: sqlite3.Connection) -> int:
    """`migrate` for the command file (its own `user_version`)."""
    current: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(COMMAND_MIGRATIONS):
        raise RuntimeError(f"command file schema v{current} is newer than this gateway "
                           f"(v{len(COMMAND_MIGRATIONS)}): upgrade the gateway")
    for version in range(current + 1, len(COMMAND_MIGRATIONS) + 1):
        _step(conn, COMMAND_MIGRATIONS[version - 1], f"PRAGMA user_version = {version}")
    return max(current, len(COMMAND_MIGRATIONS))


def _command_file(path: str | Path) -> Path:
    """Create (or bring up to date) the command file beside the gateway's `path`."""
    cpath = commands_path(path)
    cconn = connect(cpath)
    try:
        migrate_commands(cconn)
    finally:
        cconn.close()
    return cpath


def _copy_commands_out(conn: sqlite3.Connection) -> None:
    """Before `COMMAND_SPLIT` drops the main file's `commands`: copy its rows into the command
    file beside it and commit them there (`INSERT OR IGNORE`: again after a crash, harmless)."""
    path = conn.execute("PRAGMA database_list").fetchone()[2]  # the main file's path
    if not path:  # a temporary database has no file beside it
        if conn.execute("SELECT 1 FROM main.commands LIMIT 1").fetchone() is not None:
            raise RuntimeError("a temporary database with commands cannot be upgraded")
        return
    cpath = _command_file(path)
    conn.execute("ATTACH DATABASE ? AS cmds", (_uri(cpath),))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"INSERT OR IGNORE INTO cmds.commands ({_COMMAND_COLUMNS}) "
                         f"SELECT {_COMMAND_COLUMNS} FROM main.commands")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("DETACH DATABASE cmds")


def migrate_all(conn: sqlite3.Connection, path: str | Path) -> int:
    """The main file to the newest schema (`migrate`: its old `commands` rows are copied into
    the command file before v22 drops them) and the command file beside it."""
    _command_file(path)
    return migrate(conn)


def _statements(script: str) -> Iterator[str]:
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""
    if buf.strip():
        yield buf


# one encoder for the process: json.dumps with non-default options builds a new JSONEncoder
# on every call, which costs as much as encoding a small event
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _dumps_decoded(obj: Any) -> str:
    """Encode what `protocol.decode` produced (or plain ints/strings): orjson, ~5x faster than
    `_dumps` on the ingest path. Not for other input: orjson writes NaN as null and has no
    `allow_nan=False`; the decoder never yields NaN, so event bodies round-trip exactly."""
    return orjson.dumps(obj).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class MidwayCommitError(Exception):
    """A commit midway through a write (`Store.commit_midway`, for the command lane) failed:
    the transaction is lost, the write in progress must not go on in it."""


class _NotAllNew(Exception):
    """A batch insert met a duplicate row (rolled back; the rows go one by one)."""


class Store:
    """Queries over one connection. Not thread-safe: one Store per thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._outbox: list[StreamItem] = []
        self._taken = 0  # outbox items handed out so far: a savepoint's mark counts them too
        self._depth = 0
        # set by the writer (`gateway.storage.db.Database`) while a group of writes runs:
        # `lane_waiting()` is True when command-lane writes wait; `lane_join()` runs them in
        # this transaction and commits it midway (`commit_midway`). A long write calls them
        # between two chunks of its work (the ingest: `gateway.devices.ingest._Batch.flush`)
        self.lane_waiting: Callable[[], bool] | None = None
        self.lane_join: Callable[[], None] | None = None
        # called with every appended stream item, inside its transaction: integrations
        # (gateway.integrations.webhooks, gateway.integrations.chain) add their own outbox rows atomically with it
        self.stream_hooks: list[Callable[[Store, StreamItem], None]] = []
        self._tagged = False  # the stream has its `tag` column (migration 23): `stream_tagged`

    def stream_tagged(self) -> bool:
        """Whether stream rows get their `tag`: always on a migrated file; a file older than
        migration 23 is only ever written by the upgrade tests, which fill one with this code."""
        if not self._tagged:
            self._tagged = any(r[1] == "tag" for r in self.conn.execute("PRAGMA table_info(stream)"))
        return self._tagged

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction (`BEGIN` … `COMMIT`): every SELECT inside sees the same database,
        whatever the writer commits meanwhile (WAL). Inside a write transaction: that one."""
        if self._depth:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """`BEGIN IMMEDIATE … COMMIT`; nested use becomes a savepoint that rolls back alone."""
        if self._depth:
            name = f"sp{self._depth}"
            mark = self._taken + len(self._outbox)  # absolute: `commit_midway` takes items
            self.conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                try:
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                except sqlite3.OperationalError:
                    # the savepoint is gone (a cut whose transaction could not be reopened,
                    # `reopen_midway`): nothing uncommitted may stay; the first error goes up
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                del self._outbox[max(0, mark - self._taken):]
                raise
            else:
                self.conn.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1
            return
        mark = self._taken + len(self._outbox)  # items of earlier, committed transactions stay
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            del self._outbox[max(0, mark - self._taken):]
            raise
        finally:
            self._depth = 0

    def take_outbox(self) -> list[StreamItem]:
        """Stream items of the transactions committed since the last call."""
        items, self._outbox = self._outbox, []
        self._taken += len(items)
        return items

    def commit_midway(self) -> list[StreamItem]:
        """COMMIT the open transaction, savepoints included: what was written so far is
        durable. Returns the stream items that committed (for `on_commit`). The caller then
        calls `reopen_midway` before the writes in progress go on. The writer's command lane
        uses the two to cut a long ingest batch (`Database._lane_join`)."""
        if not self._depth:
            raise RuntimeError("commit_midway outside a transaction")
        self.conn.execute("COMMIT")
        return self.take_outbox()

    def reopen_midway(self) -> None:
        """After `commit_midway`: open the transaction again with the same savepoints, so the
        writes in progress go on (a rollback of one of them now undoes only what it writes
        after the commit)."""
        self.conn.execute("BEGIN IMMEDIATE")
        for depth in range(1, self._depth):
            self.conn.execute(f"SAVEPOINT sp{depth}")

    # -- devices --------------------------------------------------------------------------

    @staticmethod
    def _device(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        d = dict(row)
        d["caps"] = _loads(d["caps"])
        d["online"] = bool(d["online"])
        return d

    def get_device(self, device: str) -> dict[str, Any] | None:
        return self._device(self.conn.execute("SELECT * FROM devices WHERE id = ?",
                                              (device,)).fetchone())

    def list_devices(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM devices ORDER BY id").fetchall()
        return [d for d in map(self._device, rows) if d is not None]

    def devices_with_acks(self, device: str | None = None) -> list[dict[str, Any]]:
        """Every device (or the one `device`), each with `acked` (the watermark of its current
        epoch, 0 before any ack) and `pending_commands` (ids of its queued, sent or accepted
        commands, oldest first): two queries however many devices, no query per device."""
        where, args = ("WHERE d.id = ? ", (device,)) if device is not None else ("", ())
        rows = self.conn.execute(
            "SELECT d.*, COALESCE(a.upto, 0) AS acked FROM devices d LEFT JOIN acks a "
            f"ON a.device = d.id AND a.epoch = d.epoch {where}ORDER BY d.id", args).fetchall()
        pending: dict[str, list[str]] = {}
        for cid, dev in self.conn.execute(
                "SELECT id, device FROM commands WHERE status IN ('queued','sent','accepted') "
                + ("AND device = ? " if device is not None else "") + "ORDER BY created", args):
            pending.setdefault(dev, []).append(cid)
        out = []
        for row in rows:
            d = self._device(row)
            assert d is not None
            d["pending_commands"] = pending.get(d["id"], [])
            out.append(d)
        return out

    def upsert_device(self, *, id: str, kind: str, fw: str, caps: Sequence[str], cfg: str,
                      session: int, epoch: str, boot: int, reset: str | None, online: bool,
                      now: int) -> None:
        self.conn.execute(
            """INSERT INTO devices (id, kind, fw, caps, cfg, session, epoch, boot, reset, online,
                                    last_seen, first_seen)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT (id) DO UPDATE SET kind=excluded.kind, fw=excluded.fw,
                 caps=excluded.caps, cfg=excluded.cfg, session=excluded.session,
                 epoch=excluded.epoch, boot=excluded.boot, reset=excluded.reset,
                 online=excluded.online, last_seen=excluded.last_seen""",
            (id, kind, fw, _dumps(list(caps)), cfg, session, epoch, boot, reset, int(online),
             now, now))

    def set_online(self, device: str, online: bool, now: int) -> None:
        self.conn.execute("UPDATE devices SET online = ?, last_seen = ? WHERE id = ?",
                          (int(online), now, device))

    def touch(self, devices: Sequence[str], now: int) -> None:
        self.conn.executemany("UPDATE devices SET last_seen = ? WHERE id = ?",
                              [(now, d) for d in devices])

    # -- events ---------------------------------------------------------------------------

    @staticmethod
    def _event(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        d["body"] = _loads(d["body"])
        return d

    def insert_event(self, device: str, epoch: str, seq: int | None, type: str,
                     t_device: int | None, t_gateway: int, body: dict[str, Any]) -> int | None:
        """Store one event and append it to the stream; returns its id if it was new, None for
        a duplicate `(device, epoch, seq)`. Call inside `transaction()`."""
        cur = self.conn.execute(
            """INSERT INTO events (device, epoch, seq, type, t_device, t_gateway, body)
               VALUES (?,?,?,?,?,?,?) ON CONFLICT (device, epoch, seq) DO NOTHING""",
            (device, epoch, seq, type, t_device, t_gateway, _dumps_decoded(body)))
        if cur.rowcount == 0:
            return None
        eid = cur.lastrowid
        assert eid is not None
        self.append_stream("event", {"id": eid, "device": device, "epoch": epoch, "seq": seq,
                                     "type": type, "t_device": t_device, "t_gateway": t_gateway,
                                     "body": body})
        return eid

    def insert_events(self, rows: Sequence[tuple[str, str, int | None, str, int | None, int,
                                                 dict[str, Any]]]) -> list[int | None]:
        """`insert_event` for a batch, in one transaction."""
        with self.transaction():
            return [self.insert_event(*row) for row in rows]

    def insert_events_many(self, rows: Sequence[tuple[str, str, int | None, str, int | None,
                                                      int, dict[str, Any]]],
                           one_by_one: bool = True) -> list[int | None] | None:
        """`insert_event` for many rows, inside a transaction, with two `executemany` (events,
        then stream) instead of two statements per event: the ingest's serial stage is Python
        per statement. When a row is a duplicate, the rows go one by one through
        `insert_event` instead (in a savepoint rolled back first) — or, with
        `one_by_one=False`, nothing is inserted and None is returned (the caller goes one by
        one itself: the ingest compares each duplicate with what is stored)."""
        if len(rows) < 2:
            if not one_by_one:
                if not rows:
                    return []
                eid = self.insert_event(*rows[0])
                return None if eid is None else [eid]
            return [self.insert_event(*row) for row in rows]
        ids = self.insert_events_cut(rows, len(rows))
        if len(ids) == len(rows):
            return list(ids)
        if not one_by_one:
            return None
        return [self.insert_event(*row) for row in rows]

    def insert_events_cut(self, rows: Sequence[tuple[str, str, int | None, str, int | None,
                                                     int, dict[str, Any]]], chunk: int,
                          between: Callable[[int], bool] | None = None) -> list[int]:
        """`insert_events_many` `chunk` rows at a time, in ONE savepoint (a savepoint per chunk
        would copy every page the chunks share to its journal again: +30 % of the writer's
        CPU), calling `between(n)` after each chunk but the last (`n` rows inserted so far).
        `between` may commit the transaction midway (`commit_midway`: the command lane) and
        then returns True. Returns the ids of the rows inserted: all of them, or, when a row
        is a duplicate, only those committed by a `between` (a prefix; the savepoint rolled
        back the rest, which the caller inserts one by one)."""
        kept: list[int] = []  # committed by a cut
        done: list[int] = []  # inserted since the start or the last cut
        try:
            with self.transaction():  # savepoint (re-made by `commit_midway`)
                start = 0
                while start < len(rows):
                    part = rows[start:start + chunk]
                    done += self._insert_part(part)
                    start += len(part)
                    if start < len(rows) and between is not None and between(start):
                        kept += done
                        done = []
        except _NotAllNew:
            return kept
        return kept + done

    def _insert_part(self, rows: Sequence[tuple[str, str, int | None, str, int | None, int,
                                                dict[str, Any]]]) -> range:
        """Insert `rows` (events and their stream items) with two `executemany`; raises
        `_NotAllNew` if one is a duplicate (the caller's savepoint rolls back)."""
        bodies = [_dumps_decoded(row[6]) for row in rows]
        conn = self.conn
        before = conn.total_changes
        conn.executemany(
            """INSERT INTO events (device, epoch, seq, type, t_device, t_gateway, body)
               VALUES (?,?,?,?,?,?,?) ON CONFLICT (device, epoch, seq) DO NOTHING""",
            [(*row[:6], body) for row, body in zip(rows, bodies)])
        if conn.total_changes - before != len(rows):
            raise _NotAllNew
        ids = self._new_ids("events", len(rows))
        items = []
        texts = []
        for eid, (device, epoch, seq, type_, t_device, t_gateway, body), text in zip(
                ids, rows, bodies):
            data = {"id": eid, "device": device, "epoch": epoch, "seq": seq,
                    "type": type_, "t_device": t_device, "t_gateway": t_gateway}
            # the same text append_stream writes, without encoding the body twice
            texts.append((type_, _dumps_decoded(data)[:-1] + ',"body":' + text + "}"))
            data["body"] = body
            items.append(data)
        if self.stream_tagged():
            conn.executemany("INSERT INTO stream (kind, tag, data) VALUES ('event', ?, ?)", texts)
        else:
            conn.executemany("INSERT INTO stream (kind, data) VALUES ('event', ?)",
                             [(t[1],) for t in texts])
        for sid, data in zip(self._new_ids("stream", len(rows)), items):
            item = StreamItem(sid, "event", data)
            self._outbox.append(item)
            for hook in self.stream_hooks:  # as append_stream does, same transaction
                hook(self, item)
        return ids

    def _new_ids(self, table: str, n: int) -> range:
        """Ids of the `n` rows just inserted into `table` by one executemany: AUTOINCREMENT
        gives them ascending ids above every earlier one; checked to be contiguous."""
        last = self.conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        ids = range(last - n + 1, last + 1)
        found = self.conn.execute(f"SELECT COUNT(*) FROM {table} WHERE id BETWEEN ? AND ?",
                                  (ids[0], last)).fetchone()[0]
        if found != n:
            raise RuntimeError(f"{table}: {n} new rows are not ids {ids[0]}..{last}")
        return ids

    def has_event(self, device: str, epoch: str, seq: int) -> bool:
        return self.conn.execute("SELECT 1 FROM events WHERE device=? AND epoch=? AND seq=?",
                                 (device, epoch, seq)).fetchone() is not None

    def count_events_between(self, device: str, epoch: str, lo: int, hi: int) -> int:
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM events WHERE device=? AND epoch=? AND seq BETWEEN ? AND ?",
            (device, epoch, lo, hi)).fetchone()[0])

    def get_event(self, event_id: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else self._event(row)

    def list_events(self, *, device: str | None = None, type: str | None = None,
                    after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        sql = "SELECT * FROM events WHERE id > ?"
        args: list[Any] = [after]
        if device is not None:
            sql += " AND device = ?"
            args.append(device)
        if type is not None:
            sql += " AND type = ?"
            args.append(type)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [self._event(r) for r in self.conn.execute(sql, args).fetchall()]

    def hours_upto(self) -> int:
        """The events.id up to which every event is counted in `event_hours` (0: none)."""
        row = self.conn.execute("SELECT upto FROM event_hours_cursor WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def hours_lag(self) -> int:
        """How many events.ids are not counted in `event_hours` yet (the raw tail a read of the
        hourly counts adds itself): one index seek."""
        row = self.conn.execute("SELECT MAX(id) FROM events").fetchone()
        return max(0, int(row[0] or 0) - self.hours_upto())

    def event_counts(self, *, since: int, until: int, device: str | None = None,
                     type: str | None = None) -> list[tuple[int, str, str, int]]:
        """Events per UTC hour, device and type whose hour starts in [since, until) (unix ms,
        whole hours): the hourly counts (`event_hours`, every event up to `hours_upto`, kept
        after the raw events are pruned) plus the raw events above it, each event counted
        once. Rows `(hour, device, type, n)` ordered by (hour, device, type)."""
        rows: list[tuple[int, str, str, int]] = []
        after: tuple[int, str, str] | None = None
        while True:
            page, after = self.event_hours_page(since=since, until=until, device=device,
                                                type=type, after=after, limit=10_000)
            rows += page
            if after is None:
                return rows

    def event_hours_page(self, *, since: int, until: int, device: str | None = None,
                         type: str | None = None, after: tuple[int, str, str] | None = None,
                         limit: int = 1000
                         ) -> tuple[list[tuple[int, str, str, int]], tuple[int, str, str] | None]:
        """A page of `event_counts`: the first `limit` rows whose key (hour, device, type) is
        above `after`, and the key to pass as `after` for the next page (None: the last page).
        Each filter is an index search in key order (migration 21), stopped by `limit`; the raw
        side reads only the events above `hours_upto` (a rowid range: one fold pass's worth)."""
        where: list[str] = ["hour >= ?", "hour < ?"]
        args: list[Any] = [since, until]
        fixed = {"device": device, "type": type}
        for col, value in fixed.items():
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        free = ["hour"] + [c for c in ("device", "type") if fixed[c] is None]
        if after is not None:
            key = dict(zip(("hour", "device", "type"), after, strict=True))
            where.append(f"({', '.join(free)}) > ({', '.join('?' * len(free))})")
            args += [key[c] for c in free]
        index = {(False, False): "event_hours_by_hour", (True, False): "event_hours_by_device",
                 (False, True): "event_hours_by_type"}.get((device is not None, type is not None))
        sql = (f"SELECT hour, device, type, n FROM event_hours "
               f"{'INDEXED BY ' + index if index else ''} WHERE {' AND '.join(where)} "
               f"ORDER BY {', '.join(free)} LIMIT ?")
        raw_where = ["id > ?", "t_gateway >= ?", "t_gateway < ?"]
        raw_args: list[Any] = [since, until]
        for col, value in fixed.items():
            if value is not None:
                raw_where.append(f"{col} = ?")
                raw_args.append(value)
        # one snapshot: a fold committed between the two reads would move events from the raw
        # side to the counted one unseen (lost) or the other way round (counted twice)
        with self.snapshot():
            counts: dict[tuple[int, str, str], int] = {
                (h, d, t): n for h, d, t, n in self.conn.execute(sql, (*args, limit + 1))}
            # the raw tail: events not folded yet, in the same hours (whole hours: t_gateway in
            # [since, until) is the hour's start in it)
            for h, d, t, n in self.conn.execute(
                    f"SELECT t_gateway / {HOUR_MS} * {HOUR_MS}, device, type, COUNT(*) FROM events "
                    f"WHERE {' AND '.join(raw_where)} GROUP BY 1, 2, 3",
                    (self.hours_upto(), *raw_args)):
                if after is None or (h, d, t) > after:
                    counts[(h, d, t)] = counts.get((h, d, t), 0) + n
        # the rollup gave its first limit + 1 keys: any key past the limit-th of the merge is
        # past a rollup key not returned, so the page and its sums are exact
        keys = sorted(counts)
        page = [(h, d, t, counts[(h, d, t)]) for h, d, t in keys[:limit]]
        return page, (keys[limit - 1] if len(keys) > limit else None)

    # -- acknowledgement watermark --------------------------------------------------------

    def get_watermark(self, device: str, epoch: str) -> int | None:
        row = self.conn.execute("SELECT upto FROM acks WHERE device=? AND epoch=?",
                                (device, epoch)).fetchone()
        return None if row is None else row[0]

    def set_watermark(self, device: str, epoch: str, upto: int) -> None:
        self.conn.execute(
            """INSERT INTO acks (device, epoch, upto) VALUES (?,?,?)
               ON CONFLICT (device, epoch) DO UPDATE SET upto = MAX(upto, excluded.upto)""",
            (device, epoch, upto))

    # -- a session's verified prefix and rolled-back epochs (migration 11) -----------------

    def epoch_state(self, device: str, epoch: str) -> dict[str, Any] | None:
        """`upto`, `verified`, `mark`, `sealed`, `fork` of `(device, epoch)`, or None."""
        row = self.conn.execute("SELECT upto, verified, mark, sealed, fork FROM acks "
                                "WHERE device=? AND epoch=?", (device, epoch)).fetchone()
        return None if row is None else dict(row)

    def devices_with_epoch_state(self, devices: Sequence[str]
                                 ) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
        """`get_device` and the `epoch_state` of its current epoch, for many devices in one
        query (the ingest reads both for every device of a batch): device id -> (device,
        state or None); devices we do not know are left out."""
        rows = self.conn.execute(
            "SELECT d.*, a.device IS NOT NULL AS a_has, a.upto AS a_upto, a.verified AS "
            "a_verified, a.mark AS a_mark, a.sealed AS a_sealed, a.fork AS a_fork FROM devices d "
            "LEFT JOIN acks a ON a.device = d.id AND a.epoch = d.epoch "
            "WHERE d.id IN (SELECT value FROM json_each(?))",
            (_dumps_decoded(list(devices)),)).fetchall()
        out: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
        for row in rows:
            d = dict(row)
            has = d.pop("a_has")
            st = {k: d.pop("a_" + k) for k in ("upto", "verified", "mark", "sealed", "fork")}
            d["caps"] = _loads(d["caps"])
            d["online"] = bool(d["online"])
            out[d["id"]] = (d, st if has else None)
        return out

    def set_acks_many(self, watermarks: Sequence[tuple[str, str, int]],
                      verified: Sequence[tuple[int, str, str]]) -> None:
        """`set_watermark` for each `(device, epoch, upto)`, then `set_verified` for each
        `(verified, device, epoch)`: one `executemany` each."""
        if watermarks:
            self.conn.executemany(
                """INSERT INTO acks (device, epoch, upto) VALUES (?,?,?)
                   ON CONFLICT (device, epoch) DO UPDATE SET upto = MAX(upto, excluded.upto)""",
                watermarks)
        if verified:
            self.conn.executemany("UPDATE acks SET verified = ? WHERE device=? AND epoch=?",
                                  verified)

    def set_verified(self, device: str, epoch: str, verified: int,
                     mark: int | None = None) -> None:
        """Store the session's verified prefix (and, at a birth, the events.id mark)."""
        if mark is None:
            self.conn.execute("UPDATE acks SET verified = ? WHERE device=? AND epoch=?",
                              (verified, device, epoch))
        else:
            self.conn.execute("UPDATE acks SET verified = ?, mark = ? WHERE device=? AND epoch=?",
                              (verified, mark, device, epoch))

    def seal_epoch(self, device: str, epoch: str, sealed: int, fork: str) -> None:
        self.conn.execute("UPDATE acks SET sealed = ?, fork = ? WHERE device=? AND epoch=?",
                          (sealed, fork, device, epoch))

    def epoch_known(self, device: str, epoch: str) -> bool:
        return self.conn.execute("SELECT 1 FROM acks WHERE device=? AND epoch=?",
                                 (device, epoch)).fetchone() is not None

    def forked_into(self, device: str, epoch: str, fork: str) -> bool:
        """True if `epoch` of `device` was closed with the device told to go on in `fork`."""
        return self.conn.execute("SELECT 1 FROM acks WHERE device=? AND epoch=? AND fork=?",
                                 (device, epoch, fork)).fetchone() is not None

    def last_event_id(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def max_seq(self, device: str, epoch: str) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events "
                                     "WHERE device=? AND epoch=?", (device, epoch)).fetchone()[0])

    def stored_event(self, device: str, epoch: str, seq: int
                     ) -> tuple[int, str, int | None, Any] | None:
        """`(id, type, t_device, body)` of the event stored at `(device, epoch, seq)`."""
        row = self.conn.execute("SELECT id, type, t_device, body FROM events "
                                "WHERE device=? AND epoch=? AND seq=?",
                                (device, epoch, seq)).fetchone()
        return None if row is None else (row[0], row[1], row[2], orjson.loads(row[3]))

    def event_id(self, device: str, epoch: str, seq: int) -> int | None:
        row = self.conn.execute("SELECT id FROM events WHERE device=? AND epoch=? AND seq=?",
                                (device, epoch, seq)).fetchone()
        return None if row is None else int(row[0])

    def advance_watermark(self, device: str, epoch: str, start: int | None = None) -> int:
        """Move the watermark over every stored seq contiguous above it; returns it."""
        w = self.get_watermark(device, epoch) or 0
        if start is not None:
            w = max(w, start)
        while self.has_event(device, epoch, w + 1):
            w += 1
        self.set_watermark(device, epoch, w)
        return w

    # -- commands -------------------------------------------------------------------------

    @staticmethod
    def _command(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        d = dict(row)
        d["args"] = _loads(d["args"])
        d["result"] = _loads(d["result"])
        d["late"] = bool(d["late"])
        d["late_outcome"] = _loads(d["late_outcome"])
        d["final"] = d["status"] in FINAL_STATUSES
        return d

    def get_command(self, command_id: str) -> dict[str, Any] | None:
        return self._command(self.conn.execute("SELECT * FROM commands WHERE id = ?",
                                               (command_id,)).fetchone())

    def find_command(self, device: str, idem_key: str) -> dict[str, Any] | None:
        return self._command(self.conn.execute(
            "SELECT * FROM commands WHERE device = ? AND idem_key = ?",
            (device, idem_key)).fetchone())

    def insert_command(self, *, id: str, device: str, name: str, args: dict[str, Any],
                       idem_key: str, deadline: int, now: int) -> dict[str, Any]:
        self.conn.execute(
            """INSERT INTO commands (id, device, name, args, idem_key, status, deadline,
                                     created, updated)
               VALUES (?,?,?,?,?,'queued',?,?,?)""",
            (id, device, name, _dumps(args), idem_key, deadline, now, now))
        cmd = self.get_command(id)
        assert cmd is not None
        self.append_stream("command", public_command(cmd))
        return cmd

    def update_command(self, command_id: str, *, status: str, now: int,
                       expect: Sequence[str], reason: str | None = None,
                       result: dict[str, Any] | None = None,
                       late: bool = False) -> dict[str, Any] | None:
        """Set the status if the current one is in `expect`; returns the new record or None."""
        marks = ",".join("?" * len(expect))
        cur = self.conn.execute(
            f"""UPDATE commands SET status=?, reason=?, result=?, late=?, updated=?
                WHERE id=? AND status IN ({marks})""",
            (status, reason, None if result is None else _dumps(result), int(late), now,
             command_id, *expect))
        if cur.rowcount == 0:
            return None
        cmd = self.get_command(command_id)
        assert cmd is not None
        self.append_stream("command", public_command(cmd))
        return cmd

    def record_late_outcome(self, command_id: str, *, status: str, reason: str | None,
                            result: dict[str, Any] | None, now: int) -> dict[str, Any] | None:
        """Keep a device's final answer to an `expired` command beside it (status, reason,
        result and `updated` stay as the caller was told: final is final). Only the first late
        answer is kept. Appends a `command` stream item with `change: late.<status>`. Returns
        the record, or None if there was nothing to record."""
        outcome = {"status": status, "reason": reason, "result": result, "at": now}
        cur = self.conn.execute(
            """UPDATE commands SET late = 1, late_outcome = ?
               WHERE id = ? AND status = 'expired' AND late_outcome IS NULL""",
            (_dumps(outcome), command_id))
        if cur.rowcount == 0:
            return None
        cmd = self.get_command(command_id)
        assert cmd is not None
        self.append_stream("command", public_command(cmd) | {"change": f"late.{status}"})
        return cmd

    def record_send(self, command_id: str, now: int) -> dict[str, Any] | None:
        """Count a delivered publish; `queued` becomes `sent`. Returns the record if the
        status changed."""
        self.conn.execute("UPDATE commands SET sends = sends + 1, last_sent = ? WHERE id = ?",
                          (now, command_id))
        return self.update_command(command_id, status="sent", now=now, expect=("queued",))

    def pending_commands(self, device: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT c.*, d.online AS device_online FROM commands c "
               "JOIN devices d ON d.id = c.device "
               "WHERE c.status IN ('queued','sent','accepted')")
        args: tuple[Any, ...] = ()
        if device is not None:
            sql += " AND c.device = ?"
            args = (device,)
        out = []
        for row in self.conn.execute(sql + " ORDER BY c.created", args).fetchall():
            cmd = self._command(row)
            assert cmd is not None
            cmd["device_online"] = bool(cmd["device_online"])
            out.append(cmd)
        return out

    def count_commands(self) -> dict[str, int]:
        """Commands by status (statuses with none left out): the `command_counts` rows the
        triggers of migration 16 keep, not a count of the table."""
        rows = self.conn.execute("SELECT status, n FROM command_counts WHERE n > 0")
        return {s: n for s, n in rows.fetchall()}

    # -- counters -------------------------------------------------------------------------

    def bump(self, name: str, n: int = 1) -> None:
        if n:
            self.conn.execute(
                """INSERT INTO counters (name, value) VALUES (?, ?)
                   ON CONFLICT (name) DO UPDATE SET value = value + excluded.value""", (name, n))

    def bump_rejection(self, reason: str, n: int = 1) -> None:
        if n:
            self.conn.execute(
                """INSERT INTO rejections (reason, count) VALUES (?, ?)
                   ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count""",
                (reason, n))

    def counters(self) -> dict[str, int]:
        return {k: v for k, v in self.conn.execute("SELECT name, value FROM counters")}

    def rejections(self) -> dict[str, int]:
        return {k: v for k, v in self.conn.execute("SELECT reason, count FROM rejections")}

    # -- samples --------------------------------------------------------------------------

    _SAMPLE_COLS = "id, title, image, url, description, uid, gtin"

    def list_samples(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(
            f"SELECT {self._SAMPLE_COLS} FROM samples ORDER BY id")]

    def get_sample(self, sample_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {self._SAMPLE_COLS} FROM samples WHERE id = ?",
                                (sample_id,)).fetchone()
        return None if row is None else dict(row)

    def sample_seed(self, sample_id: str) -> str | None:
        row = self.conn.execute("SELECT seed FROM samples WHERE id = ?", (sample_id,)).fetchone()
        return None if row is None else row[0]

    def sample_by_uid(self, uid: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {self._SAMPLE_COLS} FROM samples WHERE uid = ?",
                                (uid,)).fetchone()
        return None if row is None else dict(row)

    def put_sample(self, sample: dict[str, Any], seed: str | None = None) -> None:
        """Insert or replace a sample; `seed` (the imported file entry's hash) is kept as it
        is unless given."""
        self.conn.execute(
            """INSERT INTO samples (id, title, image, url, description, uid, gtin, seed)
               VALUES (?,?,?,?,?,?,?,?)
               ON CONFLICT (id) DO UPDATE SET title=excluded.title, image=excluded.image,
                 url=excluded.url, description=excluded.description, uid=excluded.uid,
                 gtin=excluded.gtin, seed=COALESCE(excluded.seed, seed)""",
            (sample["id"], sample["title"], sample.get("image"), sample.get("url"),
             sample.get("description"), sample.get("uid"), sample.get("gtin"), seed))

    # -- lockers -------------------------------------------------------------------------

    def list_lockers(self) -> list[tuple[str, dict[str, Any], int]]:
        return [(r[0], json.loads(r[1]), r[2]) for r in self.conn.execute(
            "SELECT bank, state, cursor FROM lockers ORDER BY bank")]

    def put_locker(self, bank: str, state: dict[str, Any], cursor: int, now: int) -> None:
        self.conn.execute(
            """INSERT INTO lockers (bank, state, cursor, updated) VALUES (?,?,?,?)
               ON CONFLICT (bank) DO UPDATE SET state=excluded.state, cursor=excluded.cursor,
                 updated=excluded.updated""", (bank, _dumps(state), cursor, now))

    # -- stream (outbox) ------------------------------------------------------------------

    def append_stream(self, kind: str, data: dict[str, Any]) -> StreamItem:
        if self.stream_tagged():
            cur = self.conn.execute("INSERT INTO stream (kind, tag, data) VALUES (?, ?, ?)",
                                    (kind, stream_tag(kind, data), _dumps(data)))
        else:
            cur = self.conn.execute("INSERT INTO stream (kind, data) VALUES (?, ?)",
                                    (kind, _dumps(data)))
        assert cur.lastrowid is not None
        item = StreamItem(cur.lastrowid, kind, data)
        self._outbox.append(item)
        for hook in self.stream_hooks:
            hook(self, item)
        return item

    def stream_after(self, after: int, limit: int = 500) -> list[StreamItem]:
        rows = self.conn.execute("SELECT id, kind, data FROM stream WHERE id > ? ORDER BY id "
                                 "LIMIT ?", (after, limit)).fetchall()
        return [StreamItem(r[0], r[1], json.loads(r[2])) for r in rows]

    def last_stream_id(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM stream").fetchone()[0])

    def prune_stream(self, keep: int) -> int:
        """Drop stream rows older than the newest `keep` (resume only reaches that far)."""
        cur = self.conn.execute("DELETE FROM stream WHERE id <= (SELECT MAX(id) FROM stream) - ?",
                                (keep,))
        return cur.rowcount


    # -- the command file's stream items, copied into the main stream ---------------------

    def command_stream_after(self, after: int, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        """The command file's stream items above `after` (its `command_stream` ids)."""
        rows = self.conn.execute("SELECT id, data FROM command_stream WHERE id > ? ORDER BY id "
                                 "LIMIT ?", (after, limit)).fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]

    def command_stream_upto(self) -> int:
        """The main file: the last command-file stream id copied into `stream`."""
        row = self.conn.execute("SELECT value FROM counters WHERE name = 'command_stream_upto'"
                                ).fetchone()
        return 0 if row is None else int(row[0])

    def append_command_stream(self, items: Sequence[tuple[int, dict[str, Any]]]) -> int:
        """The main file: append the command file's stream items above the copied mark, in
        order, and move the mark, in one transaction (so each is copied once); returns it."""
        with self.transaction():
            upto = self.command_stream_upto()
            for cid, data in items:
                if cid > upto:
                    self.append_stream("command", data)
                    upto = cid
            self.conn.execute(
                """INSERT INTO counters (name, value) VALUES ('command_stream_upto', ?)
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value""", (upto,))
        return upto

    def prune_command_stream(self, upto: int) -> int:
        """The command file: drop the items copied into the main stream."""
        with self.transaction():
            return self.conn.execute("DELETE FROM command_stream WHERE id <= ?",
                                     (upto,)).rowcount


# -- a kind's commands: committed with its state in the main file, then moved ------------

def outbox_commands(store: Store, cmds: Sequence[tuple[str, str, dict[str, Any], str, int]],
                    now: int) -> list[tuple[int, dict[str, Any]]]:
    """The main file, inside a kind's transaction: its device commands `(device, name, args,
    key, deadline)` into `command_outbox`, each with the id it will have; returns the rows."""
    rows = []
    for device, name, args, key, deadline in cmds:
        data = {"id": "c-" + secrets.token_hex(8), "device": device, "name": name, "args": args,
                "idem_key": key, "deadline": deadline, "created": now}
        cur = store.conn.execute("INSERT INTO command_outbox (data) VALUES (?)", (_dumps(data),))
        assert cur.lastrowid is not None
        rows.append((cur.lastrowid, data))
    return rows


def command_outbox(store: Store, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
    """The main file: the outbox's rows, oldest first."""
    return [(r[0], json.loads(r[1])) for r in store.conn.execute(
        "SELECT id, data FROM command_outbox ORDER BY id LIMIT ?", (limit,)).fetchall()]


def take_commands(store: Store, rows: Sequence[tuple[int, dict[str, Any]]]
                  ) -> list[dict[str, Any]]:
    """The command file: insert the outbox's commands, in one transaction. A command whose
    idempotency key its device already has is not inserted again (an action re-emitted after
    a restart, or a row moved again after a crash). Returns those inserted."""
    inserted = []
    with store.transaction():
        for _, d in rows:
            if store.find_command(d["device"], d["idem_key"]) is None:
                inserted.append(store.insert_command(
                    id=d["id"], device=d["device"], name=d["name"], args=d["args"],
                    idem_key=d["idem_key"], deadline=d["deadline"], now=d["created"]))
    return inserted


def forget_outbox(store: Store, ids: Sequence[int]) -> None:
    """The main file: drop outbox rows the command file has."""
    with store.transaction():
        store.conn.executemany("DELETE FROM command_outbox WHERE id = ?", [(i,) for i in ids])


class CommandStore(Store):
    """A `Store` on the command file (the gateway's file attached read-only as `gw`, so
    `devices` reads work): its stream items go to `command_stream`, in the same transaction as
    the change; `Database` copies them into the main stream."""

    def append_stream(self, kind: str, data: dict[str, Any]) -> StreamItem:
        cur = self.conn.execute("INSERT INTO command_stream (data) VALUES (?)", (_dumps(data),))
        assert cur.lastrowid is not None
        item = StreamItem(cur.lastrowid, kind, data)
        self._outbox.append(item)
        return item


def public_command(cmd: dict[str, Any]) -> dict[str, Any]:
    """The command record as the API, the stream, webhooks and the chain show it: a code
    verifier in its arguments is redacted (`gateway.http.redact.COMMAND_SECRETS`)."""
    return redact_command(
        {k: cmd[k] for k in ("id", "device", "name", "args", "idem_key", "status", "reason",
                             "result", "deadline", "created", "updated", "late", "sends",
                             "last_sent")}
        | {"late_outcome": cmd.get("late_outcome"), "final": cmd["status"] in FINAL_STATUSES})
