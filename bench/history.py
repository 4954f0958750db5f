"""History in tables (issue 17): what a fitting purchase and a locker order cost at day 1 and
day 365 of history, and what an idle gateway with 4 banks x 15,000 orders uses.

    .venv/bin/python bench/history.py --against /work/main      # interleaved with main
    .venv/bin/python bench/history.py --quick                   # a smoke run (small history)

A store's history is synthesized in the storage format of the code from BEFORE the history
tables (main at 8c8a308: the fitting rooms' state in one JSON row, every locker order inside its
bank's row), as a gateway that ran that long wrote it; both codes open that same file: the old
one as it is, this one splits it into its tables at the first start (that start is timed and
printed: the upgrade's one-off cost). Assumptions, printed at the start: `--rooms` fitting rooms,
`--sessions` sessions and `--receipts` receipts a day (the issue measured ~0.41 MB of fitting
JSON a day), 1 in 8 sessions with a size request, 12 door counts a day; `--banks` banks of 24
compartments, `--orders-a-day` orders a bank a day, all collected (4 x 15,000 at day 365 with the
defaults).

For each round, each code (`--against` first, then this tree) and each history size (1 day,
365 days): a copy of the synthesized database, `python -m gateway` on it with a Mosquitto (its
first start, timed: the upgrade), stopped and started again (timed), then
* `POST /fitting/purchases`: `--purchases` receipts of 2 lines, one after the other, latency
  p50/p99 (the analytics tier records the receipt, the fitting rooms attribute it);
* `POST /lockers/{bank}/orders`: `--assigns` orders a bank, one after the other, p50/p99;
* idle CPU: `--settle` s after the last request, the gateway's CPU time over `--idle` s (no
  device, no client), as a share of one core; and its RSS.
Goals (issue 17): day 365 within +-20% of day 1; idle < 2% of a core. Figures only, never
asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx

import hil.harness  # noqa: F401  (the admin token on every httpx call)
from bench.ingest import BenchBroker, BenchGateway, machine, proc_cpu_s
from gateway.kinds.fitting_room import gs1
from gateway.storage.store import connect, migrate

DAY = 86_400_000
# the synthesized history ends an hour before the bench starts (the gateways run on the real
# clock: what is in the past for them must be in the past here)
T_END = int(time.time() * 1000) - 3_600_000
COMPARTMENTS = [(i, "SML"[(i - 1) // 8]) for i in range(1, 25)]


def gtin(i: int) -> str:
    body = f"095060{i:07d}"
    return body + str(gs1.check_digit(body))


CATALOGUE = [gtin(i) for i in range(1, 301)]


# -- the old storage format ---------------------------------------------------------------------

def fitting_state(days: int, a: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """`FittingRooms.to_dict()` of a store that ran `days` days (the old code's `fitting` row)."""
    rooms = [f"room-{i}" for i in range(1, a.rooms + 1)]
    sessions: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    purchases: list[dict[str, Any]] = []
    footfall: list[list[int]] = []
    n = 0
    for d in range(days):
        day0 = T_END - (days - d) * DAY + 9 * 3_600_000
        by_gtin: dict[str, list[dict[str, Any]]] = {}   # the day's sessions, by product tried
        for k in range(a.sessions):
            n += 1
            start = day0 + k * (12 * 3_600_000 // a.sessions)
            tried = rng.sample(CATALOGUE, rng.randint(1, 4))
            s = {"id": f"s-{n}", "room": rooms[k % len(rooms)], "start": start,
                 "end": start + rng.randint(3, 15) * 60_000, "why": "occupied", "tried": tried,
                 "items": {f"{g}/SN{n}-{j}": {"gtin": g, "ins": 1, "outs": 1}
                           for j, g in enumerate(tried)},
                 "swaps": [], "alerted": False, "converted": []}
            sessions[s["id"]] = s
            for g in tried:
                by_gtin.setdefault(g, []).append(s)
            if k % 8 == 0:
                n += 1
                want = rng.choice(CATALOGUE)
                requests[f"r-{n}"] = {
                    "id": f"r-{n}", "room": s["room"], "kind": "size", "state": "done",
                    "created": start + 60_000, "updated": start + 240_000, "reason": "delivered",
                    "via": "staff", "history": [["open", start + 60_000], ["done", start + 240_000]],
                    "session": s["id"], "gtin": want, "instead_of": tried[0], "where": "stockroom"}
        for k in range(a.receipts):
            at = day0 + k * (12 * 3_600_000 // a.receipts)
            lines = []
            for g in rng.sample(CATALOGUE, rng.randint(1, 3)):
                conv = [s for s in by_gtin.get(g, ()) if g not in s["converted"]
                        and at - 7_200_000 <= s["end"] <= at][-1:]
                for s in conv:
                    s["converted"].append(g)
                lines.append({"gtin": g, "qty": 1, "sessions": [s["id"] for s in conv]})
            purchases.append({"receipt": f"R{d}-{k}", "at": at, "lines": lines})
        footfall += [[day0 + h * 3_600_000, rng.randint(20, 120)] for h in range(12)]
    return {"rules": {"swap_n": 3, "swap_window_ms": 600_000, "attribution_ms": 7_200_000},
            "rooms": {r: {"occupied": False, "session": None, "garments": {}, "occupied_since": None}
                      for r in rooms},
            "sessions": sessions, "requests": requests, "purchases": purchases,
            "footfall": footfall, "n": n}


def bank_state(bank: str, days: int, a: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """`{"bank": LockerBank.to_dict(), "meta"}` of a bank that ran `days` days (the old row):
    every order collected, its verifier still in `macs`, its set_order key in `code_cmd`."""
    orders, macs, code_cmd = [], {}, {}
    for i in range(days * a.orders_a_day):
        t = (T_END - days * DAY + i * (DAY // a.orders_a_day)) / 1000
        oid, mac = f"{bank}-o{i}", secrets.token_hex(32)
        cid = COMPARTMENTS[i % len(COMPARTMENTS)][0]
        orders.append({"id": oid, "size": "S", "compartment_id": cid, "state": "collected",
                       "assigned_at": t, "reserve_until": t + 14_400, "ready_at": t + 3_600,
                       "pickup_until": t + 3_600 + 259_200, "code_mac": mac,
                       "code_used_at": t + 7_200, "needs_code": False, "closed_at": t + 7_200})
        macs[mac] = oid
        code_cmd[oid] = f"lk:{oid}:set_order:{mac[:16]}"
    ops = {f"reissue-{o['id']}": {"op": f"reissue {o['id']}", "result": {
        "order": o["id"], "compartment": o["compartment_id"], "state": "ready",
        "expires_at": o["pickup_until"], "ready_id": secrets.token_hex(8)}}
        for o in orders[-min(500, len(orders) // 30 + 1):]}
    return {"bank": {
        "id": bank, "salt": bank, "reserve_s": 14_400.0, "pickup_window_s": 259_200.0,
        "code_digits": 6,
        "lockout": {"after": 3, "window_s": 300.0, "lock_s": [600.0, 1200.0, 1800.0], "reset_s": 3600.0},
        "lockout_state": {"failures": [], "level": 0, "until": None, "last_failure": None},
        "compartments": [{"id": c, "size": s, "order_id": None, "out_of_order": False, "blocked": None}
                         for c, s in COMPARTMENTS],
        "orders": orders, "verifier": "hmac-sha256", "macs": macs},
        "meta": {"code_cmd": code_cmd, "ops": ops}}


def build(path: Path, days: int, a: argparse.Namespace) -> dict[str, Any]:
    """The old-format database of a store `days` days old; returns what it holds."""
    rng = random.Random(days)
    conn = connect(path)
    migrate(conn)
    fitting = fitting_state(days, a, rng)
    fjson = json.dumps(fitting, separators=(",", ":"))
    with conn:
        conn.execute("INSERT INTO fitting (id, state, cursor, updated) VALUES (1, ?, 0, ?)",
                     (fjson, T_END))
        for b in banks(a):
            conn.execute("INSERT INTO lockers (bank, state, cursor, updated) VALUES (?, ?, 0, ?)",
                         (b, json.dumps(bank_state(b, days, a, rng), separators=(",", ":")), T_END))
    conn.close()
    return {"sessions": len(fitting["sessions"]), "receipts": len(fitting["purchases"]),
            "fitting_json_mb": len(fjson) / 1e6, "orders": days * a.orders_a_day * a.banks,
            "db_mb": path.stat().st_size / 1e6}


def banks(a: argparse.Namespace) -> list[str]:
    return [f"lk-{i}" for i in range(1, a.banks + 1)]


# -- one run: a gateway on a copy ----------------------------------------------------------------

def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(src: Path, root: Path, work: Path, broker_port: int, a: argparse.Namespace,
            tag: str) -> dict[str, Any]:
    work.mkdir(parents=True)
    keys = work / "locker-keys.json"
    keys.write_text(json.dumps({b: secrets.token_hex(32) for b in banks(a)}))
    gw = BenchGateway(work, broker_port, root=root)
    gw.locker_keys.write_text(keys.read_text())
    shutil.copy(src, gw.db)
    t0 = time.perf_counter()
    gw.start(timeout=900)
    out: dict[str, Any] = {"start_s": time.perf_counter() - t0}
    try:
        # the first start of a code on an old file may upgrade it (this tree: the history
        # goes into its tables, then finished orders to history at the first tick): measure
        # the steady state, after a restart
        time.sleep(a.settle)
        rss_first = rss_mb(gw.pid())
        gw.stop()
        t0 = time.perf_counter()
        gw.start(timeout=900)
        out["restart_s"], out["rss_first_mb"] = time.perf_counter() - t0, rss_first
        time.sleep(a.settle)
        http = httpx.Client(base_url=gw.url, timeout=120)
        lat = []
        for i in range(a.purchases):
            body = {"receipt": f"bench-{tag}-{i}", "items": [
                {"gtin": CATALOGUE[i % 50], "qty": 1}, {"gtin": CATALOGUE[50 + i % 50], "qty": 2}]}
            t = time.perf_counter()
            r = http.post("/fitting/purchases", json=body)
            lat.append(time.perf_counter() - t)
            assert r.status_code == 201, r.text
        out["purchase"] = lat
        lat = []
        for i in range(a.assigns):
            for b in banks(a):
                t = time.perf_counter()
                r = http.post(f"/lockers/{b}/orders", json={"order": f"bench-{tag}-{i}", "size": "S"})
                lat.append(time.perf_counter() - t)
                assert r.status_code == 201, r.text
        out["order"] = lat
        http.close()
        time.sleep(a.settle)
        c0, t = proc_cpu_s(gw.pid()), time.monotonic()
        time.sleep(a.idle)
        out["idle_core"] = (proc_cpu_s(gw.pid()) - c0) / (time.monotonic() - t)
        out["rss_mb"] = rss_mb(gw.pid())
    finally:
        gw.stop()
    out["db_mb_after"] = sum(p.stat().st_size for p in work.glob("gateway.db*")) / 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", type=Path, default=None,
                    help="another source tree to measure the same way, first (e.g. /work/main)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--days", type=int, nargs="+", default=[1, 365])
    ap.add_argument("--rooms", type=int, default=8)
    ap.add_argument("--sessions", type=int, default=500, help="fitting sessions a day")
    ap.add_argument("--receipts", type=int, default=600, help="POS receipts a day")
    ap.add_argument("--banks", type=int, default=4)
    ap.add_argument("--orders-a-day", type=int, default=41, help="orders a bank a day")
    ap.add_argument("--purchases", type=int, default=15, help="timed POST /fitting/purchases a run")
    ap.add_argument("--assigns", type=int, default=5, help="timed POST /lockers/{bank}/orders a bank a run")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="small history, short phases (smoke)")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.days, a.sessions, a.receipts, a.orders_a_day = 1, [1, 10], 50, 60, 10
        a.purchases, a.assigns, a.settle, a.idle = 5, 2, 1.0, 3.0
    roots = ([("against", a.against.resolve())] if a.against else []) + [("this", ROOT)]
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start")
    print(f"assumptions: {a.rooms} fitting rooms, {a.sessions} sessions and {a.receipts} receipts "
          f"a day, a size request every 8 sessions, 12 door counts a day; {a.banks} banks of "
          f"{len(COMPARTMENTS)} compartments, {a.orders_a_day} orders a bank a day (all collected)")
    print(f"codes: {', '.join(f'{n}={r}' for n, r in roots)}; rounds {a.rounds}, interleaved")
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        tmpd = Path(tmp)
        srcs = {}
        for days in a.days:
            t = time.perf_counter()
            srcs[days] = tmpd / f"day{days}.db"
            info = build(srcs[days], days, a)
            print(f"history of {days} day(s): {info['sessions']} sessions, {info['receipts']} "
                  f"receipts (fitting JSON {info['fitting_json_mb']:.1f} MB), {info['orders']} "
                  f"locker orders; old-format db {info['db_mb']:.1f} MB "
                  f"(built in {time.perf_counter() - t:.1f} s)")
        broker = BenchBroker(tmpd / "broker")
        broker.start()
        try:
            n = 0
            for rnd in range(a.rounds):
                for name, root in roots:
                    for days in a.days:
                        n += 1
                        r = run_one(srcs[days], root, tmpd / f"run{n}", broker.port, a,
                                    f"{rnd}{name}{days}")
                        results.setdefault((name, days), []).append(r)
                        print(f"  round {rnd + 1} {name:7s} day {days:3d}: first start "
                              f"{r['start_s']:.1f} s (RSS {r['rss_first_mb']:.0f} MB), restart "
                              f"{r['restart_s']:.1f} s, "
                              f"purchase p50 {1000 * statistics.median(r['purchase']):.1f} ms, "
                              f"order p50 {1000 * statistics.median(r['order']):.1f} ms, idle "
                              f"{100 * r['idle_core']:.1f}% of a core, RSS {r['rss_mb']:.0f} MB, "
                              f"db {r['db_mb_after']:.1f} MB; load {os.getloadavg()[0]:.2f}",
                              flush=True)
        finally:
            broker.stop()
    print("\nsummary (all rounds pooled):")
    print("| code | history | POST /fitting/purchases p50 / p99 | POST /lockers/{bank}/orders p50 / p99 "
          "| idle CPU (share of a core) | RSS | first start (RSS) | restart |")
    print("|---|---|---|---|---|---|---|---|")
    for name, _ in roots:
        for days in a.days:
            rs = results[(name, days)]
            pu = [x for r in rs for x in r["purchase"]]
            od = [x for r in rs for x in r["order"]]
            print(f"| {name} | {days} d | {1000 * pct(pu, 50):.1f} / {1000 * pct(pu, 99):.1f} ms "
                  f"| {1000 * pct(od, 50):.1f} / {1000 * pct(od, 99):.1f} ms "
                  f"| {100 * statistics.mean(r['idle_core'] for r in rs):.2f}% "
                  f"| {max(r['rss_mb'] for r in rs):.0f} MB "
                  f"| {statistics.mean(r['start_s'] for r in rs):.1f} s "
                  f"({max(r['rss_first_mb'] for r in rs):.0f} MB) "
                  f"| {statistics.mean(r['restart_s'] for r in rs):.1f} s |")
        if len(a.days) >= 2:
            lo, hi = a.days[0], a.days[-1]
            pu = [statistics.median(x for r in results[(name, d)] for x in r["purchase"]) for d in (lo, hi)]
            od = [statistics.median(x for r in results[(name, d)] for x in r["order"]) for d in (lo, hi)]
            print(f"{name}: day {hi} / day {lo} p50: purchase x{pu[1] / pu[0]:.2f}, order "
                  f"x{od[1] / od[0]:.2f} (goal 0.8..1.2)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
