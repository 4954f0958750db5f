"""Put the firmware, a device config and a board file on a MicroPython board over USB serial.

    python -m tools.deploy --port /dev/ttyUSB0 --config pad-1.json --board boards/esp32-devkitc.json

Steps: validate the config and board file here (a bad config never reaches the board); open
the port without resetting the board; stop the running program and enter the raw REPL; create
the directories; for each file compare the board's sha256 with ours and write only what
differs (``--force`` writes everything), in chunks, to ``<name>.tmp`` then over the file, and
verify it (sha256, or size on a board without hashlib); leave the raw REPL and reset the board
(``--reset``: ``soft`` for Ctrl-D, ``rts`` on ESP32 DevKitC-style USB-UARTs, ``machine``
for ``machine.reset()`` on USB CDC boards, ``none``), then follow the console until the firmware's ready line.

Board layout: ``/main.py``, ``/edge/...`` (the firmware package; ``--mpy`` sends mpy-cross
bytecode instead of source, as a board runs it), ``/config.json``, ``/board.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools import boards

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"


class DeployError(RuntimeError):
    pass


@dataclass
class Item:
    remote: str
    data: bytes
    source: str  # for messages

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Report:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    bytes_written: int = 0
    seconds: float = 0.0
    verified_by: dict[str, str] = field(default_factory=dict)
    ready_line: str | None = None


def _load_config_module():
    spec = importlib.util.spec_from_file_location("_edge_config", FIRMWARE / "edge" / "config.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def validate(config_path: Path, board_path: Path) -> tuple[dict, dict]:
    """Check the config with the firmware's own loader and the board file's shape."""
    cfgmod = _load_config_module()
    try:
        cfg = cfgmod.load(str(config_path))
    except cfgmod.ConfigError as e:
        raise DeployError(f"{config_path}: {e}") from None
    if cfg.get("board") == "sim":
        raise DeployError(f"{config_path}: board is 'sim' (the virtual rig's HAL); a board needs "
                          "the board file's name, e.g. \"esp32-devkitc\"")
    if "sim" in cfg:
        raise DeployError(f"{config_path}: has a 'sim' section; that config is for the virtual rig")
    if cfg.get("board") in boards.RETIRED:
        raise DeployError(f"{config_path}: board {cfg['board']!r}: {boards.RETIRED[cfg['board']]}")
    try:
        board = boards.load(board_path)
    except ValueError as e:
        raise DeployError(str(e)) from None
    rep = boards.check_board(board, str(board_path))  # pins exist, not reserved, buses legal
    if rep.errors:
        raise DeployError("bad board file (python -m tools.boards check):\n  " + "\n  ".join(rep.errors))
    assert isinstance(board, dict)
    if cfg.get("board") and board.get("board") and cfg["board"] != board["board"]:
        raise DeployError(f"{config_path} says board {cfg['board']!r} but {board_path} is {board['board']!r}")
    app = cfg.get("app", {})
    for key, group in (("led", "pins"), ("spi", "spi")):
        name = app.get(key, {"led": "led", "spi": "rfid"}[key])
        if cfg["kind"] == "sample-pad" and name not in board.get(group, {}):
            raise DeployError(f"{board_path}: the sample pad needs {group}.{name} (config app.{key})")
    return cfg, board


def plan(config_path: Path, board_path: Path, mpy: bool = False) -> list[Item]:
    validate(config_path, board_path)
    items: list[Item] = []
    if mpy:
        from hil.sim.firmware import build_mpy

        src_root = build_mpy()
        files = sorted((src_root / "edge").rglob("*.mpy"))
        base = src_root
    else:
        files = sorted((FIRMWARE / "edge").rglob("*.py"))
        base = FIRMWARE
    for f in files:
        if "__pycache__" in f.parts:
            continue
        shown = str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f)
        items.append(Item("/" + f.relative_to(base).as_posix(), f.read_bytes(), shown))
    items.append(Item("/main.py", (FIRMWARE / "main.py").read_bytes(), "firmware/main.py"))
    items.append(Item("/config.json", config_path.read_bytes(), str(config_path)))
    items.append(Item("/board.json", board_path.read_bytes(), str(board_path)))
    return items


def remote_dirs(items: list[Item]) -> list[str]:
    dirs: list[str] = []
    for it in items:
        parts = it.remote.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)
    return dirs


class Progress:
    """One line per file; a live bar while a file is written when stdout is a terminal."""

    def __init__(self, total_files: int, out=None):
        self.out = out or sys.stdout
        self.total = total_files
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.n = 0

    def file(self, name: str):
        self.n += 1
        prefix = f"[{self.n:>2}/{self.total}] {name:<34}"

        def cb(done: int, size: int) -> None:
            if self.tty:
                frac = done / size if size else 1.0
                bar = "#" * int(frac * 20)
                self.out.write(f"\r{prefix} {bar:<20} {done:>6}/{size} B")
                self.out.flush()
        return prefix, cb

    def done(self, prefix: str, status: str) -> None:
        if self.tty:
            self.out.write("\r" + " " * 100 + "\r")
        self.out.write(f"{prefix} {status}\n")
        self.out.flush()


def deploy(board, items: list[Item], *, force: bool = False, out=None) -> Report:
    """Write `items` to `board` (an open hil.pi.board.SerialBoard) and verify each."""
    t0 = time.monotonic()
    rep = Report()
    prog = Progress(len(items), out)
    with board.raw_repl():
        for d in remote_dirs(items):
            board.fs_mkdir(d)
        for it in items:
            prefix, cb = prog.file(it.remote)
            if not force and board.fs_sha256(it.remote) == it.sha256:
                rep.unchanged.append(it.remote)
                prog.done(prefix, f"unchanged ({len(it.data)} B)")
                continue
            board.fs_put(it.data, it.remote, progress=cb)
            how = board.fs_verify(it.data, it.remote)
            rep.written.append(it.remote)
            rep.verified_by[it.remote] = how
            rep.bytes_written += len(it.data)
            prog.done(prefix, f"written, verified by {how} ({len(it.data)} B)")
    rep.seconds = time.monotonic() - t0
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.deploy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    ap.add_argument("--config", required=True, type=Path, help="device config (config.json on the board)")
    ap.add_argument("--board", required=True, type=Path, help="board file, e.g. boards/esp32-devkitc.json")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--mpy", action="store_true", help="send mpy-cross bytecode instead of .py source")
    ap.add_argument("--force", action="store_true", help="write every file, even unchanged ones")
    ap.add_argument("--reset", choices=("rts", "machine", "soft", "none"), default="soft",
                    help="how to restart the firmware afterwards: soft = Ctrl-D (default), rts = EN via "
                         "the USB-UART, machine = machine.reset() (USB CDC boards)")
    ap.add_argument("--ready", default=r"online session", help="console line that means the firmware is up")
    ap.add_argument("--wait", type=float, default=20.0, help="seconds to wait for the ready line (0: don't)")
    ap.add_argument("--log", type=Path, help="append everything the board sends to this file")
    ap.add_argument("--dry-run", action="store_true", help="validate and list the files, touch no board")
    args = ap.parse_args(argv)

    from hil.pi.board import BoardError, BootFailure, SerialBoard

    try:
        items = plan(args.config, args.board, mpy=args.mpy)
    except DeployError as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 2
    total = sum(len(i.data) for i in items)
    print(f"{len(items)} files, {total} bytes -> {args.port}")
    if args.dry_run:
        for it in items:
            print(f"  {it.remote:<36} {len(it.data):>7} B  {it.sha256[:12]}  from {it.source}")
        return 0
    board = SerialBoard(args.port, args.baud, name="board", log_path=args.log, reset="rts")
    try:
        board.open()
        rep = deploy(board, items, force=args.force)
        print(f"{len(rep.written)} written ({rep.bytes_written} B), {len(rep.unchanged)} unchanged, "
              f"{rep.seconds:.1f} s")
        if args.reset != "none":
            since = len(board.lines)
            if args.reset in ("rts", "machine"):
                board.hard_reset(args.reset)
            else:
                board.soft_reset()
            if args.wait > 0:
                line = board.wait_ready(args.ready, args.wait, since=since)
                print(f"firmware up: {line}")
        return 0
    except BootFailure as e:
        print(f"deploy: files are on the board, but it did not come up:\n{e}", file=sys.stderr)
        return 3
    except BoardError as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 1
    finally:
        board.close()


if __name__ == "__main__":
    sys.exit(main())
