"""The garbage collector's pauses, for `/metrics` (`pe_gc_*`).

A collection holds the GIL: while it runs no HTTP request, device reply or commit moves. A
full (generation 2) collection walked the whole heap, 40-105 ms at saturation, until the
gateway froze what exists at startup (`gateway.__main__.settle_heap`, docs/benchmarks.md
"Issue 18, session 12"); these figures show in production whether the pauses stay short.
The collector is process-wide, so one recorder serves every gateway of the process. (In
`devices` beside cmdtrace.py, which keeps them per second for bench/command_rtt.py; the
metrics integration reads them too.)
"""
from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable


class GcPauses:
    """Collections and their pause seconds per generation, and the longest pause."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = 0.0
        self._start = 0.0
        self._installed = False
        self._lock = threading.Lock()
        # told (generation, pause seconds) after each collection: the command benchmark's
        # trace (gateway/devices/cmdtrace.py) keeps them per second
        self.listeners: list[Callable[[int, float], None]] = []

    def install(self) -> None:
        with self._lock:
            if not self._installed:
                gc.callbacks.append(self._on_gc)
                self._installed = True

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # (runs in whichever thread triggered the collection, which holds the GIL throughout)
        if phase == "start":
            self._start = time.perf_counter()
            return
        pause = time.perf_counter() - self._start
        gen = min(info.get("generation", 0), 2)
        self.count[gen] += 1
        self.seconds[gen] += pause
        self.longest = max(self.longest, pause)
        for listener in self.listeners:
            listener(gen, pause)


PAUSES = GcPauses()
