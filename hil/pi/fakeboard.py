"""A fake MicroPython board on a pseudo-terminal, for tests and dry runs of the deploy tools.

`FakeBoard` opens a pty pair and serves the slave's name as a serial port. A thread behind the
master end behaves like a MicroPython board's UART REPL, following shared/runtime/pyexec.c:

* power-on: an ESP32 ROM banner (``rst:0x1 (POWERON_RESET)``), then ``main.py`` if the board's
  filesystem has one (the fake "runs" it by printing the firmware's boot lines for the
  device id in ``config.json``, or ``config error: ...`` when that file is missing or bad),
  then sits "running" until Ctrl-C;
* friendly REPL: Ctrl-A → raw REPL, Ctrl-D → soft reboot (runs main.py again), Ctrl-B → banner;
* raw REPL: code + Ctrl-D → ``OK``, output, ``\\x04``, error, ``\\x04``, ``>``; Ctrl-D on an empty
  line → soft reboot; Ctrl-B → friendly REPL;
* raw-paste (``\\x05A\\x01``): ``R\\x01``, window (2 bytes LE) and ``\\x01``, then one ``\\x01`` per
  window consumed, ``\\x04`` to end; ``raw_paste=False`` behaves like firmware before v1.14
  (the request just resets the raw REPL), ``raw_paste="refuse"`` answers ``R\\x00``.

Code is executed by CPython with the board's filesystem mapped to a directory: ``open``,
``os`` (mkdir, stat, remove, rename, listdir), ``hashlib``, ``binascii``, ``json`` and a
``machine`` with ``reset()``. That is enough for the file-transfer snippets of
`hil.pi.board.SerialBoard`, so deploys really write files.
"""
from __future__ import annotations

import binascii
import builtins
import contextlib
import hashlib
import io
import json
import os
import select
import threading
import time
import traceback
import tty
from pathlib import Path
from typing import Self

ROM_BANNER = ("ets Jun  8 2016 00:22:57\r\n\r\nrst:0x{code:x} ({cause}),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
              "configsip: 0, SPIWP:0xee\r\nmode:DIO, clock div:2\r\nload:0x3fff0030,len:4540\r\n"
              "entry 0x40080674\r\n")
MPY_BANNER = ("MicroPython v1.24.1 on 2024-11-29; Fake ESP32 module with ESP32\r\n"
              "Type \"help()\" for more information.\r\n")
RESET_CODES = {"POWERON_RESET": 0x1, "SW_CPU_RESET": 0xC, "TG1WDT_SYS_RESET": 0x8, "RTCWDT_RTC_RESET": 0x10}


class _FakeOs:
    """The part of MicroPython's `os` the transfer snippets use, rooted at a directory."""

    def __init__(self, root: Path):
        self._root = root

    def _p(self, path: str) -> Path:
        parts = [p for p in str(path).split("/") if p not in ("", ".")]
        if ".." in parts:
            raise OSError(1, "EPERM")
        return self._root.joinpath(*parts)

    def mkdir(self, path):
        p = self._p(path)
        if p.exists():
            raise OSError(17, "EEXIST")
        if not p.parent.exists():
            raise OSError(2, "ENOENT")
        p.mkdir()

    def stat(self, path):
        p = self._p(path)
        if not p.exists():
            raise OSError(2, "ENOENT")
        st = p.stat()
        mode = 0x4000 if p.is_dir() else 0x8000
        return (mode, 0, 0, 0, 0, 0, st.st_size, int(st.st_mtime), int(st.st_mtime), int(st.st_mtime))

    def remove(self, path):
        p = self._p(path)
        if not p.is_file():
            raise OSError(2, "ENOENT")
        p.unlink()

    def rename(self, a, b):
        pa, pb = self._p(a), self._p(b)
        if not pa.exists():
            raise OSError(2, "ENOENT")
        if pb.exists():  # littlefs replaces; FAT refuses. Be the strict one.
            raise OSError(17, "EEXIST")
        pa.rename(pb)

    def listdir(self, path="/"):
        p = self._p(path)
        if not p.is_dir():
            raise OSError(2, "ENOENT")
        return sorted(x.name for x in p.iterdir())

    def rmdir(self, path):
        self._p(path).rmdir()


class _Machine:
    def __init__(self, board: FakeBoard):
        self._board = board

    def reset(self):
        self._board._pending_reset = "SW_CPU_RESET"
        raise SystemExit  # stops the snippet; the board resets after it

    def soft_reset(self):
        self._board._pending_reset = "SOFT"
        raise SystemExit


