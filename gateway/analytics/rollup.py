"""The fold: stream items -> rollup rows, on the writer thread, in ONE transaction with the
cursor (`an_meta.cursor`, the last stream id folded): a crash or restart neither loses nor
counts an item twice, and running it again with nothing new changes nothing.

What each item counts (times are the item's own, never the time of the fold):

* `event` `tag.placed` of a `sample-pad`: a placement in its hour; the product is the tag's
  `gtin` if it has one, else the GTIN the catalog gives its sample (`samples.gtin`), else its
  `sample` id, else `uid:<uid>`. `tag.removed`: its `held_ms` is the dwell,
  counted in the hour of the removal, for the product placed on that pad.
* `fitting` `fitting.session.closed`: a session and its try-ons (one per product tried), in
  the hour the session STARTED (`at - duration_ms`); a session counts once it has ended.
* `locker` `order.ready` (loaded), `order.collected` (dwell from loaded), `order.expired`;
  `lk_ontime` counts collections that were not after expiry (the expiry rate's denominator).
* `tube` `dispatch.*`: the first item of a job is its request time; `dispatch.delivered`
  gives request-to-delivery.
* `device` items (online from the `last_seen` of an online/birth item to the `last_seen` of
  the offline item: the last time it was heard) and `alert` items (a device is out of
  service while it has an open critical alert: `created` .. `resolved_at`) move a per-device
  state; the time between two changes goes to `online_ms`, `oos_ms` and `available_ms`
  (online and in service) of the hours (and UTC days) it covers.
"""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from gateway.storage.store import Store

HOUR = 3_600_000
DAY = 24 * HOUR
PAGE = 2000
MAX_DWELL_MS = DAY  # a `held_ms` above this is a stuck reading, not a customer

HOUR_COLS = ("entries", "placements", "pad_lifts", "pad_dwell_ms", "sessions", "try_ons",
             "purchases", "units", "lk_loaded", "lk_collected", "lk_ontime", "lk_expired",
             "lk_dwell_ms", "tube_delivered")
PRODUCT_COLS = ("placed", "pad_dwell_ms", "tried", "bought")
#: what an hour report to head office carries (the funnel's columns of an_hour)
FUNNEL_REPORT_COLS = ("entries", "placements", "pad_lifts", "pad_dwell_ms", "sessions",
                      "try_ons", "purchases", "units")
REPORT_KIND = "analytics"     # the stream (and chain) kind of an hour report
DEVICE_COLS = ("online_ms", "oos_ms", "available_ms")


def floor_hour(t: int) -> int:
    return t - t % HOUR


@lru_cache(maxsize=4096)
def _month_of_day(day: int) -> int:
    d = datetime.fromtimestamp(day // 1000, UTC)
    return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()) * 1000


def floor_month(t: int) -> int:
    """The start of `t`'s UTC calendar month (unix ms)."""
    return _month_of_day(t - t % DAY)


def ceil_month(t: int) -> int:
    """`t` if it starts a UTC month, else the start of the next one."""
    m = floor_month(t)
    return m if m == t else floor_month(m + 32 * DAY)


