"""Where a command's time goes: a stage trace for `bench/command_rtt.py` (diagnostic only).

Off unless the environment variable `PHYGITAL_COMMAND_TRACE` names a file: then the gateway
appends one JSON line per command that a caller waited for, with the `time.monotonic()` of
each stage it passed (CLOCK_MONOTONIC: the same clock in every process of the machine, so the
benchmark can put its own request and response times beside them):

    submit      `CommandService.submit` entered (the HTTP request is parsed)
    submit_tx   the submit's transaction starts on the command file's writer thread (before:
                its queue)
    submit_ok   the submit committed, back on the event loop
    publish     the command's PUBLISH handed to the MQTT client
    puback      its PUBACK came back (the broker has it)
    reply_rx    the device's final reply read from the broker (gateway `_on_message`)
    reply_tx    that reply applied on the command file's writer thread (before: the reply
                lane + its writer's queue)
    notify      the reply's commit announced on the event loop (the waiter woken)
    response    `CommandService.wait` returns the outcome to the HTTP route

and, once a second, a `loop@<time>` line: how late the event loop ran a 2 ms timer (`lags`,
ms), i.e. how long its busy stretches were. Every hop of a command on the loop (HTTP parse,
route, each awaited future) waits about that long for its turn.

Nothing here changes behaviour; with the variable unset every hook is one `if` on None.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import IO

from gateway.devices.gcpause import PAUSES


class CommandTrace:
    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        self._marks: dict[str, dict[str, float]] = {}
        self._replies: dict[str, float] = {}  # device -> monotonic time of its last reply read
        self._lock = threading.Lock()

    def mark(self, command_id: str, stage: str) -> None:
        marks = self._marks.get(command_id)
        if marks is None:
            with self._lock:
                if len(self._marks) > 10_000:  # commands nobody waited for (ticks, services)
                    self._marks.clear()
                marks = self._marks.setdefault(command_id, {})
        marks.setdefault(stage, time.monotonic())

    def reply_read(self, device: str) -> None:
        self._replies[device] = time.monotonic()

    def reply_applied(self, command_id: str, device: str) -> None:
        """On the writer thread: a final reply of `command_id` was applied."""
        marks = self._marks.get(command_id)
        if marks is not None:
            marks.setdefault("reply_rx", self._replies.get(device, float("nan")))
            marks.setdefault("reply_tx", time.monotonic())

    def finish(self, command_id: str) -> None:
        with self._lock:
            marks = self._marks.pop(command_id, None)
        if marks is not None:
            marks["response"] = time.monotonic()
            self._file.write(json.dumps({"id": command_id, **marks}) + "\n")

    async def probe_loop(self, every_s: float = 0.002) -> None:
        """Write how late the loop ran a timer of `every_s`, in ms, once a second (cancel to
        stop)."""
        lags: list[float] = []
        collections: list[tuple[int, float]] = []  # (generation, ms) of the garbage collector

        def on_gc(gen: int, seconds: float) -> None:
            collections.append((gen, round(seconds * 1000, 2)))

        PAUSES.install()
        PAUSES.listeners.append(on_gc)
        try:
            last = time.monotonic()
            while True:
                t0 = time.monotonic()
                await asyncio.sleep(every_s)
                t1 = time.monotonic()
                lags.append(round((t1 - t0 - every_s) * 1000, 2))
                if t1 - last >= 1.0:
                    self._file.write(json.dumps({"id": f"loop@{t1:.3f}", "t": t1, "lags": lags,
                                                 "gc": collections}) + "\n")
                    lags, last = [], t1
                    collections = []
        finally:
            PAUSES.listeners.remove(on_gc)


_path = os.environ.get("PHYGITAL_COMMAND_TRACE")
TRACE: CommandTrace | None = CommandTrace(_path) if _path else None
