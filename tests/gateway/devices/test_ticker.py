"""tick_loop: the loop every service runs (gateway/devices/ticker.py)."""
from __future__ import annotations

import asyncio
import logging

import pytest

log = logging.getLogger("test.ticker")


async def _run(first: bool, wake_after: float | None) -> list[str]:
    from gateway.devices.ticker import tick_loop
    seen: list[str] = []
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        seen.append(f"step{calls}")
        if calls == 2:
            raise RuntimeError("a failing step is logged, and the loop goes on")

    wake = asyncio.Event()
    task = asyncio.create_task(tick_loop(wake, 60.0, step, log, "test step", first=first))
    await asyncio.sleep(0.05)
    seen.append("t0.05")
    if wake_after is not None:
        for _ in range(2):
            wake.set()
            await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return seen


def test_first_steps_at_once_and_a_failing_step_does_not_end_the_loop(caplog):
    with caplog.at_level(logging.ERROR, logger="test.ticker"):
        seen = asyncio.run(_run(first=True, wake_after=0.0))
    assert seen == ["step1", "t0.05", "step2", "step3"]
    assert "test step failed" in caplog.text


def test_without_first_the_loop_waits_for_its_period_or_a_wake():
    assert asyncio.run(_run(first=False, wake_after=None)) == ["t0.05"]
