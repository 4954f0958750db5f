"""Retention: the longest writer hold while pruning, the space given back, the cost of /stats.

    .venv/bin/python bench/retention.py              # 1.2M events over 60 days, 300k commands
    .venv/bin/python bench/retention.py --quick      # CI smoke: 120k events, 30k commands
    .venv/bin/python bench/retention.py --events 5000000 --batch 2000 --vacuum-pages 2000

1. fill: `--events` events (~184 bytes each in the database, as in issue 17) spread evenly over
   `--days` days for 60 devices, acked, through `Store.insert_events_many` (the ingest's write
   path), the stream pruned by count as the gateway does; `--commands` final commands.
2. prune: `Retention.run_once` with `events_days = 30` (half the events go) through the real
   `Database` writer, while a writer load runs beside it: a small grouped write (as an ingest
   batch is) every 5 ms, each one's wait timed. Figures: rows deleted, batches, the longest
   writer hold of one batch (statement + COMMIT, synchronous=FULL), the longest incremental
   vacuum step, the beside-writes' latency p50/p99/max (what a device ack waits), the pass's
   wall time.
3. space: file size (after a TRUNCATE checkpoint) before and after the pass.
4. /stats: `count_commands` (the command_counts rows of migration 15) against the GROUP BY
   count it replaced, over the commands table.

Prints `key: value` lines; the machine (CPUs, model, load average) first. Figures, not pass/fail.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.storage.db import Database
from gateway.storage.retention import DAY_MS, Retention, RetentionPolicy
from gateway.storage.store import Store, commands_path

DEVICES = 60


def _machine() -> str:
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


def _fill(store: Store, events: int, days: int, now: int, commands: int) -> None:
    per_dev: dict[str, int] = {}
    step = days * DAY_MS / events
    batch = []
    for i in range(events):
        dev = f"dev-{i % DEVICES:02d}"
        seq = per_dev[dev] = per_dev.get(dev, 0) + 1
        t = int(now - days * DAY_MS + i * step)
        batch.append((dev, "e1", seq, "tag.placed", t, t, {"uid": "04a1b2c3d4e5f6", "pad": dev}))
        if len(batch) == 5000:
            with store.transaction():
                store.insert_events_many(batch)
            store.take_outbox()
            batch = []
    if batch:
        with store.transaction():
            store.insert_events_many(batch)
        store.take_outbox()
    with store.transaction():
        for dev, top in per_dev.items():
            store.upsert_device(id=dev, kind="sample-pad", fw="1", caps=[], cfg="c", session=1,
                                epoch="e1", boot=1, reset=None, online=True, now=now)
            store.set_watermark(dev, "e1", top)
        store.conn.execute("DELETE FROM stream")  # [database] stream_keep prunes it by count
    store.conn.executescript("PRAGMA incremental_vacuum;")  # "before" holds no free pages


def _fill_commands(store: Store, days: int, now: int, commands: int) -> None:
    """The command file's part of the fill."""
    with store.transaction():
        store.conn.executemany(
            "INSERT INTO commands (id, device, name, args, idem_key, status, deadline, created, "
            "updated) VALUES (?, 'dev-00', 'blink', '{}', ?, 'done', 0, ?, ?)",
            [(f"c{i}", f"k{i}", int(now - days * DAY_MS + i * days * DAY_MS / commands),
              int(now - days * DAY_MS + i * days * DAY_MS / commands)) for i in range(commands)])
    store.conn.executescript("PRAGMA incremental_vacuum;")  # "before" holds no free pages


def _size(path: Path) -> int:
    """The gateway's file and its command file, checkpointed."""
    size = 0
    for p in (path, commands_path(path)):
        conn = sqlite3.connect(p)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        size += p.stat().st_size
    return size


def _small_write(store: Store) -> None:
    with store.transaction():
        store.bump("bench_beside")


async def bench(args: argparse.Namespace, path: Path) -> None:
    now = int(time.time() * 1000)
    t0 = time.perf_counter()
    async with Database(path) as db:
        await db.write(_fill, args.events, args.days, now, args.commands)
        assert db.commands is not None
        await db.commands.write(_fill_commands, args.days, now, args.commands)
    print(f"fill: {args.events} events over {args.days} days, {DEVICES} devices, "
          f"{args.commands} commands, {time.perf_counter() - t0:.1f} s")
    before = _size(path)
    print(f"file before: {before / 1e6:.1f} MB ({before / args.events:.0f} bytes/event incl. "
          "commands)")
    async with Database(path) as db:
        ret = Retention(db, RetentionPolicy(events_days=args.days / 2, commands_days=args.days / 2,
                                            batch_rows=args.batch,
                                            vacuum_pages=args.vacuum_pages), lambda: now)
        waits: list[float] = []
        done = asyncio.Event()

        async def beside() -> None:
            while not done.is_set():
                t = time.perf_counter()
                await db.write_grouped(_small_write)
                waits.append(time.perf_counter() - t)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(beside())
        t1 = time.perf_counter()
        report = await ret.run_once()
        wall = time.perf_counter() - t1
        done.set()
        await task
        t2 = time.perf_counter()
        for _ in range(20):
            counts = await db.read(Store.count_commands)
        cheap = (time.perf_counter() - t2) / 20
        t3 = time.perf_counter()
        for _ in range(3):
            await db.read(lambda s: s.conn.execute(
                "SELECT status, COUNT(*) FROM commands GROUP BY status").fetchall())
        scan = (time.perf_counter() - t3) / 3
    after = _size(path)
    waits.sort()
    print(f"pruned: {' '.join(f'{t}={n}' for t, n in report.deleted.items() if n)} in "
          f"{report.batches} batches of <= {args.batch} rows, pass {wall:.1f} s")
    print(f"longest writer hold (one batch, COMMIT included): {report.longest_hold_s * 1000:.1f} ms")
    print(f"incremental vacuum: {report.pages_freed} pages in {report.vacuum_steps} steps, "
          f"longest step {report.longest_vacuum_s * 1000:.1f} ms")
    if waits:
        print(f"writes beside the pass (every 5 ms): n={len(waits)} p50 "
              f"{statistics.median(waits) * 1000:.1f} ms, p99 "
              f"{waits[int(len(waits) * 0.99) - 1] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms")
    print(f"file after: {after / 1e6:.1f} MB ({(before - after) / 1e6:.1f} MB given back, "
          f"{100 * (before - after) / before:.0f}%)")
    print(f"/stats commands ({sum(counts.values())} rows): command_counts {cheap * 1000:.2f} ms, "
          f"GROUP BY count {scan * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_200_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--commands", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--vacuum-pages", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="CI smoke: 120k events, 30k commands")
    ap.add_argument("--dir", type=Path, default=None, help="where the database goes (default: a "
                    "temporary folder)")
    args = ap.parse_args()
    if args.quick:
        args.events, args.commands = 120_000, 30_000
    print(f"machine: {_machine()}; SQLite {sqlite3.sqlite_version}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        asyncio.run(bench(args, Path(tmp) / "gw.db"))


if __name__ == "__main__":
    main()
