"""A year in a busy store: the database it makes, and the gateway running on it (issue 17).

    .venv/bin/python bench/year.py --days 10        # 10 days at the full rate (~5.5M events)
    .venv/bin/python bench/year.py --quick          # CI smoke: a small fraction of a day
    .venv/bin/python bench/year.py --days 365       # the whole year (~200M events, ~37 GB, hours)

The assumptions are printed first. A store's traffic (the demo's per-device rates, as issue 17
measured them): 60 devices, open 12 h a day, ~549,000 device events a day (~12.7/s while open),
a mix of event types per device (mostly `tag.placed`/`tag.removed`, some `door.*`, a rare
`door.forced`), ~1,500 commands a day (finished), ~3,000 audit rows a day (the store systems'
and staff's writes). `--days` days of it are written **through the gateway's own write path**:
births then events as raw MQTT payloads into `gateway.devices.ingest.apply_batch`, batches of
2,048 (the ingest's batch), acknowledged (watermarks), with the simulated time as `now`.

Then, on the result:
1. **size**: the file (after a checkpoint) and bytes per event; extrapolated to a year with
   retention off (every event kept) and on (the defaults: events 30 days, commands 90, audit 365).
2. **ingest**: events/s of `apply_batch` into the full database against an empty one, the same
   batches, interleaved (empty, full, empty, full, ...), 3 rounds each.
3. **the real gateway** (`python -m gateway`, a real Mosquitto, retention off in its config so
   the reads are measured alone): startup (process start to `/health` answering with MQTT
   connected), p50/p99 of every API read a store system makes (each 200 times, in turn), idle
   CPU over 20 s (utime+stime of the process, no traffic), RSS after the reads.
4. **backup**: `phygital db backup` (SQLite online backup) of the full database, and its size.
5. **pruning**: `Retention.run_once` with `events_days` = half the filled days, through the real
   writer, with a small write every 5 ms beside it (what a device ack waits): rows deleted, the
   longest writer hold of one batch (COMMIT included), the writes' p99 and max, the file after.

The fitting rooms' and lockers' cost per purchase / order at day 1 and day 365 is measured by
`bench/history.py` (the history-in-tables half of issue 17): this script writes no fitting or
locker history (`--kinds-hook` prints where it would go).

Prints `key: value` lines with the machine (CPU model, load average) first. Figures, not
pass/fail. How much of a year to run is a matter of time: `--days` (fraction of a year = days /
365); what scales with the size (bytes, backup time) is extrapolated linearly and said so.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx

from gateway.devices.ingest import apply_batch
from gateway.storage import db_cli
from gateway.storage.db import Database
from gateway.storage.retention import DAY_MS, FOLD_ROWS, Retention, RetentionPolicy, fold_batch
from gateway.storage.store import Store, commands_path, connect, connect_all, migrate
from hil.harness import GatewayProcess, Mosquitto

DEVICES = 60
EVENTS_PER_DAY = 549_000
OPEN_HOURS = 12
COMMANDS_PER_DAY = 1_500
AUDIT_PER_DAY = 3_000
BATCH = 2048
YEAR_EVENTS = EVENTS_PER_DAY * 365
# type, share: tags on pads, doors on lockers, a rare forced door (the `/events?device&type`
# case issue 17 measured at 544 ms: a type a device seldom has, so a filter on device alone
# walks all its events)
TYPES = (("tag.placed", 0.42), ("tag.removed", 0.42), ("door.opened", 0.075),
         ("door.closed", 0.075), ("button.pressed", 0.0099), ("door.forced", 0.0001))
RETENTION_DEFAULTS = {"events_days": 30, "commands_days": 90, "audit_days": 365}


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.machine()} {os.cpu_count()} CPUs ({model}), load average {load}"


def q(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p * len(s)) - 1))]


class Store_:
    """The synthetic store: its devices, their sequence numbers and the simulated clock."""

    def __init__(self, seed: int = 17) -> None:
        self.rng = random.Random(seed)
        self.devs = [f"dev-{i:02d}" for i in range(DEVICES)]
        self.epoch = {d: f"{i:08x}" for i, d in enumerate(self.devs)}
        self.seq = dict.fromkeys(self.devs, 0)
        names, weights = zip(*TYPES)
        self.names, self.cum = names, [sum(weights[:i + 1]) for i in range(len(weights))]

    def births(self, t: int) -> list[tuple[str, bytes]]:
        return [(f"pe/1/{d}/birth", json.dumps({
            "v": 1, "dev": d, "type": "birth", "t": t, "body": {
                "kind": "loadgen", "fw": "1.0.0", "caps": ["ping"], "cfg": "00000000",
                "session": 1, "boot": 1, "reset": "power", "epoch": self.epoch[d],
                "first": self.seq[d] + 1, "next": self.seq[d] + 1}}).encode())
            for d in self.devs]

    def events(self, n: int, t: int) -> list[tuple[str, bytes]]:
        out = []
        rng = self.rng
        for _ in range(n):
            d = self.devs[rng.randrange(DEVICES)]
            self.seq[d] += 1
            r = rng.random()
            typ = next((nm for nm, c in zip(self.names, self.cum) if r < c), self.names[0])
            body = {"uid": f"04{rng.getrandbits(48):012x}", "rssi": -40 - rng.randrange(30)}
            out.append((f"pe/1/{d}/evt", (
                f'{{"v":1,"dev":"{d}","type":"{typ}","seq":{self.seq[d]},"t":{t},'
                f'"body":{json.dumps(body, separators=(",", ":"))}}}').encode()))
        return out


def _ack_all(store: Store, synth: Store_) -> None:
    with store.transaction():
        for d, s in synth.seq.items():
            store.set_watermark(d, synth.epoch[d], s)


def _side_rows(store: Store, day_start: int, day: int, rng: random.Random, share: float) -> None:
    """`share` of a day's commands (finished) and audit rows, as the command service and the
    auth middleware write them (their own tables; no stream: pruned by count anyway)."""
    span = OPEN_HOURS * 3_600_000
    n_cmd, n_audit = int(COMMANDS_PER_DAY * share), int(AUDIT_PER_DAY * share)
    with store.transaction():
        store.conn.executemany(
            "INSERT INTO commands (id, device, name, args, idem_key, status, deadline, created, "
            "updated, sends) VALUES (?,?,?,?,?,'done',?,?,?,1)",
            [(f"c-{day}-{i}", f"dev-{rng.randrange(DEVICES):02d}", "open", '{"door":3}',
              f"k-{day}-{i}", t + 10_000, t, t + 300)
             for i in range(n_cmd) for t in (day_start + rng.randrange(span),)])
        store.conn.executemany(
            "INSERT INTO audit (t, who, token, ip, method, path, status, outcome) "
            "VALUES (?,?,?,?,?,?,?,?)",
            [(day_start + rng.randrange(span), rng.choice(("oms", "pos", "staff-1", "staff-2")),
              "tok", "10.0.0.5", "POST", "/lockers/lk-1/orders", 200, "done")
             for _ in range(n_audit)])


def fill(path: Path, days: float, end_ms: int, synth: Store_, rate: float = 1.0
         ) -> dict[str, Any]:
    """`days` of the store through apply_batch, ending at `end_ms`, at `rate` x the busy
    store's events (and commands, audit) a day."""
    conn = connect_all(path)  # the command file attached: the day's commands go there
    store = Store(conn)
    start = end_ms - int(days * DAY_MS)
    apply_batch(store, synth.births(start), start)
    store.take_outbox()
    per_day = int(EVENTS_PER_DAY * rate)
    total = int(per_day * days)
    done, t0, day = 0, time.perf_counter(), 0
    rng = random.Random(5)
    while done < total:
        day_start = start + day * DAY_MS
        todo = min(per_day, total - done)
        _side_rows(store, day_start, day, rng, rate * todo / per_day)
        step = OPEN_HOURS * 3_600_000 / per_day  # open hours at the day's rate
        k = 0
        while k < todo:
            n = min(BATCH, todo - k)
            t = int(day_start + k * step)
            eff = apply_batch(store, synth.events(n, t), t)
            assert eff.persisted == n, (eff.persisted, n, dict(eff.rejections))
            store.take_outbox()
            k += n
            if k % (BATCH * 100) < BATCH:
                _ack_all(store, synth)
                store.conn.execute("DELETE FROM stream WHERE id <= (SELECT MAX(id) FROM stream) "
                                   "- 100000")  # [database] stream_keep
        done += todo
        day += 1
        _ack_all(store, synth)
        if day % 5 == 0:
            print(f"  ... day {day}: {done} events, {done / (time.perf_counter() - t0):.0f} "
                  "events/s", flush=True)
    store.conn.execute("DELETE FROM stream WHERE id <= (SELECT MAX(id) FROM stream) - 100000")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    last = conn.execute("SELECT MAX(id) FROM events").fetchone()[0]
    conn.close()
    return {"events": total, "seconds": time.perf_counter() - t0, "last_id": last}


