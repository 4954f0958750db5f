"""Head office's PostgreSQL: tables, month partitions, and the write of one batch.

- `chain_seqs (store, seq)`: the idempotency ledger. Every chain message is inserted here
  first with ON CONFLICT DO NOTHING: only the rows that went in are new; the rest are the
  duplicates QoS 1 and store restarts produce (docs/chain.md). A plain table, because a unique
  key on a partitioned table must include the partition key, and (store, seq) must be unique
  across months.
- `chain_events`: the events, partitioned by month of `t` (the store's commit time), one
  partition per month created when a batch first needs it.
- `chain_gaps`: an alert per hole in a store's seq: `missing` counts down as late messages
  fill it; `closed` is set when it reaches 0. An open gap means: fetch those events from the
  store (`GET /events?after=`).
- `chain_stores`: per store the highest seq seen, its bridge state and retained gateway state.
- `chain_stock (store, gtin)`: the latest stock a store reported for a GTIN (`fitting.stock`
  events), by the report's seq: a redelivered older report never overwrites a newer one.
  Served as chain-wide availability (gateway/central/http.py).
- `chain_funnel (store, hour)`: a store's funnel figures for an hour (`analytics.hour`
  events: the hour's totals), the latest report by seq, as chain_stock. Summed over stores,
  the chain-wide funnel (`funnel`, GET /funnel).
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from gateway.central.messages import FUNNEL_COLS, BridgeState, ChainEvent, GatewayState, Message

log = logging.getLogger("gateway.central")

SCHEMA = """
CREATE TABLE IF NOT EXISTS chain_seqs (
  store text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (store, seq));