class FakeBoard:
    """A MicroPython board behind a pty. `port` is the device path to open with pyserial."""

    def __init__(self, root: str | Path, *, raw_paste: bool | str = True, window: int = 64,
                 boot_on_start: bool = True, boot_delay_s: float = 0.05, has_hashlib: bool = True,
                 crash_boots: int = 0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.raw_paste = raw_paste
        self.window = window
        self.boot_on_start = boot_on_start
        self.boot_delay_s = boot_delay_s
        self.has_hashlib = has_hashlib  # some small ports build without it: deploy verifies by size
        self.crash_boots = crash_boots  # the next n boots die by watchdog right after "boot"
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.mode = "off"  # off | running | friendly | raw
        self.line = bytearray()
        self.globals: dict = {}
        self.received = bytearray()  # everything the host sent (tests look at the protocol)
        self.execs: list[str] = []
        self.raw_paste_sessions = 0
        self.flow_grants = 0
        self.resets: list[str] = []
        self.boot_count = 0
        self._pending_reset: str | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._watch: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeBoard:
        self._thread = threading.Thread(target=self._serve, name="fakeboard", daemon=True)
        self._thread.start()
        if self.boot_on_start:
            self.reset("POWERON_RESET")
        else:
            self.mode = "friendly"
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the world: resets -------------------------------------------------------------------------
    def reset(self, cause: str = "POWERON_RESET") -> None:
        """A hardware reset (EN pulled low and released, power cycle, watchdog)."""
        with self._lock:
            self.resets.append(cause)
            self.mode = "off"
            self.line.clear()
            self.globals = {}
            self._out(ROM_BANNER.format(code=RESET_CODES.get(cause, 0x1), cause=cause))
            time.sleep(self.boot_delay_s)
            self._boot()

    def watch_reset_pin(self, pin, active_high: bool = True, interval: float = 0.002) -> None:
        """Wire the board's EN to a (mock) GPIO pin: asserting then releasing it resets the board."""
        def run():
            asserted = False
            while not self._stop.is_set():
                level = bool(pin.state) == active_high
                if level and not asserted:
                    asserted = True
                    with self._lock:
                        self.mode = "off"
                elif not level and asserted:
                    asserted = False
                    self.reset("POWERON_RESET")
                time.sleep(interval)
        self._watch = threading.Thread(target=run, daemon=True, name="fakeboard-en")
        self._watch.start()

    def _boot(self) -> None:
        self.boot_count += 1
        main = self.root / "main.py"
        if main.exists():
            self.mode = "running"
            self._run_main()
        else:
            self.mode = "friendly"
            self._out(MPY_BANNER + ">>> ")

    def _run_main(self) -> None:
        cfg_path = self.root / "config.json"
        try:
            cfg = json.loads(cfg_path.read_text())
            dev = cfg["device_id"]
        except (OSError, ValueError, KeyError, TypeError):
            self._out("config error: config file config.json not found or invalid\r\n")
            self.mode = "friendly"
            self._out(MPY_BANNER + ">>> ")
            return
        self._out(f"{dev} boot {self.boot_count} fw 0.1.0 journal 0 pending\r\n")
        if self.crash_boots > 0:
            self.crash_boots -= 1
            threading.Timer(0.02, self.reset, args=("TG1WDT_SYS_RESET",)).start()
            return
        self._out(f"{dev} online session {self.boot_count}\r\n")

    def print(self, text: str) -> None:
        """The running firmware prints a line."""
        self._out(text.replace("\n", "\r\n") + "\r\n")

    # --- I/O ----------------------------------------------------------------------------------------
    def _out(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode()
        try:
            os.write(self.master, data)
        except OSError:
            pass

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.master], [], [], 0.05)
                if not r:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            for b in data:
                with self._lock:
                    self.received.append(b)
                    self._char(b)

    def _read_byte(self, timeout: float = 5.0) -> int | None:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return None
        b = os.read(self.master, 1)
        if b:
            self.received.extend(b)
            return b[0]
        return None

    def _char(self, c: int) -> None:
        if self.mode == "off":
            return
        if self.mode == "running":
            if c == 0x03:
                self._out("Traceback (most recent call last):\r\n  File \"main.py\", line 5, in <module>\r\n"
                          "KeyboardInterrupt: \r\n" + MPY_BANNER + ">>> ")
                self.mode = "friendly"
            return
        if self.mode == "friendly":
            if c == 0x01:
                self.mode = "raw"
                self.line.clear()
                self._out("\r\nraw REPL; CTRL-B to exit\r\n>")
            elif c == 0x02:
                self._out("\r\n" + MPY_BANNER + ">>> ")
            elif c == 0x03:
                self._out("\r\n>>> ")
            elif c == 0x04:
                self._soft_reboot()
            else:
                self._out(bytes([c]))  # echo
            return
        # raw REPL
        if c == 0x01:
            if len(self.line) == 2 and self.line[0] == 0x05:
                self._raw_paste(self.line[1])
                return
            self.line.clear()
            self._out("raw REPL; CTRL-B to exit\r\n>")
        elif c == 0x02:
            self.mode = "friendly"
            self.line.clear()
            self._out("\r\n" + MPY_BANNER + ">>> ")
        elif c == 0x03:
            self.line.clear()
        elif c == 0x04:
            self._out("OK")
            if not self.line:
                self._out("\r\n")
                self._soft_reboot()
                return
            code = bytes(self.line)
            self.line.clear()
            self._execute(code)
            self._out(">")
            self._after_exec()
        elif c == 0x05 and not self.line and self.raw_paste is False:
            self.line.append(c)  # old firmware: just a byte in the line
        else:
            self.line.append(c)

    def _raw_paste(self, cmd: int) -> None:
        self.line.clear()
        if self.raw_paste is False:  # not reached: old firmware never sees the request
            self._out("raw REPL; CTRL-B to exit\r\n>")
            return
        if self.raw_paste == "refuse" or cmd != ord("A"):
            self._out(b"R\x00>")
            return
        self.raw_paste_sessions += 1
        self._out(b"R\x01" + bytes([self.window & 0xFF, self.window >> 8, 0x01]))
        remain = self.window
        code = bytearray()
        while True:
            b = self._read_byte()
            if b is None:
                return  # host went away
            if b in (0x03, 0x04):
                self._out(b"\x04")
                break
            code.append(b)
            remain -= 1
            if remain == 0:
                self.flow_grants += 1
                self._out(b"\x01")
                remain = self.window
        self._execute(bytes(code))
        self._out(">")
        self._after_exec()

    def _after_exec(self) -> None:
        if self._pending_reset == "SW_CPU_RESET":
            self._pending_reset = None
            self.reset("SW_CPU_RESET")
        elif self._pending_reset == "SOFT":
            self._pending_reset = None
            self._soft_reboot()

    def _soft_reboot(self) -> None:
        self.resets.append("SOFT")
        self.globals = {}
        self._out("MPY: soft reboot\r\n")
        if self.mode == "raw":
            self._out("raw REPL; CTRL-B to exit\r\n>")
        else:
            self._boot()

    # --- running code ------------------------------------------------------------------------------
    def _sandbox(self) -> dict:
        fake_os = _FakeOs(self.root)
        machine = _Machine(self)
        modules = {"os": fake_os, "uos": fake_os, "machine": machine, "binascii": binascii,
                   "json": json, "time": time}
        if self.has_hashlib:
            modules["hashlib"] = hashlib
        real_import = builtins.__import__
        root = self.root

        def _import(name, globals=None, locals=None, fromlist=(), level=0):
            if name in modules:
                return modules[name]
            if name in ("sys", "gc", "micropython"):
                return real_import(name, globals, locals, fromlist, level)
            raise ImportError(f"no module named '{name}'")

        def _open(path, mode="r", *a, **kw):
            p = fake_os._p(path)
            if ("w" in mode or "a" in mode) and not p.parent.exists():
                raise OSError(2, "ENOENT")
            try:
                return builtins.open(p, mode, *a, **kw)
            except FileNotFoundError:
                raise OSError(2, "ENOENT") from None
            except IsADirectoryError:
                raise OSError(21, "EISDIR") from None

        b = dict(vars(builtins))
        b["__import__"] = _import
        b["open"] = _open
        del root
        return b

    def _execute(self, code: bytes) -> None:
        text = code.decode("utf-8", "replace")
        self.execs.append(text)
        if "__builtins__" not in self.globals:
            self.globals["__builtins__"] = self._sandbox()
        out = io.StringIO()
        err = ""
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(text, "<stdin>", "exec"), self.globals)  # noqa: S102 - a fake REPL runs what it is sent
        except SystemExit:
            pass
        except BaseException as e:  # noqa: BLE001 - the board prints any exception
            tb = traceback.extract_tb(e.__traceback__)
            line = next((fr.lineno for fr in reversed(tb) if fr.filename == "<stdin>"), 1)
            msg = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if isinstance(e, OSError) and e.args and isinstance(e.args[0], int):
                msg = f"OSError: {e.args[0]}"
            err = f"Traceback (most recent call last):\r\n  File \"<stdin>\", line {line}, in <module>\r\n{msg}\r\n"
        self._out(out.getvalue().replace("\n", "\r\n").encode() + b"\x04" + err.encode() + b"\x04")
