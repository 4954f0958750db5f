"""Two gateway trees measured in turns with bench/ingest.py: A, B, A, B, ... (interleaved, so
both see the same machine load), then one summary line per run and the medians.

    .venv/bin/python bench/ingest_ab.py --a /tmp/main-copy --b . --rounds 3 -- --devices 100
    # everything after `--` goes to bench/ingest.py (for both trees)

Each run is a whole `bench/ingest.py` (its own broker, raw ceiling measured in the same run,
then the gateway phase from `--gateway-root`); its full output is printed as it comes, so the
machine, the load and the integrity line of every run are in the log. Exits 1 if any run's
integrity check failed.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIGURES = {
    "raw": re.compile(r"^raw ceiling: (\d+)"),
    "events_s": re.compile(r"^gateway events/s: (\d+)"),
    "cpu_us": re.compile(r"gateway CPU (\d+) us/event"),
    "ratio": re.compile(r"^ratio: ([\d.]+)"),
    "gw_cores": re.compile(r"gateway phase cores used .*?: gateway ([\d.]+)"),
    "p99": re.compile(r"p99 ([\d.]+)"),
    "integrity": re.compile(r"^integrity: (\w+)"),
    "load": re.compile(r"^machine load: load average ([\d.]+)"),
}


def run_one(root: Path, args: list[str]) -> dict[str, str]:
    cmd = [sys.executable, str(ROOT / "bench" / "ingest.py"), "--gateway-root", str(root), *args]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    print(p.stdout, end="", flush=True)
    if p.returncode and "integrity" not in p.stdout:
        print(p.stderr[-3000:], flush=True)
    out: dict[str, str] = {}
    for line in p.stdout.splitlines():
        for key, rx in FIGURES.items():
            m = rx.search(line)
            if m and (key not in out or key == "load"):
                out[key] = m.group(1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True, help="tree A (e.g. a copy of main)")
    ap.add_argument("--b", type=Path, required=True, help="tree B (e.g. this branch)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then bench/ingest.py arguments")
    a = ap.parse_args()
    rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest
    results: list[tuple[str, str, dict[str, str]]] = []
    for r in range(a.rounds):
        for name, root in (("A", a.a), ("B", a.b)):
            stamp = time.strftime("%H:%M:%S", time.gmtime())
            print(f"=== round {r + 1} {name} ({root}) {stamp} UTC", flush=True)
            results.append((name, stamp, run_one(root.resolve(), rest)))
    print(f"\nA = {a.a}\nB = {a.b}")
    cols = ("raw", "events_s", "ratio", "cpu_us", "gw_cores", "p99", "integrity", "load")
    print("tree  UTC       " + "  ".join(f"{c:>9}" for c in cols))
    for name, stamp, f in results:
        print(f"{name:4}  {stamp}  " + "  ".join(f"{f.get(c, '-'):>9}" for c in cols))
    for name in ("A", "B"):
        runs = [f for n, _, f in results if n == name]
        med = {c: statistics.median(float(f[c]) for f in runs if c in f)
               for c in ("raw", "events_s", "ratio", "cpu_us", "gw_cores")
               if any(c in f for f in runs)}
        print(f"median {name}: " + ", ".join(f"{k} {v:g}" for k, v in med.items()))
    bad = [f for _, _, f in results if f.get("integrity") != "OK"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
