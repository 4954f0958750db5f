"""The board under test over USB serial: console, resets, raw REPL, files.

`SerialBoard` owns the port and one reader thread. Bytes from the board go to the board log
(a file, everything verbatim) and, depending on the mode, either to console lines (the
firmware's output: `lines`, `wait_line`) or to the raw REPL client (`exec`, the file calls).

Resets. Opening a serial port can reset an ESP32/ESP8266 board: their auto-reset circuit puts
EN on RTS and GPIO0 on DTR. The port is opened with DTR and RTS de-asserted, as mpremote does,
so the board keeps running (on some USB-UART drivers the kernel still pulses the lines at
open; the board log then shows a reset nobody asked for, and it is reported as one). Every
reset the board reports — the ROM banner ``rst:0x.. (CAUSE)`` or MicroPython's ``soft reboot``
— is recorded in `boots` as expected (the rig caused it within the last few seconds: its own
`hard_reset`, `soft_reset`, `power_on`) or unexpected (watchdog, brown-out, crash, boot loop).
`wait_ready` tells a board that booted from one that did not: it fails fast on a traceback,
a ``config error`` line or a second reset (boot loop), and says which.

Raw REPL (MicroPython docs, "raw mode and raw-paste mode"): Ctrl-A enters it
(``raw REPL; CTRL-B to exit\\r\\n>``); code then Ctrl-D is answered ``OK``, the output, ``\\x04``,
the error text, ``\\x04``, ``>``. Raw-paste (``\\x05A\\x01`` → ``R\\x01``, a 2-byte little-endian
window, ``\\x01`` for each further window) streams code with flow control, so large chunks do
not overrun the board's input buffer; boards without it answer ``R\\x00`` or nothing useful and
the client falls back to plain raw REPL writes (256 bytes every 10 ms, as mpremote does).
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import re
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import serial

from hil.trace import Trace, wait_console_line

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
RESET_PATTERNS = (
    (re.compile(r"rst:0x[0-9a-fA-F]+ \(([A-Z0-9_]+)\)"), None),  # ESP32/ESP8266 ROM: the cause
    (re.compile(r"MPY: soft reboot|^soft reboot"), "SOFT_REBOOT"),
)
FAILURE_PATTERNS = (
    re.compile(r"^Traceback \(most recent call last\)"),
    re.compile(r"^config error"),
    re.compile(r"Guru Meditation Error|Brownout detector was triggered|abort\(\) was called"),
)


class BoardError(RuntimeError):
    pass


class RemoteError(BoardError):
    """Code run on the board raised; `text` is the board's traceback."""

    def __init__(self, text: str):
        super().__init__(text.strip().splitlines()[-1] if text.strip() else "error on the board")
        self.text = text


class BootFailure(BoardError):
    pass


@dataclass
class Boot:
    t: float  # trace time
    cause: str  # POWERON_RESET, SW_CPU_RESET, TG1WDT_SYS_RESET, SOFT_REBOOT, PORT_LOST ...
    expected: bool
    line: int  # index in `lines` where the board's output after this reset starts