class Deltas:
    """Rollup increments gathered in memory, written with one upsert per row (`flush`)."""

    def __init__(self) -> None:
        self.hours: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(HOUR_COLS, 0))
        self.products: dict[tuple[str, int, str], dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(PRODUCT_COLS, 0))
        self.devices: dict[tuple[str, int, str], dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(DEVICE_COLS, 0))

    def hour(self, t: int, **add: int) -> None:
        row = self.hours[floor_hour(t)]
        for k, v in add.items():
            row[k] += v

    def product(self, t: int, product: str, **add: int) -> None:
        """Per product: its hour, UTC day and UTC calendar month rows (a year reads 12 rows)."""
        for period, key in (("h", floor_hour(t)), ("d", t - t % DAY), ("m", floor_month(t))):
            row = self.products[(period, key, product)]
            for k, v in add.items():
                row[k] += v

    def device_span(self, device: str, t0: int, t1: int, cols: tuple[str, ...]) -> None:
        """Add the time [t0, t1) to `cols` of every hour and day it covers."""
        if not cols or t1 <= t0:
            return
        for period, size in (("h", HOUR), ("d", DAY)):
            t = t0
            while t < t1:
                key = t - t % size
                end = min(t1, key + size)
                row = self.devices[(period, key, device)]
                for c in cols:
                    row[c] += end - t
                t = end

    def flush(self, store: Store) -> None:
        c = store.conn
        if self.hours:
            cols = ", ".join(HOUR_COLS)
            c.executemany(
                f"INSERT INTO an_hour (hour, {cols}) VALUES (?{', ?' * len(HOUR_COLS)}) "
                "ON CONFLICT (hour) DO UPDATE SET "
                + ", ".join(f"{k} = {k} + excluded.{k}" for k in HOUR_COLS),
                [(h, *(r[k] for k in HOUR_COLS)) for h, r in self.hours.items()])
        for table, key, cols_, rows in (("an_product", "product", PRODUCT_COLS, self.products),
                                        ("an_device_time", "device", DEVICE_COLS, self.devices)):
            if rows:
                c.executemany(
                    f"INSERT INTO {table} (period, t, {key}, {', '.join(cols_)}) VALUES "
                    f"(?, ?, ?{', ?' * len(cols_)}) ON CONFLICT (period, t, {key}) DO UPDATE SET "
                    + ", ".join(f"{k} = {k} + excluded.{k}" for k in cols_),
                    [(*k, *(r[x] for x in cols_)) for k, r in rows.items()])
        self.hours.clear()
        self.products.clear()
        self.devices.clear()


def _ms(seconds: Any) -> int:
    """Lockers and the tube stamp their items in seconds (float)."""
    return round(float(seconds) * 1000)


