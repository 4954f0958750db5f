"""The README's first command: `phygital demo` runs a whole virtual store (embedded broker,
gateway, pads, a fitting room and a locker bank on real firmware, scripted people) and stops
cleanly on Ctrl-C."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_demo_store_runs_every_device_and_stops_cleanly(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "demo", "--http", f"127.0.0.1:{port}",
                                 "--workdir", str(tmp_path / "demo"), "--seed", "3", "--pads", "2"],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        def get(path: str, **params):
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                r = httpx.get(base + path, params=params, timeout=5)
            except httpx.HTTPError:
                return None
            return r.json() if r.status_code == 200 else None

        devices = wait_for(lambda: (d := get("/devices")) and len([x for x in d if x["online"]]) == 4 and d,
                           90, what="4 demo devices online")
        assert sorted(d["kind"] for d in devices) == ["fitting-room", "locker-bank", "sample-pad", "sample-pad"]
        wait_for(lambda: (e := get("/events", type="tag.placed")) and e["events"], 60, what="a sample on a pad")
        wait_for(lambda: (e := get("/events", device="room-1")) and e["events"], 60, what="fitting-room events")
        collected = wait_for(lambda: (e := get("/events", device="lk-1", type="pickup.collected"))
                             and e["events"], 120, what="a locker pickup by code")
        assert collected[0]["body"]["order"].startswith("demo-")
        assert "Store dashboard" in httpx.get(base + "/dashboard", timeout=5).text
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert "demo stopped cleanly" in text and "Traceback" not in text, text[-3000:]
    assert "unknown locker bank" not in text, text[-3000:]  # orders wait for the bank's birth