def kept_fill(args: argparse.Namespace, path: Path, end_ms: int, synth: Store_
              ) -> tuple[dict[str, Any], int]:
    """The fill into `path`; with --db, once: a kept database is copied to `path` instead, its
    devices' seqs and simulated end read back, so the rest runs as after a fill."""
    kept = args.db
    meta = kept.with_name(kept.name + ".json") if kept else None
    if kept is None or meta is None:
        return fill(path, args.days, end_ms, synth, args.rate), end_ms
    if kept.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if (m["days"], m["rate"]) != (args.days, args.rate):
            raise SystemExit(f"{kept} holds {m['days']:g} days at {m['rate']:g} x the rate, not "
                             f"{args.days:g} at {args.rate:g}: pass the same --days/--rate, or "
                             "another --db")
        t0 = time.perf_counter()
        shutil.copyfile(kept, path)
        if commands_path(kept).exists():
            shutil.copyfile(commands_path(kept), commands_path(path))
        conn = sqlite3.connect(path)
        for dev, seq in conn.execute("SELECT device, MAX(seq) FROM events GROUP BY device"):
            synth.seq[dev] = seq
        conn.close()
        print(f"fill: reused {kept} (filled {m['filled_at']}, copied in "
              f"{time.perf_counter() - t0:.0f} s)")
        return m["fill"], m["end_ms"]
    f = fill(path, args.days, end_ms, synth, args.rate)
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, kept)
    shutil.copyfile(commands_path(path), commands_path(kept))
    meta.write_text(json.dumps({"days": args.days, "rate": args.rate, "end_ms": end_ms,
                                "fill": f, "filled_at": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                      time.gmtime())}))
    return f, end_ms


