"""Signal and message trace of a scenario run (exported as VCD and PNG by the HIL tools)."""
from __future__ import annotations

import threading
import time


class Trace:
    """Thread-safe, append-only record of pin changes and notes, with times relative to start."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self.signals: list[tuple[float, str, str, int]] = []  # (t, device, signal, value)
        self.notes: list[tuple[float, str, str]] = []  # (t, source, text)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def signal(self, device: str, name: str, value: int) -> None:
        with self._lock:
            self.signals.append((self.now(), device, name, value))

    def note(self, source: str, text: str) -> None:
        with self._lock:
            self.notes.append((self.now(), source, text))
