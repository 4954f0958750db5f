"""End-to-end harness: a gateway subprocess, an SSE reader, tags for the virtual store."""
from __future__ import annotations

import json
import threading
import time
from typing import Self

import httpx

from hil.harness import GatewayProcess, wait_for
from hil.sim.mfrc522 import NtagTag


def sample_tag(n: int, sample: str) -> NtagTag:
    return NtagTag.with_text(bytes([0x04, 0x10, 0x20, 0x30, 0x40, 0x50, n & 0xFF]), sample)


class StreamReader:
    """Reads the gateway's SSE stream in a thread and keeps every `data:` message."""

    def __init__(self, url: str):
        self.url = url
        self.messages: list[dict] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), "SSE stream did not open"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _run(self) -> None:
        with httpx.stream("GET", self.url + "/stream", timeout=None) as r:
            self._ready.set()
            event = None
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    try:
                        msg = json.loads(line[5:].strip())
                    except ValueError:
                        continue
                    if isinstance(msg, dict):
                        msg.setdefault("_event", event)
                    self.messages.append(msg)

    def of(self, device: str, type: str) -> list[dict]:
        out = []
        for m in self.messages:
            body = m.get("event", m) if isinstance(m.get("event"), dict) else m
            if body.get("device", body.get("dev")) == device and body.get("type") == type:
                out.append(body)
        return out


def seqs(events: list[dict]) -> list[int]:
    return [e["seq"] for e in events]


def wait_events(gw: GatewayProcess, device: str, n: int, type: str | None = None, timeout: float = 20):
    return wait_for(lambda: ev if len(ev := gw.events(device, type)) >= n else None,
                    timeout, what=f"{n} events of {device} ({type or 'any'})")


def settle(seconds: float = 0.8) -> None:
    """Give in-flight messages time to arrive before asserting that nothing more came."""
    time.sleep(seconds)