class SerialBoard:
    """One board on one serial port. Use as a context manager, or `open()`/`close()`."""

    def __init__(self, port: str | serial.SerialBase, baud: int = 115200, *, name: str = "board",
                 trace: Trace | None = None, log_path: str | Path | None = None,
                 reset: object | str | None = "rts", reset_pulse_ms: int = 100,
                 expect_window_s: float = 8.0):
        self.port = port
        self.baud = baud
        self.name = name
        self.trace = trace or Trace(name)
        self.log_path = Path(log_path) if log_path else None
        self.reset_method = reset  # a line with on()/off() (gpiozero), "rts", "machine" or None
        self.reset_pulse_ms = reset_pulse_ms
        self.expect_window_s = expect_window_s
        self.ser: serial.SerialBase | None = None
        self.lines: list[str] = []
        self.boots: list[Boot] = []
        self.use_raw_paste: bool | None = None  # None: try it once
        self._partial = bytearray()
        self._rx = bytearray()
        self._cond = threading.Condition()
        self._repl = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = None
        self._expect_until = 0.0
        self._expect_cause = ""
        self.in_raw_repl = False

    # --- port --------------------------------------------------------------------------------
    def open(self) -> SerialBoard:
        if isinstance(self.port, str):
            s = serial.Serial()
            s.port = self.port
            s.baudrate = self.baud
            s.timeout = 0.05
            s.write_timeout = 5
            # ESP auto-reset: RTS drives EN, DTR drives GPIO0. De-assert both before opening
            # so the board keeps running (DTR False = normal boot, RTS False = EN high).
            s.dtr = False
            s.rts = False
            try:
                s.exclusive = True  # a second tool on the same port fails loudly, not silently
            except (AttributeError, ValueError):
                pass
            try:
                s.open()
            except serial.SerialException as e:
                raise BoardError(f"cannot open {self.port}: {e} (is a console or another deploy using it? "
                                 "is the board plugged in?)") from None
            self.ser = s
        else:
            self.ser = self.port  # an already-open port (tests, rfc2217)
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - open until close(), like the port
        self._stop.clear()
        self._thread = threading.Thread(target=self._reader, name=f"serial-{self.name}", daemon=True)
        self._thread.start()
        self.trace.note(self.name, f"serial {getattr(self.ser, 'port', self.port)} open (no reset)")
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self.ser is not None and isinstance(self.port, str):
            with contextlib.suppress(Exception):  # closing a port that went away is best effort
                self.ser.close()
        self.ser = None
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _reader(self) -> None:
        lost = False
        while not self._stop.is_set():
            try:
                n = self.ser.in_waiting
                data = self.ser.read(n or 1)
            except (serial.SerialException, OSError, TypeError) as e:
                if self._stop.is_set():
                    return
                # USB CDC boards (RP2040, ESP32-S2/S3) drop off the bus when they reset
                if not lost:
                    lost = True
                    self._on_reset("PORT_LOST", f"serial port lost: {e}")
                self._stop.wait(0.5)
                if self._reopen():
                    lost = False
                    self.trace.note(self.name, "serial port back")
                continue
            if data:
                self._feed(data)

    def _reopen(self) -> bool:
        if not isinstance(self.port, str):
            return False
        try:
            self.ser.close()
            self.ser.open()
            return True
        except (serial.SerialException, OSError):
            return False

    def _feed(self, data: bytes) -> None:
        if self._log:
            self._log.write(data)
            self._log.flush()
        with self._cond:
            if self._repl:
                self._rx.extend(data)
                self._cond.notify_all()
                return
            self._partial.extend(data)
            while True:
                i = self._partial.find(b"\n")
                if i < 0:
                    break
                raw, self._partial = bytes(self._partial[:i]), self._partial[i + 1:]
                self._line(raw.decode("utf-8", "replace").rstrip("\r").replace("\x04", ""))
            self._cond.notify_all()

    def _line(self, line: str) -> None:  # with self._cond held
        self.lines.append(line)
        self.trace.note(self.name, line)
        for rx, cause in RESET_PATTERNS:
            m = rx.search(line)
            if m:
                self._on_reset(cause or m.group(1), line, locked=True)
                break

    # --- resets --------------------------------------------------------------------------------
    def expect_reset(self, why: str = "") -> None:
        """The next reset within `expect_window_s` is the rig's own."""
        with self._cond:
            self._expect_until = time.monotonic() + self.expect_window_s
            self._expect_cause = why

    def _on_reset(self, cause: str, text: str, locked: bool = False) -> None:
        if not locked:
            with self._cond:
                return self._on_reset(cause, text, locked=True)
        expected = time.monotonic() <= self._expect_until
        self._expect_until = 0.0  # one reset per expectation: a second one is a boot loop
        boot = Boot(self.trace.now(), cause, expected, len(self.lines))
        self.boots.append(boot)
        if expected:
            self.trace.note(self.name, f"reset {cause} (rig: {self._expect_cause or 'expected'})")
        else:
            self.trace.note(self.name, f"UNEXPECTED RESET {cause}: {text}")
        self._cond.notify_all()

    def unexpected_resets(self) -> list[Boot]:
        return [b for b in self.boots if not b.expected]

    def hard_reset(self, method: object | str | None = None) -> None:
        """Reset the board: a GPIO line on EN/RUN (gpiozero output), DTR/RTS, or machine.reset()."""
        method = method if method is not None else self.reset_method
        if method is None:
            raise BoardError(f"{self.name}: no reset wired (wiring file 'reset': a GPIO line or 'rts')")
        self.expect_reset("hard reset")
        self.trace.note(self.name, f"hard reset via {method if isinstance(method, str) else 'GPIO'}")
        if method == "rts":
            try:
                self.ser.dtr = False  # GPIO0 high: boot from flash, not the ROM loader
                self.ser.rts = True  # EN low: in reset
                time.sleep(self.reset_pulse_ms / 1000)
                self.ser.rts = False  # EN high: run
            except OSError as e:
                raise BoardError(f"{self.name}: cannot drive RTS/DTR on {self.port} ({e}); this port has no "
                                 "modem lines (USB CDC, pty): reset with 'machine' or a GPIO line") from None
        elif method == "machine":
            self.enter_raw_repl()
            self.exec_no_follow("import machine\nmachine.reset()")
            self._leave_repl_mode()
        else:  # a gpiozero DigitalOutputDevice (active = reset asserted)
            method.on()
            time.sleep(self.reset_pulse_ms / 1000)
            method.off()

    def soft_reset(self) -> None:
        """Ctrl-D at the friendly REPL: MicroPython restarts and runs boot.py and main.py."""
        if self.in_raw_repl:
            self.exit_raw_repl()
        self.expect_reset("soft reset")
        self._write(b"\r\x03\x03")
        time.sleep(0.05)
        self._write(b"\x04")

    def wait_ready(self, pattern: str = r"online session", timeout: float = 20.0, since: int | None = None) -> str:
        """Wait for the firmware's ready line after a reset; fail fast on a boot failure."""
        rx = re.compile(pattern)
        start = since if since is not None else (self.boots[-1].line if self.boots else 0)
        n_boots = sum(1 for b in self.boots if b.line >= start)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    line = self.lines[i]
                    if rx.search(line):
                        return line
                    for frx in FAILURE_PATTERNS:
                        if frx.search(line):
                            tail = "\n".join(self.lines[i:i + 12])
                            raise BootFailure(f"{self.name} failed to boot: {line}\n{tail}")
                later = [b for b in self.boots if b.line >= start]
                if len(later) > max(n_boots, 1):
                    causes = ", ".join(b.cause for b in later)
                    raise BootFailure(f"{self.name} is boot-looping: {len(later)} resets ({causes}) "
                                      f"before /{pattern}/; last lines:\n" + "\n".join(self.lines[-15:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BootFailure(f"{self.name}: no /{pattern}/ within {timeout}s after reset; last lines:\n"
                                      + "\n".join(self.lines[-15:]))
                self._cond.wait(min(left, 0.2))

    def wait_line(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        return wait_console_line(self._cond, self.lines, self.name, pattern, timeout, start)

    def _write(self, data: bytes) -> None:
        self.ser.write(data)
        self.ser.flush()

    def _enter_repl_mode(self) -> None:
        with self._cond:
            self._repl = True
            self._rx.clear()
            if self._partial:  # a console line in progress: keep it
                self._line(self._partial.decode("utf-8", "replace").rstrip("\r"))
                self._partial.clear()

    def _leave_repl_mode(self) -> None:
        with self._cond:
            self._repl = False
            rest = bytes(self._rx)
            self._rx.clear()
        self.in_raw_repl = False
        if rest:
            self._feed(rest)

    def read_until(self, ending: bytes, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                i = self._rx.find(ending)
                if i >= 0:
                    data = bytes(self._rx[:i + len(ending)])
                    del self._rx[:i + len(ending)]
                    return data
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BoardError(f"{self.name}: timeout waiting for {ending!r}; got {bytes(self._rx[-200:])!r}")
                self._cond.wait(left)

    def read_exact(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._rx) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BoardError(f"{self.name}: timeout reading {n} bytes; got {bytes(self._rx)!r}")
                self._cond.wait(left)
            data = bytes(self._rx[:n])
            del self._rx[:n]
            return data

    def _rx_waiting(self) -> int:
        with self._cond:
            return len(self._rx)

    def enter_raw_repl(self, soft_reset: bool = False, timeout: float = 5.0) -> None:
        """Stop the running program (Ctrl-C) and enter the raw REPL (Ctrl-A)."""
        self._enter_repl_mode()
        self._write(b"\r\x03")
        time.sleep(0.05)
        self._write(b"\x03")  # twice: an asyncio app may swallow the first
        time.sleep(0.1)
        with self._cond:
            self._rx.clear()
        self._write(b"\r\x01")
        try:
            self.read_until(RAW_BANNER, timeout)
            if soft_reset:
                self.read_until(b">", timeout)
                self.expect_reset("soft reset in raw REPL")
                self._write(b"\x04")
                self.read_until(b"soft reboot\r\n", timeout)
                self._on_reset("SOFT_REBOOT", "soft reboot (raw REPL)")
                self.read_until(RAW_BANNER, timeout)
        except BoardError as e:
            self._leave_repl_mode()
            raise BoardError(f"{self.name}: could not enter the raw REPL ({e}); is MicroPython running "
                             "and the baud rate right?") from None
        self.in_raw_repl = True

    def exit_raw_repl(self) -> None:
        self._write(b"\r\x02")  # Ctrl-B: friendly REPL (prints the banner)
        time.sleep(0.05)
        self._leave_repl_mode()

    def exec_no_follow(self, code: str | bytes) -> None:
        data = code.encode() if isinstance(code, str) else code
        self.read_until(b">", 5)
        if self.use_raw_paste is not False:
            self._write(b"\x05A\x01")
            resp = self.read_exact(2, 2)
            if resp == b"R\x01":
                self.use_raw_paste = True
                self._raw_paste_write(data)
                return
            if resp == b"R\x00":  # understood, not supported: it prints a new prompt
                self.read_until(b">", 2)
            else:  # firmware before raw-paste: Ctrl-A reset the raw REPL
                self.read_until(b"w REPL; CTRL-B to exit\r\n>", 2)
            self.use_raw_paste = False
        for i in range(0, len(data), 256):
            self._write(data[i:i + 256])
            time.sleep(0.01)
        self._write(b"\x04")
        resp = self.read_exact(2, 5)
        if resp != b"OK":
            raise BoardError(f"{self.name}: could not exec command (response {resp!r})")

    def _raw_paste_write(self, data: bytes) -> None:
        window = struct.unpack("<H", self.read_exact(2, 2))[0]
        remain = window
        i = 0
        while i < len(data):
            while remain == 0 or self._rx_waiting():
                b = self.read_exact(1, 5)
                if b == b"\x01":
                    remain += window
                elif b == b"\x04":  # the board stopped the transfer (e.g. it ran out of memory)
                    self._write(b"\x04")
                    return
                else:
                    raise BoardError(f"{self.name}: unexpected {b!r} during raw-paste")
            chunk = data[i:i + remain]
            self._write(chunk)
            remain -= len(chunk)
            i += len(chunk)
        self._write(b"\x04")
        self.read_until(b"\x04", 5)

    def follow(self, timeout: float = 10.0) -> tuple[bytes, bytes]:
        out = self.read_until(b"\x04", timeout)[:-1]
        err = self.read_until(b"\x04", timeout)[:-1]
        return out, err

    def exec_raw(self, code: str | bytes, timeout: float = 10.0) -> tuple[bytes, bytes]:
        self.exec_no_follow(code)
        return self.follow(timeout)

    def exec(self, code: str | bytes, timeout: float = 10.0) -> bytes:
        """Run code in the raw REPL; its printed output, or RemoteError with the board's traceback."""
        if not self.in_raw_repl:
            raise BoardError("enter_raw_repl() first (or use `with board.raw_repl():`)")
        out, err = self.exec_raw(code, timeout)
        if err:
            raise RemoteError(err.decode("utf-8", "replace").replace("\r\n", "\n"))
        return out

    def eval(self, expr: str, timeout: float = 10.0):
        out = self.exec(f"print(repr({expr}))", timeout)
        return ast.literal_eval(out.decode().strip())

    def raw_repl(self, soft_reset: bool = False):
        board = self

        class _Ctx:
            def __enter__(self_inner):
                board.enter_raw_repl(soft_reset=soft_reset)
                return board

            def __exit__(self_inner, *exc):
                board.exit_raw_repl()

        return _Ctx()

    # --- files -----------------------------------------------------------------------------------
    def fs_mkdir(self, path: str) -> None:
        """Create a directory; fine if it exists (EEXIST is 17 on every port)."""
        self.exec(f"import os\ntry:\n os.mkdir({path!r})\nexcept OSError as e:\n if e.args[0]!=17: raise\n")

    def fs_stat(self, path: str) -> tuple[int, int] | None:
        """(mode, size) or None if missing."""
        return self.eval_code(f"import os\ntry:\n s=os.stat({path!r})\n print(repr((s[0],s[6])))\n"
                              f"except OSError:\n print('None')\n")

    def eval_code(self, code: str, timeout: float = 10.0):
        return ast.literal_eval(self.exec(code, timeout).decode().strip())

    def fs_sha256(self, path: str) -> str | None:
        """Hex sha256 of a file on the board; None if missing; 'size:<n>' if it has no hashlib."""
        code = (f"import os\nP={path!r}\n"
                "try:\n import hashlib,binascii\n h=hashlib.sha256()\nexcept (ImportError,AttributeError):\n h=None\n"
                "try:\n f=open(P,'rb')\nexcept OSError:\n f=None\n"
                "if f is None:\n print('None')\n"
                "elif h is None:\n f.close()\n print(repr('size:%d'%os.stat(P)[6]))\n"
                "else:\n while 1:\n  b=f.read(512)\n  if not b: break\n  h.update(b)\n f.close()\n"
                " print(repr(binascii.hexlify(h.digest()).decode()))\n")
        return self.eval_code(code)

    def fs_put(self, data: bytes, path: str, progress: Callable[[int, int], None] | None = None,
               chunk: int | None = None) -> None:
        """Write a file: to `path.tmp` in chunks, then over `path` (a cut cable never leaves a
        half-written main.py behind)."""
        chunk = chunk or (1024 if self.use_raw_paste else 256)
        tmp = path + ".tmp"
        self.exec(f"f=open({tmp!r},'wb')\nw=f.write")
        done = 0
        if progress:
            progress(0, len(data))
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            self.exec(f"w({part!r})")
            done += len(part)
            if progress:
                progress(done, len(data))
        self.exec("f.close()\ndel f,w")
        self.exec(f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass\nos.rename({tmp!r},{path!r})")

    def fs_verify(self, data: bytes, path: str) -> str:
        """Check the board's copy against `data`; returns how ('sha256' or 'size')."""
        remote = self.fs_sha256(path)
        if remote is None:
            raise BoardError(f"{self.name}: {path} is missing after writing it")
        if remote.startswith("size:"):
            if int(remote[5:]) != len(data):
                raise BoardError(f"{self.name}: {path} has {remote[5:]} bytes, wrote {len(data)}")
            return "size"
        if remote != hashlib.sha256(data).hexdigest():
            raise BoardError(f"{self.name}: {path} differs from what was written (sha256 mismatch)")
        return "sha256"

    def fs_get(self, path: str, chunk: int = 256) -> bytes:
        code = (f"import binascii\nf=open({path!r},'rb')\n"
                f"while 1:\n b=f.read({chunk})\n if not b: break\n print(binascii.hexlify(b).decode())\nf.close()\n")
        out = self.exec(code, timeout=30)
        return b"".join(bytes.fromhex(line) for line in out.decode().split())

    def fs_listdir(self, path: str = "/") -> list[str]:
        return self.eval_code(f"import os\nprint(repr(sorted(os.listdir({path!r}))))")

    def collect_log(self, dest: str | Path, files: tuple[str, ...] = ()) -> list[Path]:
        """Save the console (and named files fetched from the board) under `dest`."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        out = [dest / f"{self.name}-console.log"]
        out[0].write_text("\n".join(self.lines) + "\n")
        if files:
            with self.raw_repl():
                for f in files:
                    try:
                        data = self.fs_get(f)
                    except RemoteError:
                        continue
                    p = dest / f"{self.name}-{f.strip('/').replace('/', '_')}"
                    p.write_bytes(data)
                    out.append(p)
        return out
