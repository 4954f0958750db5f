"""CI smoke run of bench/year.py --quick (docs/benchmarks.md, "A year in a store"): it exits 0,
writes its events through apply_batch, runs the real gateway on the result, answers every API
read, prunes the older half and prints its figures; the timings are never asserted."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~30-60 s: a fill, six ingest rounds, a gateway, a backup, a pruning pass
def test_year_benchmark_quick_prints_its_figures():
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "year.py"), "--quick"], check=False,
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.startswith("machine: ")
    assert "fill: 27450 events in " in out, out
    for figure in ("size, retention off, a year", "size, default retention, after a year",
                   "ingest (apply_batch", "gateway startup on the full database: ",
                   "GET /events?device&type (rare): ", "GET /audit?who: ", "GET /storage: ",
                   "gateway RSS after the reads: ", "gateway idle CPU", "backup (phygital db backup)",
                   "longest writer hold while pruning", "size, retention on"):
        assert figure in out, (figure, out)
    pruned = int(re.search(r"^pruning .*: events=(\d+) ", out, re.MULTILINE).group(1))
    assert 10_000 < pruned < 27_450, out        # about the older half, never all
    before = float(re.search(r"\(was ([\d.]+) MB\)", out).group(1))
    after = float(re.search(r"^size, retention on .*: ([\d.]+) MB", out, re.MULTILINE).group(1))
    assert after < before, out
