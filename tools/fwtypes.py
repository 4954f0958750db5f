"""Type-check the firmware against each target port's published MicroPython stubs.

    python -m tools.fwtypes                 # every port; exit 1 on any finding
    python -m tools.fwtypes --port esp32    # one port
    python -m tools.fwtypes --install       # install missing stubs first (.ci/run does)
    python -m tools.fwtypes --all           # also print what the filter drops (see below)

Each port's stub package (PORTS, from PyPI, pinned to the MicroPython release the firmware
targets) is installed into its own folder, ``.venv-stubs/<port>`` (``pip install --target``:
the packages share file names, so they cannot share a site-packages). mypy then runs over
firmware/ with that folder as its typeshed (the packages carry MicroPython's own stdlib stubs,
so ``asyncio``, ``os``, ``json`` are the MicroPython ones) and as its MYPYPATH (``machine``,
``network``, ``time``, ...). Settings: tools/fwtypes.ini.

What is checked: every file of firmware/ except ``edge/hal_sim.py`` (the unix-only sim HAL;
its errors are ignored in fwtypes.ini). What counts as a finding: the port surface, that is an
import the port lacks, an attribute a port module or port class lacks, a call with arguments
the port's signature refuses, a name the port's builtins lack, and a stale ``type: ignore``.
What is dropped: mypy's inference complaints about the firmware's own dynamic code (it has no
annotations, sets attributes from a boot module to free heap, and re-binds names to None to
free modules), and errors inside the stub packages themselves. ``--all`` prints them too.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
STUBS = ROOT / ".venv-stubs"
CONFIG = ROOT / "tools" / "fwtypes.ini"

# port -> stub package (PyPI), pinned to the MicroPython release the firmware targets
PORTS = {
    "esp32": "micropython-esp32-stubs==1.29.*",
    "rp2-pico-w": "micropython-rp2-rpi-pico-w-stubs==1.29.*",
}

# mypy error codes that are about the port's API
KEEP = {"import-not-found", "import-untyped", "import", "attr-defined", "call-arg", "arg-type",
        "call-overload", "name-defined", "unused-ignore"}

_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<sev>error|note): (?P<msg>.*?)(?:  \[(?P<code>[a-z-]+)\])?$")
_SUBJECT = re.compile(r'^(?:Module(?: "(?P<mod>[\w.]+)")?|"(?P<cls>[\w.]+)") has no attribute')


@dataclass(frozen=True)
class Finding:
    port: str
    file: str
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"[{self.port}] {self.file}:{self.line}: {self.message}  [{self.code}]"


def stubs_dir(port: str) -> Path:
    return STUBS / port


def installed(port: str) -> bool:
    return (stubs_dir(port) / "machine.pyi").exists() and (stubs_dir(port) / "stdlib" / "VERSIONS").exists()


def install(port: str) -> None:
    """pip install the port's stubs into .venv-stubs/<port> (skipped when present)."""
    if installed(port):
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--upgrade", "--target",
                    str(stubs_dir(port)), PORTS[port]], check=True)


def firmware_classes(root: Path = FIRMWARE) -> set[str]:
    """Class names the firmware defines (their dynamic attributes are not the port's business)."""
    names: set[str] = set()
    for p in root.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
    return names


def is_port_finding(code: str, message: str, ours: set[str]) -> bool:
    if code not in KEEP:
        return False
    if code == "attr-defined":
        m = _SUBJECT.match(message)
        if m is None:
            return True
        if m["cls"] is None:
            return True  # a module (port or ours) without that name: always a real error
        return m["cls"] not in ours and m["cls"] != "None"
    return True


def run_port(port: str, files: list[str] | None = None, *, cwd: Path = FIRMWARE,
             show_all: bool = False) -> tuple[list[Finding], list[str]]:
    """(findings, dropped lines) of mypy over `files` (default: firmware/) for one port."""
    stubs = stubs_dir(port)
    if not installed(port):
        raise FileNotFoundError(f"stubs for {port} are not installed in {stubs}: run "
                                f"`python -m tools.fwtypes --install` (pip install --target {stubs} '{PORTS[port]}')")
    targets = files or ["edge", "main.py"]
    env = dict(os.environ, MYPYPATH=str(stubs))
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(CONFIG),
                        "--custom-typeshed-dir", str(stubs), *targets],
                       cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if r.returncode not in (0, 1):  # 2: mypy could not run (bad config, syntax error, crash)
        raise RuntimeError(f"mypy failed for {port} (exit {r.returncode}):\n{r.stdout}{r.stderr}")
    ours = firmware_classes(cwd)
    findings: list[Finding] = []
    dropped: list[str] = []
    for ln in r.stdout.splitlines():
        m = _LINE.match(ln)
        if m is None or m["sev"] != "error":
            continue
        path = Path(m["file"])
        inside = not path.is_absolute() and ".." not in path.parts
        code = m["code"] or ""
        if inside and is_port_finding(code, m["msg"], ours):
            findings.append(Finding(port, str(Path(cwd.name) / path) if cwd == FIRMWARE else str(path),
                                    int(m["line"]), code, m["msg"]))
        elif show_all:
            dropped.append(ln)
    return findings, dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fwtypes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", choices=sorted(PORTS), action="append", help="only this port (repeatable)")
    ap.add_argument("--install", action="store_true", help="pip install missing stubs into .venv-stubs/<port>")
    ap.add_argument("--all", action="store_true", help="also print the mypy errors the filter drops")
    args = ap.parse_args(argv)
    total = 0
    for port in args.port or sorted(PORTS):
        if args.install:
            install(port)
        try:
            findings, dropped = run_port(port, show_all=args.all)
        except FileNotFoundError as e:
            print(f"fwtypes: {e}", file=sys.stderr)
            return 2
        for line in dropped:
            print(f"  (dropped) [{port}] {line}")
        for f in findings:
            print(f)
        print(f"{port} ({PORTS[port]}): {len(findings)} findings")
        total += len(findings)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