CREATE TABLE IF NOT EXISTS chain_events (
  store text NOT NULL, seq bigint NOT NULL, stream_id bigint NOT NULL, type text NOT NULL,
  device text NOT NULL, t timestamptz NOT NULL, data jsonb NOT NULL,
  received timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (t);
CREATE INDEX IF NOT EXISTS chain_events_store_seq ON chain_events (store, seq);
CREATE TABLE IF NOT EXISTS chain_gaps (
  id bigserial PRIMARY KEY, store text NOT NULL, first_seq bigint NOT NULL,
  last_seq bigint NOT NULL, missing bigint NOT NULL,
  opened timestamptz NOT NULL DEFAULT now(), closed timestamptz);
CREATE INDEX IF NOT EXISTS chain_gaps_open ON chain_gaps (store, first_seq) WHERE closed IS NULL;
CREATE TABLE IF NOT EXISTS chain_stores (
  store text PRIMARY KEY, high_seq bigint NOT NULL DEFAULT 0,
  bridge_up boolean, bridge_seen timestamptz, gateway_state jsonb, state_seen timestamptz);
CREATE TABLE IF NOT EXISTS chain_stock (
  store text NOT NULL, gtin text NOT NULL, floor integer NOT NULL, stockroom integer NOT NULL,
  seq bigint NOT NULL, t timestamptz NOT NULL, PRIMARY KEY (store, gtin));
CREATE INDEX IF NOT EXISTS chain_stock_gtin ON chain_stock (gtin);
CREATE TABLE IF NOT EXISTS chain_funnel (
  store text NOT NULL, hour timestamptz NOT NULL, seq bigint NOT NULL,
  entries bigint NOT NULL, placements bigint NOT NULL, pad_lifts bigint NOT NULL,
  pad_dwell_ms bigint NOT NULL, sessions bigint NOT NULL, try_ons bigint NOT NULL,
  purchases bigint NOT NULL, units bigint NOT NULL, PRIMARY KEY (store, hour));
CREATE INDEX IF NOT EXISTS chain_funnel_hour ON chain_funnel (hour);
"""


def create_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(SCHEMA)


def month_of(t: datetime) -> tuple[int, int]:
    return t.year, t.month


def ensure_partition(conn: psycopg.Connection[Any], month: tuple[int, int]) -> None:
    y, m = month
    start = datetime(y, m, 1, tzinfo=UTC)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
    with conn.transaction():
        conn.execute(f"CREATE TABLE IF NOT EXISTS chain_events_{y:04d}_{m:02d} "
                     f"PARTITION OF chain_events FOR VALUES FROM ('{start.isoformat()}') "
                     f"TO ('{end.isoformat()}')")


@dataclass
class Written:
    stored: int = 0
    duplicates: int = 0
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    filled: int = 0


def write_batch(conn: psycopg.Connection[Any], messages: list[Message]) -> Written:
    """One transaction: the batch's new events, gap alerts, store states. Raises on any
    database error (nothing of the batch is then committed, nothing may be acknowledged)."""
    out = Written()
    events: dict[tuple[str, int], ChainEvent] = {}
    for msg in messages:
        if isinstance(msg, ChainEvent):
            events.setdefault((msg.store, msg.seq), msg)
    out.duplicates = sum(isinstance(m, ChainEvent) for m in messages) - len(events)
    with conn.transaction():
        new: list[ChainEvent] = []
        if events:
            keys = list(events)
            rows = conn.execute(
                "INSERT INTO chain_seqs (store, seq) SELECT * FROM unnest(%s::text[], %s::bigint[]) "
                "ON CONFLICT DO NOTHING RETURNING store, seq",
                ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
            new = [events[(r[0], r[1])] for r in rows]
            out.duplicates += len(events) - len(new)
        if new:
            conn.execute(
                "INSERT INTO chain_events (store, seq, stream_id, type, device, t, data) "
                "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[], "
                "%s::text[], %s::timestamptz[], %s::jsonb[])",
                ([e.store for e in new], [e.seq for e in new], [e.stream_id for e in new],
                 [e.type for e in new], [e.device for e in new], [e.t for e in new],
                 [json.dumps(e.data, separators=(",", ":")) for e in new]))
            out.stored = len(new)
            by_store: dict[str, list[int]] = defaultdict(list)
            for e in new:
                by_store[e.store].append(e.seq)
            for store in sorted(by_store):
                _seqs(conn, store, sorted(by_store[store]), out)
            _stock(conn, new)
            _funnel(conn, new)
        for msg in messages:
            if isinstance(msg, BridgeState):
                conn.execute(
                    "INSERT INTO chain_stores (store, bridge_up, bridge_seen) VALUES (%s, %s, now()) "
                    "ON CONFLICT (store) DO UPDATE SET bridge_up = excluded.bridge_up, "
                    "bridge_seen = excluded.bridge_seen", (msg.store, msg.up))
            elif isinstance(msg, GatewayState):
                conn.execute(
                    "INSERT INTO chain_stores (store, gateway_state, state_seen) "
                    "VALUES (%s, %s::jsonb, now()) ON CONFLICT (store) DO UPDATE SET "
                    "gateway_state = excluded.gateway_state, state_seen = excluded.state_seen",
                    (msg.store, json.dumps(msg.state)))
    return out


def _stock(conn: psycopg.Connection[Any], new: list[ChainEvent]) -> None:
    """The batch's new stock reports into `chain_stock`, the latest (by seq) per (store, gtin);
    deduplicated here first (one statement may not update a row twice)."""
    latest: dict[tuple[str, str], tuple[int, datetime, int, int]] = {}
    for e in new:
        for line in e.stock:
            k = (e.store, line.gtin)
            if k not in latest or latest[k][0] < e.seq:
                latest[k] = (e.seq, e.t, line.floor, line.stockroom)
    if not latest:
        return
    keys = sorted(latest)
    conn.execute(
        "INSERT INTO chain_stock (store, gtin, seq, t, floor, stockroom) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::timestamptz[], "
        "%s::integer[], %s::integer[]) "
        "ON CONFLICT (store, gtin) DO UPDATE SET seq = excluded.seq, t = excluded.t, "
        "floor = excluded.floor, stockroom = excluded.stockroom WHERE chain_stock.seq < excluded.seq",
        ([k[0] for k in keys], [k[1] for k in keys], [latest[k][0] for k in keys],
         [latest[k][1] for k in keys], [latest[k][2] for k in keys], [latest[k][3] for k in keys]))


def _funnel(conn: psycopg.Connection[Any], new: list[ChainEvent]) -> None:
    """The batch's new hour reports into `chain_funnel`, the latest (by seq) per (store, hour)."""
    latest: dict[tuple[str, datetime], tuple[int, tuple[int, ...]]] = {}
    for e in new:
        if e.hour is not None:
            k = (e.store, e.hour.hour)
            if k not in latest or latest[k][0] < e.seq:
                latest[k] = (e.seq, e.hour.counts)
    if not latest:
        return
    keys = sorted(latest)
    cols = ", ".join(FUNNEL_COLS)
    conn.execute(
        f"INSERT INTO chain_funnel (store, hour, seq, {cols}) "
        "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[], "
        + ", ".join(["%s::bigint[]"] * len(FUNNEL_COLS)) + ") "
        "ON CONFLICT (store, hour) DO UPDATE SET seq = excluded.seq, "
        + ", ".join(f"{c} = excluded.{c}" for c in FUNNEL_COLS)
        + " WHERE chain_funnel.seq < excluded.seq",
        ([k[0] for k in keys], [k[1] for k in keys], [latest[k][0] for k in keys],
         *([latest[k][1][i] for k in keys] for i in range(len(FUNNEL_COLS)))))


def funnel(conn: psycopg.Connection[Any], start: int, end: int, size: int
           ) -> tuple[list[tuple[int, ...]], list[tuple[Any, ...]]]:
    """The chain's funnel over [start, end) (unix ms, whole hours): per bucket of `size` ms
    (bucket index, *FUNNEL_COLS summed over every store), and per store its totals
    (store, *FUNNEL_COLS)."""
    sums = ", ".join(f"SUM({c})" for c in FUNNEL_COLS)
    where = "hour >= to_timestamp(%s / 1000.0) AND hour < to_timestamp(%s / 1000.0)"
    buckets = conn.execute(
        f"SELECT ((extract(epoch FROM hour) * 1000)::bigint - %s) / %s AS b, {sums} "
        f"FROM chain_funnel WHERE {where} GROUP BY b ORDER BY b",
        (start, size, start, end)).fetchall()
    stores = conn.execute(f"SELECT store, {sums} FROM chain_funnel WHERE {where} "
                          "GROUP BY store ORDER BY store", (start, end)).fetchall()
    return ([tuple(int(v) for v in r) for r in buckets], [tuple(r) for r in stores])


def availability(conn: psycopg.Connection[Any], gtins: list[str]
                 ) -> dict[str, dict[str, dict[str, int]]]:
    """{gtin: {store: {"floor", "stockroom", "at" (unix ms of the store's report)}}}; a GTIN
    no store reported maps to {}."""
    out: dict[str, dict[str, dict[str, int]]] = {g: {} for g in gtins}
    rows = conn.execute("SELECT gtin, store, floor, stockroom, t FROM chain_stock "
                        "WHERE gtin = ANY(%s::text[]) ORDER BY gtin, store", (gtins,)).fetchall()
    for gtin, store, floor, stockroom, t in rows:
        out[gtin][store] = {"floor": floor, "stockroom": stockroom,
                            "at": int(t.timestamp() * 1000)}
    return out


def _seqs(conn: psycopg.Connection[Any], store: str, seqs: list[int], out: Written) -> None:
    """`seqs`: the store's new seqs of this batch, sorted. Above the high-water mark they may
    open gaps; below it they fill them."""
    conn.execute("INSERT INTO chain_stores (store) VALUES (%s) ON CONFLICT DO NOTHING", (store,))
    row = conn.execute("SELECT high_seq FROM chain_stores WHERE store = %s FOR UPDATE",
                       (store,)).fetchone()
    high = int(row[0]) if row else 0
    prev = high
    for s in seqs:
        if s <= high:   # a late one: fills an open gap (the ledger made sure it is new)
            r = conn.execute(
                "UPDATE chain_gaps SET missing = missing - 1, "
                "closed = CASE WHEN missing = 1 THEN now() END "
                "WHERE store = %s AND first_seq <= %s AND last_seq >= %s AND closed IS NULL",
                (store, s, s))
            out.filled += r.rowcount
            continue
        if s > prev + 1:
            conn.execute("INSERT INTO chain_gaps (store, first_seq, last_seq, missing) "
                         "VALUES (%s, %s, %s, %s)", (store, prev + 1, s - 1, s - 1 - prev))
            out.gaps.append((store, prev + 1, s - 1))
        prev = s
    if prev > high:
        conn.execute("UPDATE chain_stores SET high_seq = %s WHERE store = %s", (prev, store))
