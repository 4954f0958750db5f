"""Analytics over a synthetic busy store: how long each `GET /analytics/...` query takes (p50,
p99) and how long the analytics page takes to paint, over `--days` of data (default a year).

    .venv/bin/python -m bench.analytics                 # 365 days (a few minutes)
    .venv/bin/python -m bench.analytics --days 30 --no-page

1. Builds a gateway database (migrations, then the analytics tier's own write paths): per day
   ~2,500 entries (a door counter's per-minute totals through `set_entries`), ~400 receipts
   (`record_purchases`), and stream items as the kinds write them, folded by `fold_tx` as the
   gateway does: ~1,500 pad placements and lifts over 40 pads and 2,000 products, ~300
   fitting-room sessions, ~80 locker orders, ~60 tube dispatches, device online/offline and
   critical alerts for 60 devices. Prints the build and fold rates.
2. Each query (`gateway.analytics.queries`, the functions the routes call, on one reader
   connection) over random ranges: a day by hour, a week, a month and a year by day; p50/p99.
3. The page: a real gateway process on that database and headless Chromium (Debian's
   `chromium`); navigation start to every figure drawn (`body[data-ready=1]`), for 1, 30
   and 365 days.
Prints `key: value` figure lines; nothing here passes or fails.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from gateway.analytics import queries
from gateway.analytics.ledger import record_purchases, set_entries
from gateway.analytics.rollup import DAY, HOUR, fold_tx
from gateway.storage.store import Store, connect, migrate

D0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MIN = 60_000


def gtins(n: int) -> list[str]:
    from gateway.kinds.fitting_room import gs1
    out = []
    for i in range(n):
        body = f"095060{i:07d}"
        out.append((body + str(gs1.check_digit(body))).zfill(14))
    return out


def build(path: Path, days: int, seed: int = 1) -> dict[str, float]:
    rnd = random.Random(seed)
    conn = connect(path)
    migrate(conn)
    store = Store(conn)
    products = gtins(2000)
    pads = [f"pad-{i}" for i in range(40)]
    devs = pads + [f"room-{i}" for i in range(8)] + [f"lk-{i}" for i in range(4)] + \
        [f"tube-{i}" for i in range(8)]
    with store.transaction():
        for d in devs:
            kind = "sample-pad" if d.startswith("pad") else "fitting-room" if d.startswith("room") \
                else "locker-bank" if d.startswith("lk") else "tube-station"
            store.upsert_device(id=d, kind=kind, fw="1", caps=[], cfg="x", session=1, epoch="e",
                                boot=1, reset=None, online=True, now=D0)
    items = folded = 0
    t_build = t_fold = 0.0
    alert_id = 0
    for day in range(days):
        base = D0 + day * DAY
        opening, closing = base + 8 * HOUR, base + 21 * HOUR
        t0 = time.perf_counter()
        with store.transaction():
            for m in range(opening, closing, MIN):
                set_entries(store, "door-1", m, rnd.choice((0, 1, 2, 3, 4, 5, 6)))
            receipts = []
            for r in range(400):
                at = rnd.randrange(opening, closing)
                receipts.append({"receipt": f"R{day}-{r}", "at": at, "lines": [
                    {"gtin": rnd.choice(products[:600]), "qty": rnd.choice((1, 1, 1, 2)),
                     "sessions": []} for _ in range(rnd.choice((1, 1, 2, 3)))]})
            record_purchases(store, receipts, "csv", base)
            stream: list[tuple[str, dict]] = []
            for _ in range(1500):
                at, pad = rnd.randrange(opening, closing), rnd.choice(pads)
                stream.append(("event", {"device": pad, "type": "tag.placed", "t_device": at,
                                         "t_gateway": at, "body": {"uid": "04aa", "sample": rnd.choice(products)}}))
                stream.append(("event", {"device": pad, "type": "tag.removed",
                                         "t_device": at + 9000, "t_gateway": at + 9000,
                                         "body": {"uid": "04aa", "held_ms": rnd.randrange(1000, 60000)}}))
            for _ in range(300):
                at = rnd.randrange(opening, closing)
                stream.append(("fitting", {"type": "fitting.session.closed", "room": "room-1", "at": at,
                                           "duration_ms": rnd.randrange(MIN, 20 * MIN),
                                           "tried": rnd.sample(products[:800], rnd.choice((1, 2, 3)))}))
            for o in range(80):
                at = rnd.randrange(opening, closing) / 1000
                stream.append(("locker", {"type": "order.ready", "bank": "lk-1", "order": f"o{day}-{o}", "at": at}))
                if rnd.random() < .9:
                    stream.append(("locker", {"type": "order.collected", "bank": "lk-1", "order": f"o{day}-{o}",
                                              "old": "ready", "at": at + rnd.randrange(600, 200_000)}))
                else:
                    stream.append(("locker", {"type": "order.expired", "bank": "lk-1", "order": f"o{day}-{o}",
                                              "old": "ready", "at": at + 259_200}))
            for j in range(60):
                at = rnd.randrange(opening, closing) / 1000
                for k, st in enumerate(("queued", "in_transit", "delivered")):
                    stream.append(("tube", {"type": f"dispatch.{st}", "job": f"j{day}-{j}",
                                            "at": at + k * rnd.randrange(5, 60)}))
            for d in devs:
                stream.append(("device", {"change": "online", "id": d, "online": True, "last_seen": opening - HOUR}))
                stream.append(("device", {"change": "offline", "id": d, "online": False, "last_seen": closing + HOUR}))
            for _ in range(3):
                alert_id += 1
                d, at = rnd.choice(devs), rnd.randrange(opening, closing)
                stream.append(("alert", {"change": "raised", "id": alert_id, "severity": "critical",
                                         "device": d, "created": at}))
                stream.append(("alert", {"change": "resolved", "id": alert_id, "severity": "critical",
                                         "device": d, "resolved_at": at + rnd.randrange(MIN, HOUR)}))
            for kind, data in stream:
                store.append_stream(kind, data)
            store.take_outbox()
            items += len(stream)
        t_build += time.perf_counter() - t0
        t0 = time.perf_counter()
        while n := fold_tx(store):
            folded += n
        t_fold += time.perf_counter() - t0
        store.conn.execute("DELETE FROM stream")  # the gateway prunes it too (stream_keep)
    conn.close()
    return {"items": items, "folded": folded, "build_s": t_build, "fold_s": t_fold,
            "db_mb": path.stat().st_size / 1e6}


def bench_queries(path: Path, days: int, reps: int) -> dict[str, tuple[float, float]]:
    conn = connect(path, readonly=True)
    store = Store(conn)
    rnd = random.Random(2)
    end_all = D0 + days * DAY
    shapes = [("day/hour", DAY, "hour"), ("week", 7 * DAY, "day"), ("month", 30 * DAY, "day"),
              ("year", min(365, days) * DAY, "day")]
    out = {}
    for label, span, bucket in shapes:
        for name in ("funnel", "products", "devices", "tube", "lockers"):
            times = []
            for _ in range(reps):
                start = D0 + rnd.randrange(0, max(1, (end_all - span - D0) // HOUR + 1)) * HOUR
                t0 = time.perf_counter()
                if name == "funnel":
                    queries.funnel(store, start, start + span, bucket)
                elif name == "products":
                    queries.products(store, start, start + span)
                elif name == "devices":
                    queries.devices(store, start, start + span, now=end_all)
                else:
                    getattr(queries, name)(store, start, start + span)
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            out[f"{name} {label}"] = (statistics.median(times), times[max(0, int(len(times) * .99) - 1)])
    conn.close()
    return out


def bench_page(workdir: Path, days: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    from hil.harness import GatewayProcess, Mosquitto
    broker = Mosquitto(workdir / "mosquitto").start()
    gw = GatewayProcess(workdir / "gw", broker.port)
    (workdir / "gw").mkdir(exist_ok=True)
    os.replace(workdir / "analytics.db", gw.db)
    gw.start()
    out = {}
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=os.environ.get("PE_CHROMIUM", "/usr/bin/chromium"),
                                   headless=True, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                        "--disable-background-networking"])
            page = b.new_page(viewport={"width": 1600, "height": 1000})
            last_day = time.strftime("%Y-%m-%d", time.gmtime((D0 + (days - 1) * DAY) / 1000))
            first = time.strftime("%Y-%m-%d", time.gmtime(D0 / 1000))
            for n, day in ((1, last_day), (30, first), (365, first)):
                runs: list[float] = []
                own: list[float] = []
                for run in range(5):
                    t0 = time.perf_counter()
                    # `run` makes each URL new: the same URL again would be a same-document
                    # (fragment) navigation, with the figures already drawn
                    page.goto(f"{gw.url}/dashboard/analytics?day={day}&days={n}&run={run}"
                              f"#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
                    page.wait_for_function("document.body.dataset.ready === '1' && "
                                           "document.querySelector('#chart-hourly svg') !== null",
                                           timeout=60_000)
                    runs.append((time.perf_counter() - t0) * 1000)
                    own.append(float(page.evaluate("document.body.dataset.paintMs")))
                out[f"page {n} day(s)"] = statistics.median(runs)
                out[f"page {n} day(s), fetch to drawn"] = statistics.median(own)
                out[f"page {n} day(s), hourly bars"] = page.locator("#chart-hourly rect.bar").count()
            b.close()
    finally:
        gw.stop()
        broker.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--no-page", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "analytics.db"
        b = build(path, args.days)
        print(f"days: {args.days}")
        print(f"stream items folded: {b['folded']} ({b['folded'] / b['fold_s']:.0f} items/s fold, "
              f"build {b['build_s']:.0f} s)")
        print(f"database: {b['db_mb']:.0f} MB")
        for name, (p50, p99) in bench_queries(path, args.days, args.reps).items():
            print(f"query {name}: p50 {p50:.1f} ms p99 {p99:.1f} ms")
        if not args.no_page:
            for name, ms in bench_page(Path(tmp), args.days).items():
                print(f"{name}: {ms:.0f}" + ("" if "bars" in name else " ms (median of 5)"))
        print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
