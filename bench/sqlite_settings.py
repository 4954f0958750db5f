"""The ingest's writer stage (`apply_decoded`: a batch of events in one transaction, WAL,
synchronous=FULL) on a real file, under SQLite settings to compare (issue 18), in turns.

    .venv/bin/python bench/sqlite_settings.py                    # 3 rounds, 60 batches of 600
    .venv/bin/python bench/sqlite_settings.py --rounds 1 --batches 20
    .venv/bin/python bench/sqlite_settings.py --quick      # CI smoke

Each setting gets a fresh database (100 devices born), then `--batches` batches of
`--batch` 150-byte events (round-robin over the devices, as a saturated gateway sees them),
applied and committed one by one as the ingest does, timed (wall and thread CPU per event).
Settings run in turns (A, B, C, ..., A, B, C, ...) so the machine's load falls on all alike;
the machine and its load are printed. Only the writer stage: no MQTT, no decode, no acks.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import load_line, machine
from gateway.devices import protocol
from gateway.devices.ingest import apply_decoded, decode_batch
from gateway.storage import store as store_mod
from gateway.storage.store import Store, migrate

SETTINGS: dict[str, list[str]] = {
    "default": [],
    "wal_autocheckpoint=10000": ["PRAGMA wal_autocheckpoint = 10000"],
    "cache_size=-32000": ["PRAGMA cache_size = -32000"],
    "page_size=8192": ["PRAGMA page_size = 8192"],          # before the first table
    "page_size=2048": ["PRAGMA page_size = 2048"],
    "page_size=1024": ["PRAGMA page_size = 1024"],
    "cached_statements=512": [],                            # a connect() argument
}


def open_store(path: Path, name: str) -> Store:
    conn = store_mod.connect(path)
    if name == "cached_statements=512":
        conn.close()
        import sqlite3
        conn = sqlite3.connect(str(path), isolation_level=None, cached_statements=512)
        conn.row_factory = sqlite3.Row
        for pragma in ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
                       "PRAGMA foreign_keys = ON"):
            conn.execute(pragma)
    for pragma in SETTINGS[name]:
        conn.execute(pragma)
    if name.startswith("page_size="):
        conn.execute("VACUUM")  # an empty file: takes the page size
    migrate(conn)
    return Store(conn)


def births(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        dev = f"pad-{i}"
        out.append((protocol.topic(dev, "birth"), protocol._encode({
            "v": 1, "dev": dev, "type": "birth", "t": None,
            "body": {"kind": "sample-pad", "fw": "1", "caps": [], "cfg": "0", "session": 1,
                     "boot": 1, "reset": None, "epoch": "e1", "first": 1, "next": 1}})))
    return out


def events(devices: int, start: int, n: int) -> list[tuple[str, bytes]]:
    out = []
    for k in range(start, start + n):
        dev = f"pad-{k % devices}"
        out.append((protocol.topic(dev, "evt"), protocol._encode({
            "v": 1, "dev": dev, "type": "tag.seen", "seq": k // devices + 1,
            "t": 1795426642000 + k, "body": {"uid": "04a1b2c3d4e5f6", "rssi": -42,
                                               "x": "a" * 40}})))
    return out


def run(name: str, work: Path, a: argparse.Namespace) -> tuple[float, float]:
    path = work / f"{name.replace('=', '-')}-{time.monotonic_ns()}.db"
    store = open_store(path, name)
    decoded, rej = decode_batch(births(a.devices))
    apply_decoded(store, decoded, rej, a.devices, 1)
    batches = [decode_batch(events(a.devices, i * a.batch, a.batch)) for i in range(a.batches)]
    w0, c0 = time.perf_counter(), time.thread_time()
    for decoded, rej in batches:
        apply_decoded(store, decoded, rej, len(decoded), 2)
    wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
    store.conn.close()
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    n = a.batch * a.batches
    return wall / n * 1e6, cpu / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: 1 round of 2 small batches")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch", type=int, default=600)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the databases go (default: a temporary directory; the gateway's "
                         "disk is what matters)")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.batches, a.batch, a.devices = 1, 2, 50, 10
    print(f"writer stage: {a.batches} batches of {a.batch} events over {a.devices} devices per "
          f"run, {a.rounds} rounds, settings in turns")
    print(f"machine: {machine()}")
    print(load_line(), flush=True)
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="pe-bench-sqlite-", dir=a.dir) as tmp:
        for r in range(a.rounds):
            for name in SETTINGS:
                wall, cpu = run(name, Path(tmp), a)
                res[name].append((wall, cpu))
                print(f"round {r + 1} {name:26} wall {wall:6.1f} us/event, CPU {cpu:6.1f} "
                      "us/event", flush=True)
    print(load_line())
    for name, runs in res.items():
        print(f"median {name:26} wall {statistics.median(w for w, _ in runs):6.1f} us/event, "
              f"CPU {statistics.median(c for _, c in runs):6.1f} us/event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
