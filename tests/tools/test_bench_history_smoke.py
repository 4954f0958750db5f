"""Smoke run of bench/history.py (issue 17: a purchase and a locker order at day 1 and later,
idle CPU): `--quick` must exit 0 and print its figure lines; the figures are never asserted."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUM = r"[0-9]+(?:\.[0-9]+)?"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                    reason="mosquitto not installed")
def test_history_benchmark_quick_prints_its_figures():
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "history.py"), "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, f"rc={p.returncode}:\n{p.stdout}\n{p.stderr}"
    for days in (1, 10):
        assert re.search(rf"^\| this \| {days} d \| {NUM} / {NUM} ms \| {NUM} / {NUM} ms \| {NUM}% ",
                         p.stdout, re.MULTILINE), p.stdout
    assert re.search(rf"^this: day 10 / day 1 p50: purchase x{NUM}, order x{NUM}", p.stdout,
                     re.MULTILINE), p.stdout
