"""Run a MicroPython snippet on the real unix port, with firmware/ on its path (tests only;
the binary and its environment come from hil.sim.firmware)."""
from __future__ import annotations

import os
import subprocess
import tempfile

from hil.sim.firmware import micropython_binary, micropython_env


def run_micropython(code: str, *, heap: str = "256k", timeout: float = 30, env: dict | None = None,
                    cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run a MicroPython snippet with firmware/ on its path; returns the completed process."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
        path = f.name
    try:
        return subprocess.run([micropython_binary(), "-X", f"heapsize={heap}", path],
                              capture_output=True, text=True, timeout=timeout,
                              env=micropython_env(env), cwd=cwd, check=False)
    finally:
        os.unlink(path)