class _Fold:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.c = store.conn
        self.d = Deltas()
        self.kinds: dict[str, str | None] = {}
        self.devices: dict[str, dict[str, Any]] = {}  # state rows touched (written at the end)

    # -- device state ----------------------------------------------------------------------

    def _device(self, device: str, kind: str | None = None) -> dict[str, Any]:
        st = self.devices.get(device)
        if st is None:
            row = self.c.execute("SELECT kind, since, online, alerts FROM an_device WHERE "
                                 "device = ?", (device,)).fetchone()
            st = {"kind": row[0], "since": row[1], "online": bool(row[2]),
                  "alerts": json.loads(row[3])} if row else \
                {"kind": kind or self._kind(device) or "?", "since": None, "online": False,
                 "alerts": []}
            self.devices[device] = st
        if kind:
            st["kind"] = kind
        return st

    def _move(self, device: str, t: int, st: dict[str, Any]) -> None:
        """Close the span since the last change at `t` (never backwards)."""
        if st["since"] is not None and t > st["since"]:
            cols = (("online_ms",) if st["online"] else ()) + (("oos_ms",) if st["alerts"] else ())
            if st["online"] and not st["alerts"]:
                cols += ("available_ms",)
            self.d.device_span(device, st["since"], t, cols)
        st["since"] = t if st["since"] is None else max(t, st["since"])

    def device(self, data: dict[str, Any]) -> None:
        device, t = data.get("id"), data.get("at") or data.get("last_seen")
        if not isinstance(device, str) or not isinstance(t, int):
            return
        st = self._device(device, data.get("kind"))
        online = bool(data.get("online"))
        if online != st["online"] or st["since"] is None:
            self._move(device, t, st)
            st["online"] = online

    def alert(self, data: dict[str, Any]) -> None:
        device, change = data.get("device"), data.get("change")
        if data.get("severity") != "critical" or not isinstance(device, str):
            return
        st = self._device(device)
        aid = data.get("id")
        if change == "raised" and aid not in st["alerts"]:
            self._move(device, int(data.get("created") or 0), st)
            st["alerts"].append(aid)
        elif change == "resolved" and aid in st["alerts"]:
            self._move(device, int(data.get("resolved_at") or data.get("last") or 0), st)
            st["alerts"].remove(aid)

    def _sample_gtin(self, sample: Any) -> str | None:
        """The GTIN the catalog gives a sample (`samples.gtin`, storage migration 13)."""
        if not isinstance(sample, str):
            return None
        row = self.c.execute("SELECT gtin FROM samples WHERE id = ?", (sample,)).fetchone()
        return row[0] if row and row[0] else None

    def _kind(self, device: str) -> str | None:
        if device not in self.kinds:
            row = self.c.execute("SELECT kind FROM devices WHERE id = ?", (device,)).fetchone()
            self.kinds[device] = row[0] if row else None
        return self.kinds[device]

    # -- the kinds' items --------------------------------------------------------------------

    def event(self, e: dict[str, Any]) -> None:
        etype = e.get("type")
        if etype not in FOLDED_EVENTS or self._kind(str(e.get("device"))) != "sample-pad":
            return
        raw = e.get("body")
        body: dict[str, Any] = raw if isinstance(raw, dict) else {}
        at = e.get("t_device") or e.get("t_gateway")
        if not isinstance(at, int):
            return
        device = str(e["device"])
        if etype == "tag.placed":
            product = str(body.get("gtin") or self._sample_gtin(body.get("sample"))
                          or body.get("sample") or f"uid:{body.get('uid')}")
            self.d.hour(at, placements=1)
            self.d.product(at, product, placed=1)
            self.c.execute("INSERT INTO an_pad (device, product) VALUES (?, ?) ON CONFLICT "
                           "(device) DO UPDATE SET product = excluded.product", (device, product))
            return
        held = body.get("held_ms")
        row = self.c.execute("DELETE FROM an_pad WHERE device = ? RETURNING product",
                             (device,)).fetchone()
        if not isinstance(held, int) or not 0 <= held <= MAX_DWELL_MS:
            return
        self.d.hour(at, pad_lifts=1, pad_dwell_ms=held)
        if row is not None:
            self.d.product(at, row[0], pad_dwell_ms=held)

    def fitting(self, data: dict[str, Any]) -> None:
        if data.get("type") != "fitting.session.closed":
            return
        start = int(data["at"]) - int(data.get("duration_ms") or 0)
        tried = [g for g in data.get("tried") or [] if isinstance(g, str)]
        self.d.hour(start, sessions=1, try_ons=len(tried))
        for g in tried:
            self.d.product(start, g, tried=1)

    def locker(self, data: dict[str, Any]) -> None:
        t, at = data.get("type"), data.get("at")
        if t not in ("order.ready", "order.collected", "order.expired") or at is None:
            return
        key, ms = f"{data.get('bank')}:{data.get('order')}", _ms(at)
        if t == "order.ready":
            if self.c.execute("INSERT INTO an_locker (ord, loaded) VALUES (?, ?) ON CONFLICT "
                              "DO NOTHING", (key, ms)).rowcount:
                self.d.hour(ms, lk_loaded=1)
        elif t == "order.expired":
            self.c.execute("UPDATE an_locker SET expired = ? WHERE ord = ?", (ms, key))
            self.d.hour(ms, lk_expired=1)
        else:
            row = self.c.execute("UPDATE an_locker SET collected = ?, dwell_ms = ? - loaded "
                                 "WHERE ord = ? AND collected IS NULL RETURNING dwell_ms",
                                 (ms, ms, key)).fetchone()
            dwell = row[0] if row else 0
            self.d.hour(ms, lk_collected=1, lk_dwell_ms=max(0, dwell),
                        lk_ontime=int(data.get("old") != "expired"))

    def tube(self, data: dict[str, Any]) -> None:
        t, job, at = data.get("type"), data.get("job"), data.get("at")
        if not isinstance(t, str) or not t.startswith("dispatch.") or job is None or at is None:
            return
        ms = _ms(at)
        self.c.execute("INSERT INTO an_tube (job, requested) VALUES (?, ?) ON CONFLICT DO NOTHING",
                       (str(job), ms))
        if t == "dispatch.delivered" and self.c.execute(
                "UPDATE an_tube SET delivered = ?, ms = ? - requested WHERE job = ? AND "
                "delivered IS NULL", (ms, ms, str(job))).rowcount:
            self.d.hour(ms, tube_delivered=1)

    def finish(self) -> None:
        self.d.flush(self.store)
        self.c.executemany(
            "INSERT INTO an_device (device, kind, since, online, alerts) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (device) DO UPDATE SET kind = excluded.kind, since = excluded.since, "
            "online = excluded.online, alerts = excluded.alerts",
            [(dev, st["kind"], st["since"], int(st["online"]), json.dumps(st["alerts"]))
             for dev, st in self.devices.items()])


