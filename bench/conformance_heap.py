"""How often our firmware fails conformance clauses when its heap is short: runs the kit
(tools/conformance) against the pad firmware, as bytecode, in `micropython -X heapsize=N`,
a fresh device, rig and Mosquitto per run, and prints failures per heap size.

    .venv/bin/python bench/conformance_heap.py --heap 88k --runs 40            # bad-input
    .venv/bin/python bench/conformance_heap.py --heap 88k,96k --runs 20 --only bad-input,replay
    .venv/bin/python bench/conformance_heap.py --quick     # CI smoke: one `ping` run at 96 KB

A clause that fails only when the heap is short finds a MemoryError path that a run at the
goal (96 KB) meets rarely (docs/benchmarks.md, "A burst of malformed commands below the heap
goal"). Each failed run keeps its work directory (device console, flash) and prints it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tools.conformance as kit
from hil.sim.firmware import build_mpy, kit_device_cmd
from hil.sim.mfrc522 import MFRC522Emulator
from hil.sim.rig import VirtualRig


def one(heap: str, only: list[str], root: Path, i: int) -> tuple[list[str], float, Path]:
    wd = root / f"{heap}-{i}"
    rig = VirtualRig().start()
    try:
        rig.device("pad-cf").attach_spi("rfid", MFRC522Emulator())
        opts = kit.Options("pad-cf", device_cmd=kit_device_cmd(wd, heap),
                           device_config={"board": "sim", "sim": {"host": rig.host, "port": rig.port}},
                           workdir=wd, only=only)
        t = time.monotonic()
        report = kit.run(opts)
        took = time.monotonic() - t
    finally:
        rig.stop()
    bad = [f"{r.clause.id}: {r.detail}" for r in report.results if r.status == "fail"]
    if report.error:
        bad.append(f"error: {report.error}")
    return bad, took, wd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heap", default="88k", help="heap sizes, comma-separated (default 88k)")
    ap.add_argument("--runs", type=int, default=20, help="runs per heap size (default 20)")
    ap.add_argument("--only", default="bad-input", help="clauses, comma-separated (default bad-input)")
    ap.add_argument("--quick", action="store_true", help="one run of `ping` at 96k (CI smoke)")
    a = ap.parse_args(argv)
    if a.quick:
        a.heap, a.runs, a.only = "96k", 1, "ping"
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    only = [c for c in a.only.split(",") if c]
    known = {c.id for c in kit.CLAUSES}
    if set(only) - known:
        ap.error(f"unknown clause(s) {sorted(set(only) - known)}; known: {sorted(known)}")
    os.environ["MICROPYPATH"] = f"{build_mpy()}:.frozen"
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    root = Path(tempfile.mkdtemp(prefix="conformance-heap-"))
    summary = []
    for heap in a.heap.split(","):
        fails = 0
        for i in range(a.runs):
            bad, took, wd = one(heap, only, root, i)
            if bad:
                fails += 1
                print(f"{heap} run {i + 1}: FAIL in {took:.1f} s ({wd}): {'; '.join(bad)}", flush=True)
            else:
                shutil.rmtree(wd, ignore_errors=True)
                print(f"{heap} run {i + 1}: pass in {took:.1f} s", flush=True)
        summary.append(f"{heap}: {fails} of {a.runs} runs failed ({', '.join(only)})")
    if not any(root.iterdir()):  # every run passed: nothing to keep
        root.rmdir()
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
