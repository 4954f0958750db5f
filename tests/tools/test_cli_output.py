"""`phygital demo`'s narration reaches a file or a pipe line by line (tools/cli.py)."""
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_stdout_reaches_a_file_as_each_line_is_printed(tmp_path):
    log = tmp_path / "out.log"
    script = ("import sys, time\n"
              "from tools.cli import line_buffered_stdout\n"
              "line_buffered_stdout()\n"
              "print('customer at the kiosk of pad-1 asks')\n"
              "time.sleep(30)\n")
    # as in CI and a user's shell: no PYTHONUNBUFFERED (this sandbox sets it, which hid the bug)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "asks" not in log.read_text() and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()  # still running: nothing flushed it at exit
        assert log.read_text() == "customer at the kiosk of pad-1 asks\n"
    finally:
        proc.kill()
        proc.wait()
