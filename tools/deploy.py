"""Put the firmware, a device config and a board file on a MicroPython board over USB serial.

    python -m tools.deploy --port /dev/ttyUSB0 --config pad-1.json --board boards/esp32-devkitc.json

Steps: validate the config and board file here (a bad config never reaches the board); open
the port without resetting the board; stop the running program and enter the raw REPL; create
the directories; for each file compare the board's sha256 with ours and write only what
differs (``--force`` writes everything), in chunks, to ``<name>.tmp`` then over the file, and
verify it (sha256 on the board, or read back on a board without hashlib); leave the raw REPL
and reset the board (``--reset``: ``soft`` for Ctrl-D, ``rts`` on ESP32 DevKitC-style
USB-UARTs, ``machine`` for ``machine.reset()`` on USB CDC boards, ``none``), then follow the
console until the firmware's ready line.

Board layout: ``/main.py``, ``/edge/...`` (the firmware package; ``--mpy`` sends mpy-cross
bytecode instead of source, as a board runs it), ``/config.json``, ``/board.json``.

The board side is mpremote's (``mpremote.transport_serial.SerialTransport``, the library
behind the ``mpremote`` command): raw REPL and raw-paste, ``fs_mkdir``, ``fs_writefile``,
``fs_hashfile``. What this module adds, because mpremote does not do it:

* opening the port without resetting the board: DTR and RTS are de-asserted before the port
  opens (mpremote does that only for CP210x adapters on Windows; elsewhere pyserial raises
  both lines at open, which an RC-only auto-reset circuit turns into a reset) and reads
  time out instead of blocking for ever on a board that stopped answering;
* a second Ctrl-C before entering the raw REPL (an asyncio firmware may swallow the first);
* writing each file to ``<name>.tmp`` and renaming it over the file (mpremote writes in
  place: a cable pulled mid-file would leave half a ``main.py``), then verifying the written
  file (mpremote compares hashes only to skip unchanged files);
* checking the config and board file with the firmware's own loader before the port opens;
* after the reset, following the console until the ready line and telling a board that
  booted from one that crashed or boot-loops (`hil.pi.board.SerialBoard.wait_ready`).

The firmware alone (no config, no board file) is also a mip package: ``package.json`` at the
repository root (``python -m tools.mip_package``), installed with
``mpremote mip install --target / package.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from gateway.kinds.registry import device_kinds
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
        cfg = cfgmod.load(str(config_path), device_kinds())  # (loaded alone: no edge.boot)
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


def firmware_sources() -> list[tuple[str, Path]]:
    """The firmware's files as (path on the board, source): ``edge/**.py`` and ``main.py``.
    The same list is the mip package (package.json, tools/mip_package.py) and the freeze
    manifest (boards/manifest.py: package edge, module main.py)."""
    files = sorted(f for f in (FIRMWARE / "edge").rglob("*.py") if "__pycache__" not in f.parts)
    out = [(f.relative_to(FIRMWARE).as_posix(), f) for f in files]
    out.append(("main.py", FIRMWARE / "main.py"))
    return out


def plan(config_path: Path, board_path: Path, mpy: bool = False) -> list[Item]:
    validate(config_path, board_path)
    items: list[Item] = []
    if mpy:
        from hil.sim.firmware import build_mpy

        src_root = build_mpy()
        for rel, _src in firmware_sources():
            if rel == "main.py":  # main.py stays source: a board runs /main.py, never main.mpy
                continue
            f = src_root / Path(rel).with_suffix(".mpy")
            shown = str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f)
            items.append(Item("/" + f.relative_to(src_root).as_posix(), f.read_bytes(), shown))
    else:
        for rel, src in firmware_sources():
            if rel != "main.py":
                items.append(Item("/" + rel, src.read_bytes(), str(src.relative_to(ROOT))))
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


class Link:
    """The board's raw REPL through mpremote's SerialTransport, plus what mpremote lacks
    (module docstring): a quiet open, a second Ctrl-C, replace-by-rename, verify."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 5.0):
        import serial
        from mpremote.transport_serial import SerialTransport

        s = serial.serial_for_url(port, do_not_open=True, baudrate=baud, timeout=timeout,
                                  write_timeout=timeout, exclusive=True)
        s.dtr = False  # ESP auto-reset: DTR drives GPIO0, RTS drives EN; keep both released
        s.rts = False
        try:
            s.open()
        except (serial.SerialException, OSError) as e:
            raise DeployError(f"cannot open {port}: {e} (is a console or another deploy using it? "
                              "is the board plugged in?)") from None
        # SerialTransport's constructor opens the port itself (with DTR/RTS raised): let it open
        # pyserial's loopback instead, so every attribute mpremote needs is set by mpremote,
        # then give it our port.
        t = SerialTransport("loop://", baudrate=baud)
        t.serial.close()
        t.serial = s
        t.device_name = port
        t.is_pty = SerialTransport._is_pty_device(port)
        self.t = t
        self.port = port
        self.has_hashlib: bool | None = None

    def close(self) -> None:
        self.t.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def enter_raw_repl(self) -> None:
        from mpremote.transport import TransportError

        self.t.serial.write(b"\r\x03")
        time.sleep(0.05)  # an asyncio firmware may swallow the first Ctrl-C; mpremote sends the next
        try:
            self.t.enter_raw_repl(soft_reset=False, timeout_overall=5)
        except TransportError as e:
            raise DeployError(f"{self.port}: could not enter the raw REPL ({e}); is MicroPython "
                              "running and the baud rate right?") from None
        try:
            self.t.exec("import hashlib\nhashlib.sha256")
            self.has_hashlib = True
        except TransportError:  # some small ports build without it: verify by reading back
            self.has_hashlib = False

    def exit_raw_repl(self) -> None:
        self.t.exit_raw_repl()

    def mkdir(self, path: str) -> None:
        try:
            self.t.fs_mkdir(path)
        except FileExistsError:
            pass

    def sha256(self, path: str) -> str | None:
        """Hex sha256 of a file on the board (hashed there, or read back without hashlib)."""
        try:
            return bytes(self.t.fs_hashfile(path, "sha256")).hex()
        except FileNotFoundError:
            return None

    def put(self, data: bytes, path: str, progress=None) -> str:
        """Write `path.tmp`, rename it over `path`, verify; returns how it was verified."""
        chunk = 1024 if self.t.use_raw_paste else 256
        tmp = path + ".tmp"
        self.t.fs_writefile(tmp, data, chunk_size=chunk, progress_callback=progress)
        # os.rename over an existing file: littlefs replaces it, FAT refuses; remove first
        self.t.exec(f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass\n"
                    f"os.rename({tmp!r},{path!r})")
        remote = self.sha256(path)
        if remote is None:
            raise DeployError(f"{self.port}: {path} is missing after writing it")
        if remote != hashlib.sha256(data).hexdigest():
            raise DeployError(f"{self.port}: {path} differs from what was written (sha256 mismatch)")
        return "sha256" if self.has_hashlib else "sha256 of a read-back"