def catch_up(path: Path) -> dict[str, Any]:
    """Count every event not counted yet into the hourly counts (`event_hours`), as the
    gateway's fold does every minute (gateway/storage/retention.py): on a database filled
    before migration 21 that is the upgrade's one-off catch-up."""
    conn = connect(path)
    migrate(conn)
    store = Store(conn)
    t0, n, holds = time.perf_counter(), 0, []
    while True:
        k, done, held = fold_batch(store, FOLD_ROWS)
        n += k
        holds.append(held)
        if done:
            break
    conn.close()
    return {"events": n, "seconds": time.perf_counter() - t0, "batches": len(holds),
            "longest_hold_s": max(holds)}


def file_size(path: Path) -> int:
    """The gateway's file and its command file, checkpointed."""
    size = 0
    for p in (path, commands_path(path)):
        if p.exists():
            conn = sqlite3.connect(p)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
            size += p.stat().st_size
    return size


def ingest_rate(path: Path, synth: Store_, n: int, t: int) -> float:
    """events/s of apply_batch for `n` new events into the database at `path`."""
    conn = connect(path)
    migrate(conn)
    store = Store(conn)
    if store.conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0] == 0:
        apply_batch(store, synth.births(t), t)  # an empty store: its devices, no events
    msgs = synth.events(n, t)
    t0 = time.perf_counter()
    persisted = 0
    for i in range(0, n, BATCH):
        persisted += apply_batch(store, msgs[i:i + BATCH], t).persisted
        store.take_outbox()
    dt = time.perf_counter() - t0
    assert persisted == n, (persisted, n)
    conn.close()
    return n / dt


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _settle(pid: int, limit_s: float = 300.0) -> float:
    """Seconds until the gateway uses < 5 % of a core over a second (its catch-up work done)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        c0 = proc_cpu_s(pid)
        time.sleep(1.0)
        if proc_cpu_s(pid) - c0 < 0.05:
            break
    return time.perf_counter() - t0


def gateway_reads(path: Path, work: Path, synth: Store_, rounds: int, idle_s: float
                  ) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    conn.execute("ATTACH DATABASE ? AS cmds", (str(commands_path(path)),))
    mid = conn.execute("SELECT MAX(id) / 2 FROM events").fetchone()[0] or 0
    last = conn.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0
    cmd = conn.execute("SELECT id FROM commands ORDER BY rowid DESC LIMIT 1").fetchone()
    t_last = conn.execute("SELECT MAX(t_gateway) FROM events").fetchone()[0] or 0
    conn.close()
    hour = 3_600_000
    week_to = t_last // hour * hour  # a week of the device's hourly counts, ending at the fill's
    broker = Mosquitto(work / "broker").start()
    cfg = work / "gw.toml"
    cfg.write_text("[retention]\nevents_days = 0\ncommands_days = 0\naudit_days = 0\n"
                   "alerts_days = 0\nwebhook_deliveries_days = 0\n")
    gw = GatewayProcess(work / "gw", broker.port, extra_args=["--config", str(cfg)])
    gw.db = path
    try:
        t0 = time.perf_counter()
        gw.start(timeout=600)
        startup = time.perf_counter() - t0
        settle = _settle(gw.proc.pid)
        dev = synth.devs[7]
        reads = {
            "GET /health": ("/health", {}),
            "GET /devices": ("/devices", {}),
            "GET /devices/{id}": (f"/devices/{dev}", {}),
            "GET /events?after (tail page)": ("/events", {"after": last - 100, "limit": 100}),
            "GET /events?after (mid page)": ("/events", {"after": mid, "limit": 100}),
            "GET /events?device&after": ("/events", {"device": dev, "after": mid, "limit": 100}),
            "GET /events?type (rare)": ("/events", {"type": "door.forced", "limit": 100}),
            "GET /events?device&type (rare)": ("/events", {"device": dev, "type": "door.forced",
                                                           "limit": 100}),
            "GET /events?device&type&after": ("/events", {"device": dev, "type": "tag.placed",
                                                          "after": mid, "limit": 100}),
            "GET /commands/{id}": (f"/commands/{cmd[0]}" if cmd else "/health", {}),
            "GET /events/hours?device (a week)": ("/events/hours", {
                "device": dev, "from": week_to - 7 * 24 * hour, "to": week_to, "limit": 1000}),
            "GET /alerts": ("/alerts", {}),
            "GET /alerts?state=all": ("/alerts", {"state": "all", "limit": 200}),
            "GET /audit?after": ("/audit", {"after": 0, "limit": 100}),
            "GET /audit?who": ("/audit", {"who": "pos", "limit": 100}),
            "GET /stats": ("/stats", {}),
            "GET /metrics": ("/metrics", {}),
            "GET /storage": ("/storage", {}),
            "GET /webhooks": ("/webhooks", {}),
        }
        lat: dict[str, list[float]] = {k: [] for k in reads}
        # one client, kept: GatewayProcess.http makes a new one (an SSL context, 20-100 ms) on
        # every access, because httpx's base_url has no trailing slash and it compares with one
        client = httpx.Client(base_url=gw.url, timeout=30)
        for _ in range(rounds):  # in turn: a slow read shows up in its own figures only
            for name, (url, params) in reads.items():
                t1 = time.perf_counter()
                r = client.get(url, params=params)
                lat[name].append(time.perf_counter() - t1)
                assert r.status_code == 200, (name, r.status_code, r.text[:200])
        client.close()
        pid = gw.proc.pid
        rss = proc_rss_mb(pid)
        c0, w0 = proc_cpu_s(pid), time.perf_counter()
        time.sleep(idle_s)
        idle = (proc_cpu_s(pid) - c0) / (time.perf_counter() - w0)
        return {"startup_s": startup, "settle_s": settle, "lat": lat, "rss_mb": rss,
                "idle_cpu": idle}
    finally:
        gw.stop()
        broker.stop()


def _half_days(path: Path, end_ms: int, last_id: int) -> float:
    """The age (days) of the filled events' middle one: pruning older than it drops half."""
    conn = sqlite3.connect(path)
    t = conn.execute("SELECT t_gateway FROM events WHERE id >= (SELECT (MIN(id) + ?) / 2 "
                     "FROM events) ORDER BY id LIMIT 1", (last_id,)).fetchone()[0]
    conn.close()
    return (end_ms - t) / DAY_MS


