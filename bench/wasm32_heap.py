"""Heap in use after the same workloads on 32-bit (WebAssembly port, Node.js) and 64-bit (unix).

    .venv/bin/python bench/wasm32_heap.py [--runs 3]

Runs tools/wasm32/progs/*.py from the same .mpy build in both lanes (docs/wasm32.md) and prints
`gc.mem_alloc()` after `gc.collect()` at the end of each workload (live bytes: the modules'
bytecode loaded from .mpy, the objects the program keeps in `KEEP`: a journal and command log,
a running locker bank), minus the same figure for an empty program. On wasm32 it is taken after
the program returns (run.mjs --heap-after 1): inside a running program that port's collection
keeps the program's garbage.
Not a smallest-heap search: the WebAssembly port grows its heap past `-X heapsize`
(`gc.mem_free()` reports ~128 MB at a 96 KB setting), so only live bytes compare.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.core.lockers import key_id, mac_code, salt_id

from hil.sim.firmware import build_mpy, micropython_binary, micropython_env

PROGS = ROOT / "tools" / "wasm32" / "progs"
EMPTY = "import gc, json\ngc.collect()\nprint(json.dumps({'heap_alloc': gc.mem_alloc()}))\n"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(lane: str, prog: Path, flash: Path, mpy: Path, *args: str) -> int:
    if lane == "wasm32":
        cmd = ["node", str(ROOT / "tools/wasm32/run.mjs"), "--firmware", str(mpy), "--flash", str(flash),
               "--heap-after", "1",
               str(prog), *args]
        env = None
    else:
        cmd = [micropython_binary(), "-X", "heapsize=256k", str(prog), *args]
        env = micropython_env(path=Path(f"{mpy}:{ROOT / 'tools/wasm32'}"))
    r = subprocess.run(cmd, cwd=flash, env=env, capture_output=True, text=True, timeout=120, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{lane} {prog.name} {args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    heaps = []
    for ln in r.stdout.splitlines():
        if ln.startswith("{"):
            msg = json.loads(ln)
            msg = msg.get("summary", msg)
            for k in ("heap_alloc", "heap_after"):  # heap_after (wasm32) is printed last
                if k in msg:
                    heaps.append(msg[k])
    return heaps[-1]


def locker_input(flash: Path) -> None:
    salt, key = "bank-salt-1", bytes(range(7, 39))
    app = {"compartments": ["S", "M", {"id": 3, "size": "L"}], "occupancy": True, "salt": salt,
           "code_key": key.hex(), "pulse_ms": 300, "verify_ms": 300, "retry_ms": 200, "gap_ms": 100,
           "door_poll_ms": 50, "ajar_s": 30, "lockout": {"after": 3, "window_s": 300, "lock_s": [2, 4, 6]}}
    (flash / "locker_in.json").write_text(json.dumps({
        "macs": {"2": mac_code("482913", key, salt), "1": mac_code("111111", key, salt)},
        "salt_id": salt_id(salt), "key_id": key_id(key), "app": app}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    mpy = build_mpy()
    rows: dict[str, dict[str, list[int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.py"
        empty.write_text(EMPTY)
        for n in range(args.runs):
            for lane in ("wasm32", "unix"):
                d = Path(tmp) / f"{lane}-{n}"
                for sub in ("e", "j", "l"):
                    (d / sub).mkdir(parents=True)
                base = run(lane, empty, d / "e", mpy)
                got = {"empty program": base,
                       "journal+cmdlog boot 1": run(lane, PROGS / "journal_cmdlog.py", d / "j", mpy, "boot1") - base,
                       "journal+cmdlog boot 2": run(lane, PROGS / "journal_cmdlog.py", d / "j", mpy, "boot2") - base}
                locker_input(d / "l")
                got["locker bank (3), pickup"] = run(lane, PROGS / "locker_bank.py", d / "l", mpy) - base
                for k, v in got.items():
                    rows.setdefault(k, {}).setdefault(lane, []).append(v)
    load = os.getloadavg()
    print(f"\nlive heap after the workload (gc.mem_alloc() after gc.collect(), minus an empty program's;"
          f" median of {args.runs})")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'workload':<28}{'32-bit wasm (B)':>16}{'64-bit unix (B)':>17}{'32/64':>7}")
    for k, lanes in rows.items():
        w, u = statistics.median(lanes["wasm32"]), statistics.median(lanes["unix"])
        print(f"{k:<28}{w:>16.0f}{u:>17.0f}{w / u if u else float('nan'):>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
