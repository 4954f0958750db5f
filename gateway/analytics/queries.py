"""The figures, from the rollups (reader thread). Ranges are [start, end) in unix ms on whole
hours; an hour bucket is a UTC hour, a day bucket 24 hours from `start` (pass the store's
local midnight as `start` to get its days). Product and device totals read whole UTC days
from the day rows and the hours at either edge from the hour rows, so a year costs ~365 rows
per key instead of ~8,760; products also read whole UTC calendar months from month rows (a
year: 12 rows per product, plus days and hours at the edges). Rates are null when their
denominator is 0; percentiles are nearest-rank over every value in the range."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.analytics.rollup import (
    DAY,
    DEVICE_COLS,
    FUNNEL_REPORT_COLS,
    HOUR,
    PRODUCT_COLS,
    ceil_month,
    floor_month,
)
from gateway.storage.store import Store

FUNNEL_COLS = ("entries", "placements", "pad_dwell_ms", "sessions", "try_ons", "purchases",
               "units")
PRODUCT_SORTS = ("conversion", "bought", "tried_on", "placed")


def rate(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def percentile(values: list[int], p: float) -> int | None:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    if not values:
        return None
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def spans(start: int, end: int, months: bool = False) -> list[tuple[str, int, int]]:
    """[start, end) as hour rows at the edges and day rows for the whole UTC days inside;
    `months`: month rows for the whole UTC calendar months inside those days (an_product)."""
    d0, d1 = -(-start // DAY) * DAY, end - end % DAY
    if d0 >= d1:
        return [("h", start, end)]
    out = [("h", start, d0)] if start < d0 else []
    m0, m1 = ceil_month(d0), floor_month(d1)
    if months and m0 < m1:
        out += [("d", d0, m0)] if d0 < m0 else []
        out.append(("m", m0, m1))
        out += [("d", m1, d1)] if m1 < d1 else []
    else:
        out.append(("d", d0, d1))
    if d1 < end:
        out.append(("h", d1, end))
    return out


def _summed(store: Store, table: str, key: str, cols: tuple[str, ...], start: int, end: int,
            months: bool = False) -> dict[str, dict[str, int]]:
    parts, args = [], []
    for period, lo, hi in spans(start, end, months):
        parts.append(f"SELECT {key}, {', '.join(cols)} FROM {table} "
                     "WHERE period = ? AND t >= ? AND t < ?")
        args += [period, lo, hi]
    sql = (f"SELECT {key}, {', '.join(f'SUM({c})' for c in cols)} FROM "
           f"({' UNION ALL '.join(parts)}) GROUP BY {key}")
    return {r[0]: dict(zip(cols, r[1:])) for r in store.conn.execute(sql, args)}


def funnel(store: Store, start: int, end: int, bucket: str) -> dict[str, Any]:
    size = HOUR if bucket == "hour" else DAY
    # summed per bucket in SQL: a year by day hands 365 rows to Python, not 8,760 hour rows
    rows = store.conn.execute(
        f"SELECT (hour - ?) / ? AS b, {', '.join(f'SUM({c})' for c in FUNNEL_REPORT_COLS)} "
        "FROM an_hour WHERE hour >= ? AND hour < ? GROUP BY b", (start, size, start, end))
    return assemble_funnel(start, end, bucket, rows)


def assemble_funnel(start: int, end: int, bucket: str, rows: Iterable[Sequence[int]]
                    ) -> dict[str, Any]:
    """The funnel answer from per-bucket sums: `rows` are (bucket index, *FUNNEL_REPORT_COLS).
    The store's `GET /analytics/funnel` and head office's chain-wide `GET /funnel`."""
    size = HOUR if bucket == "hour" else DAY
    n = -(-(end - start) // size)
    buckets = [{"t": start + i * size, **dict.fromkeys(FUNNEL_COLS, 0)} for i in range(n)]
    total = dict.fromkeys(FUNNEL_REPORT_COLS, 0)
    for row in rows:
        b = buckets[int(row[0])]
        for c, v in zip(FUNNEL_REPORT_COLS, row[1:]):
            total[c] += int(v)
            if c in b:
                b[c] += int(v)
    e = total["entries"]
    steps = [{"step": s, "count": total[c], "of_entries": rate(total[c], e)}
             for s, c in (("entries", "entries"), ("pad placements", "placements"),
                          ("fitting-room sessions", "sessions"), ("purchases", "purchases"))]
    return {
        "start": start, "end": end, "bucket": bucket, "buckets": buckets, "steps": steps,
        "totals": {c: total[c] for c in ("entries", "placements", "pad_lifts", "pad_dwell_ms",
                                         "sessions", "try_ons", "purchases", "units")},
        "avg_pad_dwell_ms": None if not total["pad_lifts"] else
        total["pad_dwell_ms"] // total["pad_lifts"],
        "placements_per_entry": rate(total["placements"], e),
        "sessions_per_entry": rate(total["sessions"], e),
        "purchases_per_entry": rate(total["purchases"], e),
        "purchases_per_session": rate(total["purchases"], total["sessions"]),
    }


def products(store: Store, start: int, end: int, sort: str = "conversion", limit: int = 50
             ) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for p, r in _summed(store, "an_product", "product", PRODUCT_COLS, start, end, months=True).items():
        rows.append({"product": p, "placed": r["placed"], "pad_dwell_ms": r["pad_dwell_ms"],
                     "tried_on": r["tried"], "bought": r["bought"],
                     "try_on_conversion": rate(r["bought"], r["tried"]),
                     "pad_conversion": rate(r["bought"], r["placed"])})
    if sort == "conversion":
        rows.sort(key=lambda r: (r["try_on_conversion"] is None, -(r["try_on_conversion"] or 0),
                                 -r["bought"], r["product"]))
    else:
        rows.sort(key=lambda r: (-r[sort], r["product"]))
    return {"start": start, "end": end, "sort": sort, "count": len(rows),
            "products": rows[:limit]}


def devices(store: Store, start: int, end: int, now: int) -> dict[str, Any]:
    got = _summed(store, "an_device_time", "device", DEVICE_COLS, start, end)
    elapsed = max(0, min(end, now) - start)  # the future is not "offline"
    out = []
    for dev, kind, since, online, alerts in store.conn.execute(
            "SELECT device, kind, since, online, alerts FROM an_device ORDER BY device"):
        r = dict(got.get(dev) or dict.fromkeys(DEVICE_COLS, 0))
        if since is not None:  # the span still open: up to now
            lo, hi = max(since, start), min(now, end)
            if hi > lo:
                oos = alerts != "[]"
                r["online_ms"] += (hi - lo) * bool(online)
                r["oos_ms"] += (hi - lo) * oos
                r["available_ms"] += (hi - lo) * (bool(online) and not oos)
        out.append({"device": dev, "kind": kind,
                    "online_min": round(r["online_ms"] / 60_000, 1),
                    "out_of_service_min": round(r["oos_ms"] / 60_000, 1),
                    "available_min": round(r["available_ms"] / 60_000, 1),
                    "availability": rate(r["available_ms"], elapsed)})
    return {"start": start, "end": end, "minutes": round(elapsed / 60_000, 1), "devices": out}


def tube(store: Store, start: int, end: int) -> dict[str, Any]:
    ms = [r[0] for r in store.conn.execute(
        "SELECT ms FROM an_tube WHERE delivered >= ? AND delivered < ? ORDER BY ms", (start, end))]
    return {"start": start, "end": end, "deliveries": len(ms), "p50_ms": percentile(ms, 50),
            "p90_ms": percentile(ms, 90), "p99_ms": percentile(ms, 99),
            "max_ms": ms[-1] if ms else None}


def lockers(store: Store, start: int, end: int) -> dict[str, Any]:
    s = store.conn.execute("SELECT COALESCE(SUM(lk_loaded), 0), COALESCE(SUM(lk_collected), 0), "
                           "COALESCE(SUM(lk_ontime), 0), COALESCE(SUM(lk_expired), 0), "
                           "COALESCE(SUM(lk_dwell_ms), 0) FROM an_hour WHERE hour >= ? AND "
                           "hour < ?", (start, end)).fetchone()
    loaded, collected, ontime, expired, dwell = s
    ds = [r[0] for r in store.conn.execute(
        "SELECT dwell_ms FROM an_locker WHERE collected >= ? AND collected < ? ORDER BY dwell_ms",
        (start, end))]
    return {"start": start, "end": end, "loaded": loaded, "collected": collected,
            "expired": expired, "expiry_rate": rate(expired, expired + ontime),
            "dwell_avg_ms": dwell // collected if collected else None,
            "dwell_p50_ms": percentile(ds, 50), "dwell_p90_ms": percentile(ds, 90)}


# -- CSV exports ---------------------------------------------------------------------------

def csv_rows(figure: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a figure's CSV export has (one per bucket, product, device; one for a summary)."""
    if figure == "funnel":
        return data["buckets"]
    if figure == "steps":
        return data["steps"]
    if figure in ("products", "devices"):
        return data[figure]
    return [data]


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    cols = columns or (list(rows[0]) if rows else [])
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return out.getvalue()


COLUMNS: dict[str, list[str]] = {
    "funnel": ["t", *FUNNEL_COLS],
    "steps": ["step", "count", "of_entries"],
    "products": ["product", "placed", "pad_dwell_ms", "tried_on", "bought", "try_on_conversion",
                 "pad_conversion"],
    "devices": ["device", "kind", "online_min", "out_of_service_min", "available_min",
                "availability"],
    "tube": ["start", "end", "deliveries", "p50_ms", "p90_ms", "p99_ms", "max_ms"],
    "lockers": ["start", "end", "loaded", "collected", "expired", "expiry_rate", "dwell_avg_ms",
                "dwell_p50_ms", "dwell_p90_ms"],
}


def export(figure: str, data: dict[str, Any]) -> str:
    return to_csv(csv_rows(figure, data), COLUMNS[figure])
