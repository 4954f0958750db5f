"""The writer's CPU per event: `apply_batch` of full ingest batches on a real SQLite file
(WAL, synchronous=FULL), the thread's CPU time around each apply, trees A and B interleaved.

    .venv/bin/python bench/writer_apply.py --a /tmp/base --b . --rounds 3

Each run is a child process started in the tree's root (so it imports that tree's gateway):
`--batches` batches of `--batch` events over `--devices` devices, after one warm-up batch.
`--cuts N` (trees that have the command lane's midway commit, issue 18 session 8): a command
write cuts into each batch N times, as when commands wait during a long batch: that many
extra commits per batch, each with a one-row write of its own.
`--fold` also times, after each batch, what reads every new stream row: the analytics fold
(`fold_tx`, on the writer thread) and the alerts' scan (`alerts.pending`, on a reader), both
filtering by the item's type; `--type` is the events' type (`bench.tick`, the load generator's,
is one neither of them keeps).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
from gateway.devices.ingest import apply_batch
from gateway.storage.store import Store, connect, migrate

devices, batch, batches, cuts, fold = (int(a) for a in sys.argv[1:6])
etype = sys.argv[6]
tmp = Path(tempfile.mkdtemp())
conn = connect(tmp / "gw.db")
migrate(conn)
store = Store(conn)
def birth(d):
    return (f"pe/1/{d}/birth", json.dumps({"v": 1, "dev": d, "type": "birth", "t": None, "body": {
        "kind": "sample-pad", "fw": "1", "caps": [], "cfg": "0", "session": 1, "boot": 1,
        "reset": "power", "epoch": "e1", "first": 1, "next": 1}}).encode())
names = [f"pad-{i}" for i in range(devices)]
apply_batch(store, [birth(d) for d in names], 1)
seq = dict.fromkeys(names, 0)
def make():
    out = []
    for i in range(batch):
        d = names[i % devices]
        seq[d] += 1
        out.append((f"pe/1/{d}/evt", json.dumps({"v": 1, "dev": d, "type": etype,
                    "seq": seq[d], "t": None, "body": {"uid": "04a1b2c3", "n": seq[d]}}).encode()))
    return out
state = {"left": 0, "made": 0}
if cuts:
    step = max(1, (batch // 128) // (cuts + 1))
    def waiting():
        state["left"] += 1
        return state["left"] % step == 0 and state["made"] < cuts
    def join():
        state["made"] += 1
        with store.transaction():
            store.bump("bench_cut")
        store.commit_midway()
        store.reopen_midway()
    store.lane_waiting, store.lane_join = waiting, join
apply_batch(store, make(), 2)  # warm-up
if fold:
    from gateway.analytics.rollup import fold_tx
    from gateway.devices.alerts import pending
    while fold_tx(store):
        pass
    seen = store.last_stream_id()
fold_cpu = alerts_cpu = 0.0
cpu = 0.0
wall = 0.0
made = 0
for _ in range(batches):
    msgs = make()
    state["left"] = state["made"] = 0
    c0, w0 = time.thread_time(), time.perf_counter()
    eff = apply_batch(store, msgs, 3)
    cpu += time.thread_time() - c0
    wall += time.perf_counter() - w0
    made += state["made"]
    assert eff.persisted == batch, eff
    if fold:
        c0 = time.thread_time()
        while fold_tx(store):
            pass
        fold_cpu += time.thread_time() - c0
        c0 = time.thread_time()
        while seen < store.last_stream_id():
            _, seen = pending(store, seen)
        alerts_cpu += time.thread_time() - c0
print(json.dumps({"cpu_us_per_event": cpu / (batch * batches) * 1e6,
                  "fold_us_per_event": fold_cpu / (batch * batches) * 1e6,
                  "alerts_us_per_event": alerts_cpu / (batch * batches) * 1e6,
                  "wall_us_per_event": wall / (batch * batches) * 1e6, "cuts": made}))
"""


def _run(root: str, args: argparse.Namespace) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.devices), str(args.batch),
                          str(args.batches), str(args.cuts), str(int(args.fold)), args.type],
                         cwd=root, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(root).resolve())})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return f"{os.cpu_count()} CPUs ({model})"


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = str(Path(__file__).resolve().parent.parent)
    ap.add_argument("--a", default=here, help="tree A's root (e.g. a copy of main)")
    ap.add_argument("--b", default=here, help="tree B's root (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--cuts", type=int, default=0, help="midway commits per batch (tree B only)")
    ap.add_argument("--fold", action="store_true",
                    help="also time the analytics fold and the alerts' scan of the new rows")
    ap.add_argument("--type", default="tag.placed", help="the events' type")
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke: this tree as A and B, 1 round of 2 small batches, 1 cut each")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.devices, args.batch, args.batches, args.cuts = 1, 10, 256, 2, 1
        args.fold = True
    print(f"machine: {_machine()}; {args.batches} batches of {args.batch} events over "
          f"{args.devices} devices per run, thread CPU of the apply; B cut {args.cuts}x a batch")
    print(f"load: {_load()}; events of type {args.type}" + ("; fold and alerts timed" if args.fold else ""))
    got: dict[str, list[float]] = {"A": [], "B": []}
    folds: dict[str, list[float]] = {"A": [], "B": []}
    for r in range(1, args.rounds + 1):
        for name, root in (("A", args.a), ("B", args.b)) if r % 2 else (("B", args.b),
                                                                         ("A", args.a)):
            ns = argparse.Namespace(**{**vars(args), "cuts": args.cuts if name == "B" else 0})
            res = _run(root, ns)
            got[name].append(res["cpu_us_per_event"])
            fold = ""
            if args.fold:
                folds[name].append(res["fold_us_per_event"] + res["alerts_us_per_event"])
                fold = (f", fold {res['fold_us_per_event']:.2f} + alerts "
                        f"{res['alerts_us_per_event']:.2f} us CPU/event")
            print(f"round {r} {name}: {res['cpu_us_per_event']:.2f} us CPU/event, "
                  f"{res['wall_us_per_event']:.2f} us wall/event, cuts {res['cuts']}{fold}, "
                  f"load {_load()}", flush=True)
    for name in ("A", "B"):
        print(f"{name}: median {statistics.median(got[name]):.2f} us CPU/event "
              f"({', '.join(f'{v:.2f}' for v in got[name])})")
        if args.fold:
            print(f"{name}: median {statistics.median(folds[name]):.2f} us CPU/event for the "
                  f"fold and the alerts' scan ({', '.join(f'{v:.2f}' for v in folds[name])})")


if __name__ == "__main__":
    main()