def fold_items(store: Store, items: list[tuple[str, dict[str, Any]]]) -> None:
    """Fold (kind, data) items into the rollups (inside the caller's transaction)."""
    f = _Fold(store)
    for kind, data in items:
        if kind == "event":
            f.event(data)
        elif kind == "fitting":
            f.fitting(data)
        elif kind == "locker":
            f.locker(data)
        elif kind == "tube":
            f.tube(data)
        elif kind == "device":
            f.device(data)
        elif kind == "alert":
            f.alert(data)
    f.finish()


def cursor(store: Store) -> int:
    row = store.conn.execute("SELECT value FROM an_meta WHERE name = 'cursor'").fetchone()
    return int(row[0]) if row else 0


#: the event types `_Fold.event` counts (every other event is skipped without decoding it)
FOLDED_EVENTS = ("tag.placed", "tag.removed")
_FOLDED_EVENTS_SQL = ", ".join(f"'{t}'" for t in FOLDED_EVENTS)
# an event's type: from the `tag` column (migration 23), or only from the JSON on a file older
# than that (the upgrade tests fill one with this code)
_TYPE_SQL = {True: "COALESCE(tag, json_extract(data, '$.type'))",
             False: "json_extract(data, '$.type')"}
_FOLD_SQL = {tagged: f"SELECT id, kind, CASE WHEN kind != 'event' OR {type_sql} IN "
             f"({_FOLDED_EVENTS_SQL}) THEN data END FROM stream WHERE id > ? ORDER BY id LIMIT ?"
             for tagged, type_sql in _TYPE_SQL.items()}


def fold_tx(store: Store, limit: int = PAGE) -> int:
    """Writer thread: fold the stream items after the cursor (at most `limit`) and move the
    cursor, in one transaction. Returns how many items it read."""
    with store.transaction():
        after = cursor(store)
        # every item of the page is looked at (the cursor moves past all of them), but only
        # the ones the fold counts are decoded: the events of other types (almost all of a
        # busy store's traffic) are left out in SQL, which saved ~15 % of the gateway's CPU at
        # saturated ingest (issue 18; `_Fold.event` ignores them anyway); by the `tag` column
        # (the JSON only for rows written before it: migration 23)
        rows = store.conn.execute(_FOLD_SQL[store.stream_tagged()], (after, limit)).fetchall()
        if not rows:
            return 0
        fold_items(store, [(r[1], json.loads(r[2])) for r in rows if r[2] is not None])
        store.conn.execute("INSERT INTO an_meta (name, value) VALUES ('cursor', ?) ON CONFLICT "
                           "(name) DO UPDATE SET value = excluded.value", (rows[-1][0],))
        return len(rows)


def report_hours_tx(store: Store, limit: int = PAGE) -> int:
    """The hours whose funnel figures changed (`an_hour_dirty`, kept by triggers) become
    stream items `analytics` {"type": "hour", "hour", <FUNNEL_REPORT_COLS>}: the hour's
    TOTALS, not increments, so head office keeps the latest report per (store, hour) and a
    redelivered or reordered one changes nothing (docs/chain.md "The chain-wide funnel").
    With the chain on, they reach head office through the chain outbox like any stream item.
    Inside the caller's transaction; at most `limit` hours, returns how many."""
    cols = ", ".join(FUNNEL_REPORT_COLS)
    rows = store.conn.execute(
        f"SELECT d.hour, {cols} FROM an_hour_dirty d JOIN an_hour h ON h.hour = d.hour "
        "ORDER BY d.hour LIMIT ?", (limit,)).fetchall()
    for r in rows:
        store.append_stream(REPORT_KIND, {"type": "hour", "hour": r[0],
                                          **dict(zip(FUNNEL_REPORT_COLS, r[1:]))})
    store.conn.executemany("DELETE FROM an_hour_dirty WHERE hour = ?", [(r[0],) for r in rows])
    return len(rows)
