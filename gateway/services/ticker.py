"""The loop a service runs: do `step()` when woken or every `period_s`, log and survive errors."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def tick_loop(wake: asyncio.Event, period_s: float, step: Callable[[], Awaitable[None]],
                    log: logging.Logger, what: str) -> None:
    """Forever (cancel to stop): wait for `wake` or `period_s`, then `step()`."""
    while True:
        try:
            await asyncio.wait_for(wake.wait(), period_s)
        except TimeoutError:
            pass
        wake.clear()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", what)
