"""CI smoke run of bench/retention.py --quick (docs/benchmarks.md, "Retention"): it exits 0,
prunes exactly the older half it synthesizes and prints its figures; the timings are never
asserted."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_retention_benchmark_quick_prints_its_figures():
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "retention.py"), "--quick"], check=False,
                       cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.startswith("machine: ")
    assert re.search(r"^pruned: events=60000 commands=15000 in \d+ batches of <= 500 rows", out, re.MULTILINE), out
    for figure in ("longest writer hold (one batch, COMMIT included): ", "incremental vacuum: ",
                   "writes beside the pass", "file after: ", "/stats commands (15000 rows)"):
        assert figure in out, (figure, out)
    before = float(re.search(r"^file before: ([\d.]+) MB", out, re.MULTILINE).group(1))
    after = float(re.search(r"^file after: ([\d.]+) MB", out, re.MULTILINE).group(1))
    assert after < before, out
