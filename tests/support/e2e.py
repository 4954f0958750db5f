"""End-to-end helpers for tests: tags for the virtual store, event seqs, waiting for events
(and, in a test's own event loop, for a condition: `until`).
(The SSE reader is hil.fakes.SseReader; the gateway process hil.harness.GatewayProcess.)"""
from __future__ import annotations

import asyncio
import time

from hil.harness import GatewayProcess, wait_for
from hil.sim.mfrc522 import NtagTag


def sample_tag(n: int, sample: str) -> NtagTag:
    return NtagTag.with_text(bytes([0x04, 0x10, 0x20, 0x30, 0x40, 0x50, n & 0xFF]), sample)


def seqs(events: list[dict]) -> list[int]:
    return [e["seq"] for e in events]


def wait_events(gw: GatewayProcess, device: str, n: int, type: str | None = None, timeout: float = 20):
    return wait_for(lambda: ev if len(ev := gw.events(device, type)) >= n else None,
                    timeout, what=f"{n} events of {device} ({type or 'any'})")


def settle(seconds: float = 0.8) -> None:
    """Give in-flight messages time to arrive before asserting that nothing more came."""
    time.sleep(seconds)


async def until(predicate, what, timeout=30.0):
    """Wait for a condition (generous timeout: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
