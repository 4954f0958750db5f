"""CI smoke run of the benchmarks (docs/benchmarks.md): ingest, command round trip, chain, head office,
scale, body flood, firmware heap, SQLite settings, MQTT clients, conformance under a short heap.

Each script runs with `--quick` (tiny sizes) as a subprocess: it must exit 0 (which includes its
integrity check: no event lost or duplicated, every command `done`) and print its figure lines.
The figures themselves are never asserted: timings belong to the benchmark, not to tests.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None
                                and not Path("/usr/sbin/mosquitto").exists(),
                                reason="mosquitto not installed")

NUM = r"[0-9]+(?:\.[0-9]+)?"


def run_quick(script: str, timeout: float = 60) -> str:
    p = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout, check=False)
    assert p.returncode == 0, f"{script} --quick failed (rc={p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_ingest_benchmark_quick_prints_its_figures():
    out = run_quick("ingest.py")
    assert re.search(rf"^raw ceiling: {NUM} msgs/s", out, re.MULTILINE), out
    assert re.search(rf"^gateway events/s: {NUM} .*CPU {NUM} us/event", out, re.MULTILINE), out
    assert re.search(rf"^ratio: {NUM}", out, re.MULTILINE), out
    # the gateway's threads: the event loop and the busiest others, on a core and waiting
    assert re.search(rf"^  gateway threads \(share of the phase\): main {NUM} on a core, {NUM} "
                     r"waiting for one; thread [+-]\d+ ", out, re.MULTILINE), out
    assert re.search(rf"^latency publish->persisted \(ack\) ms: p50 {NUM}\s+p99 {NUM}", out, re.MULTILINE), out
    assert re.search(r"^integrity: OK .*lost 0, duplicates 0", out, re.MULTILINE), out


def test_command_rtt_benchmark_quick_prints_its_figures():
    out = run_quick("command_rtt.py")
    lines = re.findall(rf"^command rtt ms \(background [^)]*\): p50 {NUM}\s+p95 {NUM}\s+p99 {NUM}"
                       r".*failed 0", out, re.MULTILINE)
    assert len(lines) == 2, out  # --quick: no background load, then a light one
    # where the time went, per level (the gateway's stage trace)
    assert len(re.findall(r"^  stages ms over \d+ commands", out, re.MULTILINE)) == 2, out
    assert len(re.findall(rf"^    writer queue\s+{NUM} /\s+{NUM}", out, re.MULTILINE)) == 2, out
    assert re.search(r"^goal: p99 < 25 ms", out, re.MULTILINE), out
    assert re.search(r"^integrity: OK", out, re.MULTILINE), out


def test_chain_benchmark_quick_prints_its_figures():
    out = run_quick("chain.py", timeout=120)
    assert re.search(rf"^end to end device->central events/s: {NUM}; persisted\+acked at the "
                     rf"gateway: {NUM}/s", out, re.MULTILINE), out
    assert re.search(rf"^bridge catch-up events/s: {NUM}", out, re.MULTILINE), out
    assert re.search(r"^integrity: OK lost 0, chain seq gaps 0", out, re.MULTILINE), out


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_scale_benchmark_quick_prints_its_figures():
    out = run_quick("scale.py", timeout=240)
    assert re.search(rf"^memory: gateway RSS {NUM} MB .*: -?{NUM} KB per device", out, re.MULTILINE), out
    assert re.search(rf"^offline detection: 10 devices .* in {NUM} ms", out, re.MULTILINE), out
    assert re.search(rf"^birth storm: .*all 30 devices reconnected .* {NUM} s after", out, re.MULTILINE), out
    assert re.search(r"^integrity: OK .*lost 0, duplicates 0; latest session stored for 30 of 30",
                     out, re.MULTILINE), out


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_body_flood_benchmark_quick_prints_its_figures():
    out = run_quick("body_flood.py", timeout=120)
    assert re.search(r"^machine: .*CPUs", out, re.MULTILINE), out
    for name in ("content-length", "chunked"):
        assert re.search(rf"^attack {name}: answer \d+ after {NUM} ms", out, re.MULTILINE), out
    for phase in ("before", "during content-length", "between", "during chunked", "after"):
        assert re.search(rf"^{phase}\s+{NUM}\s+{NUM}\s+{NUM}\s+{NUM}", out, re.MULTILINE), out
    assert re.search(r"^integrity: OK .*lost 0, duplicates 0", out, re.MULTILINE), out


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_fw_heap_benchmark_quick_prints_its_figures():
    out = run_quick("fw_heap.py", timeout=240)
    assert re.search(r"^\s+heap\s+96 KB: ok", out, re.MULTILINE), out
    assert re.search(rf"^sample-pad\s+96\s+96\s+{NUM}\s+{NUM}$", out, re.MULTILINE), out


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_central_benchmark_quick_prints_its_figures():
    out = run_quick("central.py", timeout=180)
    assert re.search(rf"^cluster acknowledged: {NUM} events/s; stored in PostgreSQL: {NUM} "
                     rf"events/s", out, re.MULTILINE), out
    assert re.search(rf"^CPU per event: nats {NUM} us, consumer {NUM} us, postgres {NUM} us",
                     out, re.MULTILINE), out
    assert re.search(rf"^stores absorbed: {NUM} at a busy store's peak", out, re.MULTILINE), out
    assert re.search(r"^integrity: OK \(4 stores, each seq 1\.\.100 exactly once\)", out,
                     re.MULTILINE), out


def test_sqlite_settings_benchmark_quick_prints_its_figures():
    out = run_quick("sqlite_settings.py")
    medians = re.findall(rf"^median (\S+)\s+wall\s+{NUM} us/event, CPU\s+{NUM} us/event", out,
                         re.MULTILINE)
    assert "default" in medians and "page_size=1024" in medians, out


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_mqtt_clients_benchmark_quick_prints_its_figures():
    """Exits 1 when a client did not receive every message (the bench's integrity)."""
    out = run_quick("mqtt_clients.py", timeout=120)
    assert re.search(rf"^median mqtt_lite\s+{NUM} msgs/s, {NUM} us CPU/msg", out, re.MULTILINE), out
    assert "FAILED" not in out, out


def test_writer_apply_benchmark_quick_prints_its_figures():
    """bench/writer_apply.py (issue 18, session 8): the writer's CPU per event, B with a command
    write cutting into each batch."""
    out = run_quick("writer_apply.py")
    assert "A: median" in out and "B: median" in out, out
    b = [line for line in out.splitlines() if line.startswith("round 1 B:")]
    assert len(b) == 1 and "cuts 2," in b[0], out  # one cut in each of the 2 batches
    assert re.search(rf", fold {NUM} \+ alerts {NUM} us CPU/event", b[0]), out
    assert "B: median" in out and "for the fold and the alerts' scan" in out, out


def test_conformance_heap_benchmark_quick_prints_its_figures():
    """bench/conformance_heap.py (session 10): the kit against our firmware with a given heap,
    failures counted per heap size; `--quick` is one `ping` run at the 96 KB goal."""
    out = run_quick("conformance_heap.py")
    assert re.search(r"^96k run 1: pass in", out, re.MULTILINE), out
    assert "96k: 0 of 1 runs failed (ping)" in out, out