def deploy(link: Link, items: list[Item], *, force: bool = False, out=None) -> Report:
    """Write `items` to the board behind `link` and verify each."""
    from mpremote.transport import TransportError

    t0 = time.monotonic()
    rep = Report()
    prog = Progress(len(items), out)
    link.enter_raw_repl()
    try:
        for d in remote_dirs(items):
            link.mkdir(d)
        for it in items:
            prefix, cb = prog.file(it.remote)
            # without hashlib a hash means reading the file back: just write it
            if not force and link.has_hashlib and link.sha256(it.remote) == it.sha256:
                rep.unchanged.append(it.remote)
                prog.done(prefix, f"unchanged ({len(it.data)} B)")
                continue
            how = link.put(it.data, it.remote, progress=cb)
            rep.written.append(it.remote)
            rep.verified_by[it.remote] = how
            rep.bytes_written += len(it.data)
            prog.done(prefix, f"written, verified by {how} ({len(it.data)} B)")
    except (TransportError, OSError) as e:
        raise DeployError(f"{link.port}: {e}") from None
    finally:
        with contextlib.suppress(OSError):  # a port that went away: the error above says so
            link.exit_raw_repl()
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
    try:
        with Link(args.port, args.baud) as link:
            rep = deploy(link, items, force=args.force)
    except DeployError as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 1
    print(f"{len(rep.written)} written ({rep.bytes_written} B), {len(rep.unchanged)} unchanged, "
          f"{rep.seconds:.1f} s")
    if args.reset == "none":
        return 0
    # the console side: resets and the ready line (mpremote only prints what comes)
    board = SerialBoard(args.port, args.baud, name="board", log_path=args.log, reset="rts")
    try:
        board.open()
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
