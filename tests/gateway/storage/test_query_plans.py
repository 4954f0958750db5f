"""Reads that cannot starve each other (issue 17): every API read of a growing table is an index
search on all of its filters, or a walk that stops after `limit` rows. All API reads share one
reader thread, so one filter the indexes do not cover (`/events?device&type`, 544 ms at 20M
events) delays every other read.

The SQL is not copied here: each read runs through the function its route calls, on a
connection that records what it executes; then SQLite's `EXPLAIN QUERY PLAN` of each statement
is checked. A new filter added to a route without a covering index, or a rewrite of a query that
loses its index, fails this test."""
import itertools
import re

import pytest

from gateway.devices.alerts import list_alerts
from gateway.http.auth import read_audit
from gateway.integrations import chain, webhooks
from gateway.integrations.metrics import _db_snapshot
from gateway.kinds.fitting_room import MIGRATIONS as FITTING
from gateway.kinds.fitting_room.service import requests_page
from gateway.storage.store import Store, connect, connect_all, migrate, migrate_kind

# tables that grow with the store's traffic (retention bounds them in days, not in rows)
GROWING = {"events", "commands", "audit", "alerts", "webhook_deliveries", "chain_outbox",
           "stream", "purchases", "fitting_requests", "event_hours"}


class Recording:
    """A connection that remembers every statement (and its arguments) it executes."""

    def __init__(self, conn):
        self.conn, self.seen = conn, []

    def execute(self, sql, args=()):
        self.seen.append((sql, tuple(args)))
        return self.conn.execute(sql, args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def _plan(conn, sql, args):
    return [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]


# (what the API offers, the read its route makes, the columns it filters on by equality,
#  why a full walk is bounded when there is no filter)
def _reads():
    for device, type_ in itertools.product((None, "pad-1"), (None, "tag.placed")):
        cols = [c for c, v in (("device", device), ("type", type_)) if v]
        yield (f"GET /events device={device} type={type_}", "events",
               lambda s, d=device, t=type_: Store.list_events(s, device=d, type=t, after=5,
                                                              limit=100), cols)
    for who in (None, "oms"):
        yield (f"GET /audit who={who}", "audit",
               lambda s, w=who: read_audit(s, 5, 100, w), ["who"] if who else [])
    for state in (None, "open", "acked", "resolved", "all"):
        yield (f"GET /alerts state={state}", "alerts",
               lambda s, st=state: list_alerts(s, st, 200),
               ["state"] if state != "all" else [])
    for status in (None, "pending", "delivered"):
        yield (f"GET /webhooks/{{id}}/deliveries status={status}", "webhook_deliveries",
               lambda s, st=status: webhooks.list_deliveries(s, "wh-a", st, 5, 100),
               ["sub", "status"] if status else ["sub"])
    yield ("GET /webhooks (per subscription: its queue head)", "webhook_deliveries",
           lambda s: webhooks.list_subscriptions(s), ["sub", "status"])
    for state, room in itertools.product((None, "open"), (None, "room-1")):
        yield (f"GET /fitting/requests state={state} room={room}", "fitting_requests",
               lambda s, st=state, r=room: requests_page(s, st, r, 5, 100),
               [c for c, v in (("state", state), ("room", room)) if v])
    for device, type_, after in itertools.product((None, "pad-1"), (None, "tag.placed"),
                                                  (None, (7200000, "pad-1", "tag.placed"))):
        yield (f"GET /events/hours device={device} type={type_} after={after is not None}",
               "event_hours",
               lambda s, d=device, t=type_, a=after: Store.event_hours_page(
                   s, since=0, until=10 * 86_400_000, device=d, type=t, after=a, limit=100),
               [c for c, v in (("device", device), ("type", type_)) if v])
    yield ("GET /commands/{id}", "commands", lambda s: Store.get_command(s, "c-1"), ["id"])
    yield ("GET /stats, GET /metrics", None, lambda s: (_db_snapshot(s), webhooks.backlog(s),
                                                        chain._count(s)), [])


READS = list(_reads())
# An ORDER BY sort is allowed where what it sorts is bounded by something else than the
# table's age: the open and acked alerts (one per key: device x rule).
# (what -> the FROM of the one statement allowed to sort)
SORT_OK = {"GET /alerts state=None": "FROM alerts"}
# ... and the events not counted into event_hours yet, which GET /events/hours groups by hour: a
# rowid range above the fold's cursor, at most gateway.http.hours.MAX_LAG rows (503 beyond);
# its read of event_hours itself must not sort
SORT_OK |= {r[0]: "FROM events" for r in READS if r[0].startswith("GET /events/hours")}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    conn = connect_all(tmp_path_factory.mktemp("plans") / "gw.db")  # the command file too
    migrate_kind(conn, "fitting", FITTING)
    conn.execute("INSERT INTO webhook_subscriptions (id, url, secret, events, created) "
                 "VALUES ('wh-a', 'http://x/', 's', '[\"*\"]', 1)")
    conn.execute("INSERT INTO webhook_deliveries (sub, stream_id, type, data, created, next_at) "
                 "VALUES ('wh-a', 1, 'event.x', '{}', 1, 1)")
    yield conn
    conn.close()


def _check(conn, what, table, read, cols):
    rec = Recording(conn)
    read(Store(rec))  # type: ignore[arg-type]
    problems = []
    for sql, args in rec.seen:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        for step in _plan(conn, sql, args):
            m = re.match(r"(SCAN|SEARCH) (\w+)(?: USING (.*))?", step)
            if step.startswith("USE TEMP B-TREE") and SORT_OK.get(what, "\0") not in sql \
                    and any(re.search(rf"\b{t}\b", sql) for t in GROWING):
                problems.append(f"{what}: sorts rows it does not bound: {step} in {sql!r}")
            if not m or m.group(2) not in GROWING:
                continue
            kind, name, using = m.group(1), m.group(2), m.group(3) or ""
            filtered = name == table and cols
            if kind == "SCAN" and (filtered or "WHERE" in sql.upper().split(name.upper(), 1)[-1]
                                   and name != table):
                problems.append(f"{what}: full scan of {name}: {step} in {sql!r}")
            if kind == "SEARCH" and filtered:
                missing = [c for c in cols if not re.search(rf"\b{c}=\?", using)
                           and not (c == "id" and "PRIMARY KEY" in using)]
                if missing:
                    problems.append(f"{what}: {step} checks {missing} row by row "
                                    f"(no index on them) in {sql!r}")
            if kind == "SCAN" and not filtered and name == table and "LIMIT" not in sql.upper():
                problems.append(f"{what}: unbounded walk of {name}: {step} in {sql!r}")
    return problems


@pytest.mark.parametrize("what,table,read,cols", READS, ids=[r[0] for r in READS])
def test_every_api_filter_is_an_index_search_or_a_bounded_walk(store, what, table, read, cols):
    assert _check(store, what, table, read, cols) == []


def test_the_check_catches_a_filter_without_an_index(tmp_path):
    """The rule itself: `/events?device&type` on the old index (device, id) is refused, and so
    is a scan."""
    conn = connect(tmp_path / "gw.db")
    migrate(conn)
    conn.execute("DROP INDEX events_by_device_type")
    found = _check(conn, "events device+type", "events",
                   lambda s: Store.list_events(s, device="pad-1", type="tag.placed"),
                   ["device", "type"])
    assert len(found) == 1 and "checks ['type'] row by row (no index on them)" in found[0], found
    found = _check(conn, "a scan", "events",
                   lambda s: s.conn.execute("SELECT * FROM events WHERE body = ?", ("x",)),
                   ["body"])
    assert len(found) == 1 and "full scan of events" in found[0], found
    conn.close()