async def prune(path: Path, end_ms: int, days: float) -> dict[str, Any]:
    waits: list[float] = []
    async with Database(path) as db:
        ret = Retention(db, RetentionPolicy(events_days=days, commands_days=days,
                                            audit_days=days), lambda: end_ms)
        done = asyncio.Event()

        def small(store: Store) -> None:
            with store.transaction():
                store.bump("bench_beside")

        async def beside() -> None:
            while not done.is_set():
                t = time.perf_counter()
                await db.write_grouped(small)
                waits.append(time.perf_counter() - t)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(beside())
        t0 = time.perf_counter()
        report = await ret.run_once()
        wall = time.perf_counter() - t0
        done.set()
        await task
    return {"report": report, "wall": wall, "waits": waits}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=10.0, help="days of the busy store to write "
                    "(365: a year; the fraction of a year is days / 365)")
    ap.add_argument("--rate", type=float, default=1.0, help="x the busy store's daily volume")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 1 day at 5 %% of the "
                    "rate (27k events), few reads")
    ap.add_argument("--rounds", type=int, default=200, help="requests per API read")
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--ingest-events", type=int, default=100_000,
                    help="events per ingest measurement (full vs empty)")
    ap.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a "
                    "temporary folder; a year needs ~40 GB)")
    ap.add_argument("--db", type=Path, default=None,
                    help="keep the filled database here (and the fill's figures beside it, "
                    "PATH.json); when it exists, skip the fill and measure on a copy of it: fill "
                    "once (hours for a long history), measure on a quiet machine later")
    ap.add_argument("--reads-only", action="store_true",
                    help="after the fill: only the gateway's startup, API reads, RSS and idle CPU "
                    "(no ingest rounds, backup or pruning)")
    ap.add_argument("--fill-only", action="store_true", help="with --db: fill it and stop")
    ap.add_argument("--kinds-hook", action="store_true",
                    help="say where the fitting/locker per-order costs come from and stop")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the ingest's per-batch logs are not figures
    if args.kinds_hook:
        print("fitting purchase / locker order cost at day 1 and day 365: bench/history.py")
        return 0
    if args.quick:
        args.days, args.rate, args.rounds, args.idle_s, args.ingest_events = 1, 0.05, 20, 2.0, \
            10_000
    print(f"machine: {machine()}; SQLite {sqlite3.sqlite_version}, Python "
          f"{platform.python_version()}")
    print(f"assumptions: {DEVICES} devices, open {OPEN_HOURS} h a day, {EVENTS_PER_DAY} events a "
          f"day ({EVENTS_PER_DAY / OPEN_HOURS / 3600:.1f}/s while open), types "
          + ", ".join(f"{n} {w:.2%}" for n, w in TYPES)
          + f"; {COMMANDS_PER_DAY} commands and {AUDIT_PER_DAY} audit rows a day; a year = "
          f"{YEAR_EVENTS / 1e6:.0f}M events")
    print(f"run: {args.days:g} days at {args.rate:g} x the rate = {args.days * args.rate / 365:.4f}"
          f" of a year's events ({int(EVENTS_PER_DAY * args.rate) * int(args.days)} events) "
          f"through apply_batch, batches of {BATCH}")
    end_ms = int(time.time() * 1000)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        path = work / "full.db"
        synth = Store_()
        f, end_ms = kept_fill(args, path, end_ms, synth)
        if args.fill_only:
            print(f"filled {args.db}: {f['events']} events in {f['seconds']:.0f} s")
            return 0
        c = catch_up(path)
        print(f"hourly counts catch-up (an upgrade from before migration 21 counts the events "
              f"already stored once; a running gateway folds every minute): {c['events']} events"
              f" in {c['seconds']:.1f} s, {c['batches']} transactions of {FOLD_ROWS}, longest "
              f"writer hold {c['longest_hold_s'] * 1000:.1f} ms")
        size = file_size(path)
        bpe = size / f["events"]
        print(f"fill: {f['events']} events in {f['seconds']:.0f} s "
              f"({f['events'] / f['seconds']:.0f} events/s, commands and audit included)")
        print(f"size, retention off, {f['events']} events: {size / 1e6:.1f} MB "
              f"({bpe:.0f} bytes/event, commands and audit included)")
        print(f"size, retention off, a year (extrapolated x{YEAR_EVENTS / f['events']:.1f}): "
              f"{bpe * YEAR_EVENTS / 1e9:.1f} GB")
        kept = min(365, RETENTION_DEFAULTS["events_days"]) * EVENTS_PER_DAY
        print(f"size, default retention, after a year (extrapolated: {kept / 1e6:.1f}M events "
              f"kept at {bpe:.0f} bytes): {bpe * kept / 1e9:.1f} GB + audit 365 days "
              f"(included per event above: an upper bound)")

        # ingest: full against empty, interleaved
        rates: dict[str, list[float]] = {"empty": [], "full": []}
        for r in range(0 if args.reads_only else 3):
            for which in ("empty", "full"):
                target = path if which == "full" else work / f"empty-{r}.db"
                # an empty store's devices start at seq 1 (their own synthesizer)
                rates[which].append(ingest_rate(target, synth if which == "full" else Store_(r),
                                                args.ingest_events, end_ms + r))
        if rates["empty"]:
            e, fu = statistics.median(rates["empty"]), statistics.median(rates["full"])
            print(f"ingest (apply_batch, {args.ingest_events} events, median of 3 interleaved): "
                  f"empty {e:.0f} events/s, full {fu:.0f} events/s, ratio {fu / e:.2f} "
                  f"(rounds: empty {', '.join(f'{x:.0f}' for x in rates['empty'])}; full "
                  f"{', '.join(f'{x:.0f}' for x in rates['full'])})")

        # the ingest rounds' events in one burst: counted now, as the gateway's fold would
        # have within a minute of each (the gateway's reads below meet a caught-up store)
        catch_up(path)
        g = gateway_reads(path, work, synth, args.rounds, args.idle_s)
        print(f"gateway startup on the full database: {g['startup_s']:.2f} s to /health with MQTT "
              f"connected; busy (> 5 % of a core) for {g['settle_s']:.0f} s more (incl. 1 s idle)")
        print(f"API reads ({args.rounds} each, in turn), p50 / p99 / max ms:")
        worst = 0.0
        for name, v in g["lat"].items():
            p99 = q(v, 0.99) * 1000
            worst = max(worst, p99)
            print(f"  {name}: {statistics.median(v) * 1000:.1f} / {p99:.1f} / {max(v) * 1000:.1f}")
        print(f"API reads: worst p99 {worst:.1f} ms")
        print(f"gateway RSS after the reads: {g['rss_mb']:.0f} MB")
        print(f"gateway idle CPU ({args.idle_s:g} s, no traffic): {g['idle_cpu'] * 100:.2f} % "
              "of a core")

        if args.reads_only:
            print(f"machine at the end: {machine()}")
            return 0
        b = db_cli.backup(path, work / "backup.db")
        print(f"backup (phygital db backup): {b['bytes'] / 1e6:.1f} MB in {b['seconds']:.1f} s "
              f"({b['bytes'] / 1e6 / max(b['seconds'], 1e-9):.0f} MB/s; a year at the default "
              f"retention, extrapolated: {bpe * kept / 1e6 / max(b['bytes'] / 1e6 / b['seconds'], 1e-9):.0f} s)")
        (work / "backup.db").unlink()
        shutil.rmtree(work / "gw", ignore_errors=True)

        size = file_size(path)  # the ingest rounds added events
        half = _half_days(path, end_ms, f["last_id"])  # the fill's (the ingest's are newer)
        p = asyncio.run(prune(path, end_ms, half))
        rep, waits = p["report"], sorted(p["waits"])
        print(f"pruning (events/commands/audit older than {half:.3g} days: the older half): "
              + " ".join(f"{t}={n}" for t, n in rep.deleted.items() if n)
              + f" in {rep.batches} batches, pass {p['wall']:.1f} s")
        print(f"longest writer hold while pruning (one batch, COMMIT included): "
              f"{rep.longest_hold_s * 1000:.1f} ms; longest vacuum step "
              f"{rep.longest_vacuum_s * 1000:.1f} ms ({rep.pages_freed} pages freed)")
        if waits:
            print(f"writes beside the pass (every 5 ms): n={len(waits)} p50 "
                  f"{statistics.median(waits) * 1000:.1f} ms, p99 {q(waits, 0.99) * 1000:.1f} ms,"
                  f" max {waits[-1] * 1000:.1f} ms")
        after = file_size(path)
        print(f"size, retention on (half the days pruned, vacuumed): {after / 1e6:.1f} MB "
              f"(was {size / 1e6:.1f} MB)")
        print(f"machine at the end: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
