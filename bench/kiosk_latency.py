"""Sample kiosk latency: a tag enters the pad's field → its content painted on the kiosk page.

    .venv/bin/python bench/kiosk_latency.py              # 200 placements
    .venv/bin/python bench/kiosk_latency.py --n 30       # a quicker look

The real chain, nothing stubbed: the sample-pad firmware (MicroPython unix port) on the
virtual rig with its emulated MFRC522 (poll every 40 ms, the wiring's `poll_ms`), a real
Mosquitto, the gateway (`python -m gateway`, demo catalog and stock), and the kiosk page in
headless Chromium (Playwright). Each round: the tag is put in the emulated reader's field
(t0, this process's wall clock, just before `place`), the page gets `tag.placed` on `/stream`
and paints the sample's content; the page's `performance.mark("kiosk-content")` is taken in
the first task after the frame (requestAnimationFrame + setTimeout 0) and read back through
Playwright as `timeOrigin + startTime` (the same machine's wall clock). Then the tag is lifted
and the page goes idle before the next round (a random 0-100 ms pause, so the placement falls
anywhere in the firmware's poll period).

Prints the machine and its load, p50/p90/p99/max of `tag → content painted`, the split
`tag → event stored at the gateway` (`t_gateway` of the event) / `stored → painted`, the
`tag → price and stock painted` (`kiosk-details`, after `GET /pads/{pad}`), and a histogram.
Goal: p99 < 150 ms (docs/benchmarks.md). A benchmark, not a test: it asserts nothing about
time; it exits 1 only if a round was not painted at all.
"""
from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.micropython_lib import machine
from hil.harness import GatewayProcess, Mosquitto, wait_for
from hil.rig import VirtualRigBackend
from tools.loadgen import percentiles

DEMO = ROOT / "gateway" / "demo"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
GOAL_P99_MS = 150.0
MARK_AT = """(name) => { const m = performance.getEntriesByName(name);
  return m.length ? [m.length, performance.timeOrigin + m[m.length - 1].startTime] : [0, 0]; }"""


def histogram(values: list[float], width: int = 40) -> str:
    edges = [0, 25, 50, 75, 100, 125, 150, 200, 300, 500, 1000, float("inf")]
    counts = [sum(lo <= v < hi for v in values) for lo, hi in itertools.pairwise(edges)]
    top = max(counts) or 1
    lines = []
    for (lo, hi), n in zip(itertools.pairwise(edges), counts):
        label = f"{lo:>4.0f}-{hi:<4.0f}" if hi != float("inf") else f"{lo:>4.0f}+    "
        lines.append(f"  {label} ms {n:>5} {'#' * round(n / top * width)}")
    return "\n".join(lines)


def fmt(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in p.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="placements (default 200)")
    ap.add_argument("--tag", default="S-1001", help="tag of the wiring file (default S-1001)")
    args = ap.parse_args()
    exe = os.environ.get("PE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    from playwright.sync_api import sync_playwright

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker").start()
        gw = GatewayProcess(work / "gw", broker.port, samples=DEMO / "samples.json",
                            extra_args=["--stock", str(DEMO / "stock.json")]).start()
        rig = VirtualRigBackend(work / "rig", ("127.0.0.1", broker.port))
        dev = "pad-1"
        try:
            rig.start(dev)
            wait_for(lambda: any(d["id"] == dev and d["online"] for d in gw.get("/devices")), 20,
                     what=f"{dev} online")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1000, "height": 800})
                page.goto(f"{gw.url}/kiosk/{dev}#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
                page.locator('[data-testid="idle"]:visible').wait_for(timeout=20_000)
                page.wait_for_timeout(1000)  # the stream open, the first view fetched
                t0s, paint, details = [], [], []
                for i in range(args.n):
                    time.sleep(random.uniform(0, 0.1))
                    t0 = time.time() * 1000
                    rig.place_tag(dev, args.tag)
                    page.wait_for_function(f"performance.getEntriesByName('kiosk-content').length > {i}",
                                           timeout=20_000)
                    page.wait_for_function(f"performance.getEntriesByName('kiosk-details').length > {i}",
                                           timeout=20_000)
                    t0s.append(t0)
                    paint.append(page.evaluate(MARK_AT, "kiosk-content")[1] - t0)
                    details.append(page.evaluate(MARK_AT, "kiosk-details")[1] - t0)
                    idles = page.evaluate(MARK_AT, "kiosk-idle")[0]
                    rig.remove_tag(dev, quiet=True)
                    page.wait_for_function(f"performance.getEntriesByName('kiosk-idle').length > {idles}",
                                           timeout=20_000)
                browser.close()
            placed = gw.events(dev, "tag.placed")[-args.n:]
            stored = [e["t_gateway"] - t0 for e, t0 in zip(placed, t0s)]
            after = [p - s for p, s in zip(paint, stored)]
        finally:
            rig.close()
            gw.stop()
            broker.stop()
    print(f"kiosk latency over {len(paint)} placements of {args.tag} on {dev} (real pad firmware, "
          f"poll 40 ms; gateway, Mosquitto, Chromium on this machine)")
    print(f"  tag -> content painted      {fmt(percentiles(paint))} ms")
    print(f"  tag -> event stored         {fmt(percentiles(stored))} ms")
    print(f"  stored -> content painted   {fmt(percentiles(after))} ms")
    print(f"  tag -> price/stock painted  {fmt(percentiles(details))} ms")
    print("  distribution of tag -> content painted:")
    print(histogram(paint))
    p99 = percentiles(paint)["p99"]
    print(f"goal p99 < {GOAL_P99_MS:.0f} ms: {'met' if p99 < GOAL_P99_MS else 'MISSED'} "
          f"(p99 {p99} ms); machine load now: {machine().rsplit(', ', 1)[-1]}")
    return 0 if len(paint) == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
