"""A firmware app in the real MicroPython binary, on bytecode as a board runs it, under a test's
own fake runtime script that prints JSON lines (the app's events, replies, logs): the process,
the lines it printed, and waiting for one. The firmware app tests (locker bank, rack display)
add their world and their commands on top."""
from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.sim.firmware import build_mpy, micropython_binary, micropython_env


class AppProcess:
    def __init__(self, workdir: Path, dev: str, fake_runtime: str, config: dict[str, Any],
                 heap: str = "96k") -> None:
        self.dev, self.heap = dev, heap
        self.dir = workdir / dev
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "fake_rt.py").write_text(fake_runtime)
        (self.dir / "config.json").write_text(json.dumps(config))
        self.env = micropython_env(path=build_mpy())  # run bytecode, as a board does
        self.msgs: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def launch(self, timeout: float = 5.0) -> None:
        """Start the process and wait for its `ready` line (read from the moment before the
        process exists: its "ready" may come before Popen returns)."""
        m = self.mark()
        self.proc = subprocess.Popen([micropython_binary(), "-X", f"heapsize={self.heap}",
                                      str(self.dir / "fake_rt.py"), str(self.dir / "config.json")],
                                     cwd=self.dir, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait(lambda msg: msg.get("ready"), "ready", timeout, start=m)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                msg = {"text": line.rstrip()}
            with self.cond:
                self.msgs.append(msg)
                self.cond.notify_all()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def mark(self) -> int:
        with self.cond:
            return len(self.msgs)

    def wait(self, pred: Callable[[dict[str, Any]], Any], what: str, timeout: float = 5.0,
             start: int = 0) -> dict[str, Any]:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pred(m) for m in self.msgs[start:]), timeout)
            if not ok:
                tail = "\n".join(json.dumps(m) for m in self.msgs[-15:])
                raise AssertionError(f"{self.dev}: no {what} within {timeout}s; last messages:\n{tail}")
            return next(m for m in self.msgs[start:] if pred(m))
