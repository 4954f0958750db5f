"""The outward stream: fan committed stream items out to subscribers, and render SSE.

The `stream` table is the source of truth (see `gateway.storage.store`); live delivery is a fast path.
Each subscriber has a bounded queue; a subscriber that falls behind is marked `overflowed`
instead of blocking everybody, and its SSE generator catches up from the table, so a slow
client gets every item (or, past the retention window, knows it missed some) and never
stalls ingest.

Subscribers are bounded too (each costs a queue and a turn in every `publish`): at most
`max_per_key` per key (the API token) and `max_total` in all; `subscribe` raises
`TooManyStreams` past either (the API answers 429, gateway/http/api.py).
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.storage.store import StreamItem

KEEPALIVE_S = 15.0
CATCHUP_PAGE = 500
OVERFLOW = "overflow"
CLOSED = "closed"


class TooManyStreams(Exception):
    """`subscribe` refused: `limit` is `per_token` or `total`, `cap` its value."""

    def __init__(self, limit: str, cap: int) -> None:
        super().__init__(f"{limit} stream limit {cap} reached")
        self.limit, self.cap = limit, cap


class Subscription:
    """One subscriber's bounded queue. On overflow the queue is emptied and replaced by a
    single `OVERFLOW` marker; the consumer then catches up from the table."""

    def __init__(self, maxsize: int, key: str | None = None) -> None:
        self.key = key
        self.queue: asyncio.Queue[StreamItem | str] = asyncio.Queue(maxsize + 1)
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False
        self.first_dropped: int | None = None

    def offer(self, item: StreamItem) -> None:
        if self.closed:
            return
        if self.overflowed:
            return
        if self.queue.qsize() >= self.maxsize:
            self.overflowed = True
            self.first_dropped = item.id
            self._empty()
            self.queue.put_nowait(OVERFLOW)
            return
        self.queue.put_nowait(item)

    def close(self) -> None:
        self.closed = True
        self._empty()
        self.queue.put_nowait(CLOSED)

    def reset(self) -> None:
        self.overflowed = False
        self.first_dropped = None
        if not self.closed:
            self._empty()

    def _empty(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


class Broadcaster:
    def __init__(self, queue_size: int = 1000, *, max_total: int | None = None,
                 max_per_key: int | None = None) -> None:
        self.queue_size = queue_size
        self.max_total, self.max_per_key = max_total, max_per_key
        self.subscribers: set[Subscription] = set()
        self.per_key: dict[str, int] = {}
        self.refused = {"per_token": 0, "total": 0}
        self.last_id = 0
        self.closed = False

    def publish(self, items: list[StreamItem]) -> None:
        for item in items:
            self.last_id = max(self.last_id, item.id)
            for sub in self.subscribers:
                sub.offer(item)

    def subscribe(self, key: str | None = None) -> Subscription:
        """A new subscription counted against `key` (None: only against the total); raises
        `TooManyStreams` when `key` already holds `max_per_key` or all hold `max_total`."""
        if (key is not None and self.max_per_key is not None
                and self.per_key.get(key, 0) >= self.max_per_key):
            self.refused["per_token"] += 1
            raise TooManyStreams("per_token", self.max_per_key)
        if self.max_total is not None and len(self.subscribers) >= self.max_total:
            self.refused["total"] += 1
            raise TooManyStreams("total", self.max_total)
        sub = Subscription(self.queue_size, key)
        if self.closed:
            sub.close()
        self.subscribers.add(sub)
        if key is not None:
            self.per_key[key] = self.per_key.get(key, 0) + 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Free `sub`'s slot; a second call for the same subscription does nothing."""
        if sub not in self.subscribers:
            return
        self.subscribers.discard(sub)
        if sub.key is not None:
            n = self.per_key.get(sub.key, 0) - 1
            if n > 0:
                self.per_key[sub.key] = n
            else:
                self.per_key.pop(sub.key, None)

    def close(self) -> None:
        """End every subscription (gateway shutdown)."""
        self.closed = True
        for sub in self.subscribers:
            sub.close()


def format_sse(item: StreamItem, data: dict[str, Any]) -> str:
    return (f"id: {item.id}\nevent: {item.kind}\n"
            f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n")


ReadAfter = Callable[[int, int], Awaitable[list[StreamItem]]]


async def sse_events(broadcaster: Broadcaster, read_after: ReadAfter,
                     render: Callable[[StreamItem], dict[str, Any]], last_event_id: int | None,
                     keepalive_s: float = KEEPALIVE_S,
                     sub: Subscription | None = None) -> AsyncIterator[str]:
    """SSE text for one client: items after `last_event_id` from the table (if given), then
    live items; catch up from the table again whenever the live queue overflowed. `sub`: a
    subscription the caller already took (so it could refuse the request); it is released
    when this generator ends."""
    if sub is None:
        sub = broadcaster.subscribe()
    try:
        yield "retry: 1000\n\n"
        last = last_event_id
        catch_up = last is not None
        while True:
            if catch_up and last is not None:
                sub.reset()
                page = await read_after(last, CATCHUP_PAGE)
                for item in page:
                    yield format_sse(item, render(item))
                    last = item.id
                if len(page) == CATCHUP_PAGE:
                    continue
                catch_up = False
            try:
                got = await asyncio.wait_for(sub.queue.get(), keepalive_s)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if isinstance(got, str):
                if got == CLOSED:
                    return
                # OVERFLOW: this client fell behind; continue from the table
                if last is None:
                    last = (sub.first_dropped or 1) - 1
                catch_up = True
                continue
            if last is not None and got.id <= last:
                continue
            yield format_sse(got, render(got))
            last = got.id
    finally:
        broadcaster.unsubscribe(sub)
