"""Signal and message trace of a scenario run (exported as VCD and PNG by the HIL tools).

A `Trace` holds two append-only lists, both with times in seconds relative to its start:

* ``signals``: ``(t, device, signal, value)`` — every change of a one-bit line (a board's
  output seen by the rig, an input the rig drives, a tag relay). The first entry of a signal
  is its initial value when the rig knows it.
* ``notes``: ``(t, source, text)`` — everything else: scenario steps, console lines, protocol
  messages (source ``mqtt``), resets.

Backends write into it from their own threads; exporters (`hil.vcd`, `hil.timeline`) read a
`snapshot()`.
"""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path


class Trace:
    """Thread-safe, append-only record of pin changes and notes, with times relative to start."""

    def __init__(self, title: str = "") -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.title = title
        self._lock = threading.Lock()
        self.signals: list[tuple[float, str, str, int]] = []  # (t, device, signal, value)
        self.notes: list[tuple[float, str, str]] = []  # (t, source, text)
        self.end: float | None = None  # set by stop(); exporters use now() while running

    def now(self) -> float:
        return time.monotonic() - self.t0

    def signal(self, device: str, name: str, value: int) -> None:
        with self._lock:
            self.signals.append((self.now(), device, name, value))

    def note(self, source: str, text: str) -> None:
        with self._lock:
            self.notes.append((self.now(), source, text))

    # --- added for the HIL tools -------------------------------------------------------
    def step(self, text: str) -> None:
        """A scenario step ("place tag S-1001"): a note from source ``scenario``."""
        self.note("scenario", text)

    def stop(self) -> None:
        """Freeze the end time (the exporters draw up to it)."""
        with self._lock:
            if self.end is None:
                self.end = self.now()

    def duration(self) -> float:
        with self._lock:
            last = max([s[0] for s in self.signals] + [n[0] for n in self.notes] + [0.0])
            end = self.end if self.end is not None else self.now()
            return max(end, last)

    def snapshot(self) -> tuple[list[tuple[float, str, str, int]], list[tuple[float, str, str]]]:
        """Copies of (signals, notes), each sorted by time (stable for equal times)."""
        with self._lock:
            sig = sorted(self.signals, key=lambda s: s[0])
            notes = sorted(self.notes, key=lambda n: n[0])
        return sig, notes

    def signal_names(self) -> list[tuple[str, str]]:
        """(device, signal) pairs in order of first appearance."""
        seen: dict[tuple[str, str], None] = {}
        for _, dev, name, _ in self.snapshot()[0]:
            seen.setdefault((dev, name), None)
        return list(seen)

    def history(self, device: str, name: str) -> list[tuple[float, int]]:
        return [(t, v) for (t, d, n, v) in self.snapshot()[0] if d == device and n == name]

    def value_at(self, device: str, name: str, t: float) -> int | None:
        """The signal's value at time `t` (None before its first recorded value)."""
        value = None
        for ts, v in self.history(device, name):
            if ts > t:
                break
            value = v
        return value

    def to_dict(self) -> dict:
        sig, notes = self.snapshot()
        return {"title": self.title, "start_unix": self.wall0, "duration": self.duration(),
                "signals": [list(s) for s in sig], "notes": [list(n) for n in notes]}

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=0))
        return path

    @classmethod
    def from_dict(cls, data: dict) -> Trace:
        tr = cls(data.get("title", ""))
        tr.wall0 = data.get("start_unix", tr.wall0)
        tr.signals = [(float(t), d, n, int(v)) for t, d, n, v in data["signals"]]
        tr.notes = [(float(t), s, x) for t, s, x in data["notes"]]
        tr.end = data.get("duration")
        return tr

    def tail(self, n: int = 20) -> str:
        """The last `n` entries as text, for assertion messages."""
        sig, notes = self.snapshot()
        rows = [(t, f"{d}.{s} = {v}") for t, d, s, v in sig] + [(t, f"[{src}] {x}") for t, src, x in notes]
        rows.sort(key=lambda r: r[0])
        return "\n".join(f"{t:9.3f}s  {x}" for t, x in rows[-n:])


def wait_console_line(cond: threading.Condition, lines: list[str], name: str, pattern: str,
                      timeout: float = 10.0, start: int = 0) -> str:
    """Wait (holding `cond`, which guards `lines`) for a line matching regex `pattern` from
    index `start`; TimeoutError with the console's last lines otherwise."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            for line in lines[start:]:
                if rx.search(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                tail = "\n".join(lines[-20:])
                raise TimeoutError(f"{name}: no console line /{pattern}/ in {timeout}s; last lines:\n{tail}")
            cond.wait(left)
