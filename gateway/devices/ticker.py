"""The loop a service runs: do `step()` when woken or every `period_s`, log and survive errors."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def tick_loop(wake: asyncio.Event, period_s: float | Callable[[], float],
                    step: Callable[[], Awaitable[object]], log: logging.Logger, what: str,
                    *, first: bool = False) -> None:
    """Forever (cancel to stop): wait for `wake` or `period_s` (or `period_s()`, asked before
    each wait: e.g. until the tube arbiter's next deadline), then `step()`. `first`: step once
    before the first wait (a service that must act on what it finds at start)."""
    while True:
        if not first:
            try:
                await asyncio.wait_for(wake.wait(), period_s() if callable(period_s) else period_s)
            except TimeoutError:
                pass
            wake.clear()
        first = False
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)
