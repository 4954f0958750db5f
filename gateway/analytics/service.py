"""AnalyticsService: keeps the rollups up to date from the stream and takes purchases and door
counts (docs/analytics.md).

The fold (`gateway.analytics.rollup.fold_tx`) runs on the writer thread when a commit woke
the service, at most once per `linger_s` (a busy store commits many times a second; one fold
per second keeps the writer's extra work to one small transaction), and every `tick_s`
anyway. It is idempotent by its cursor: nothing is lost or counted twice across restarts.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.analytics import ledger, queries
from gateway.analytics.ledger import EntriesSource, LedgerError, Receipt, sync_entries_tx
from gateway.analytics.rollup import PAGE, fold_tx, report_hours_tx
from gateway.devices.ticker import tick_loop
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.analytics")

#: (receipts as (id, at, [(gtin, qty)])) -> each receipt's record with the try-on sessions each
#: line converted: the fitting rooms' attribution (gateway/app.py wires it)
Attribute = Callable[[list[tuple[str, int, list[tuple[str, int]]]]], Awaitable[list[dict[str, Any]]]]
#: (at, entries): the fitting rooms' own footfall figure (GET /fitting/analytics)
DoorCount = Callable[[int | None, int], Awaitable[None]]

FOOTFALL_SOURCE = "footfall-api"


def fold_and_sync_tx(store: Store, limit: int, entries: Mapping[str, EntriesSource],
                     report: bool = False) -> tuple[int, int]:
    """Writer thread, ONE transaction: fold the stream items after the cursor (at most `limit`)
    and take the minutes the kinds' entries hooks say changed (about `limit` per source);
    `report`: the hours whose funnel changed go to the stream for head office
    (`report_hours_tx`). Returns (items read, most rows of a source or hours reported): any
    at `limit`, call again."""
    with store.transaction():
        folded, synced = fold_tx(store, limit), sync_entries_tx(store, entries, limit)
        reported = report_hours_tx(store, limit) if report else 0
        return folded, max(synced, reported)


class AnalyticsService:
    def __init__(self, db: Database, clock: Callable[[], int], *, attribute: Attribute | None = None,
                 door_count: DoorCount | None = None,
                 entries: Mapping[str, EntriesSource] | None = None, tick_s: float = 30.0,
                 linger_s: float = 1.0, report_hours: bool = False) -> None:
        self.db = db
        self.clock = clock
        self.attribute = attribute
        self.door_count = door_count
        self.entries: Mapping[str, EntriesSource] = dict(entries or {})  # kind name -> its hook
        self.tick_s = tick_s
        self.linger_s = linger_s
        # the chain is on: report the hours whose funnel changed to head office (docs/chain.md)
        self.report_hours = report_hours
        self._wake = asyncio.Event()
        self.folded = 0

    def notify(self) -> None:
        """Something committed (cheap: wakes the fold)."""
        self._wake.set()

    async def run(self) -> None:
        await tick_loop(self._wake, self.tick_s, self._step, log, "analytics fold")

    async def _step(self) -> None:
        await asyncio.sleep(self.linger_s)  # let a burst of commits gather into one fold
        await self.catch_up()

    async def catch_up(self) -> int:
        """Fold everything committed so far, and the kinds' new entries; returns the items read."""
        n = 0
        while True:
            got, rows = await self.db.write(fold_and_sync_tx, PAGE, self.entries,
                                            self.report_hours)
            n += got
            if got < PAGE and rows < PAGE:
                break
        self.folded += n
        return n

    # -- purchases and entries --------------------------------------------------------------

    async def purchases(self, receipts: list[Receipt], source: str
                        ) -> list[tuple[dict[str, Any], bool]]:
        """Record receipts (idempotent by id). The fitting rooms attribute them first (also
        idempotent), then the ledger takes them: a crash in between is mended by the POS's
        retry, which finds the attribution done and writes the ledger."""
        plain = [(r.receipt, r.at, [(g, q) for g, q in r.items]) for r in receipts]
        if self.attribute is not None:
            attributed = await self.attribute(plain)
        else:
            attributed = [{"receipt": rid, "at": at, "lines": [{"gtin": g, "qty": q, "sessions": []}
                                                                for g, q in items]}
                          for rid, at, items in plain]
        done = await self.db.write(ledger.record_purchases, attributed, source, self.clock())
        if self.report_hours:
            self.notify()   # the hour's new totals to head office at the next fold, not the tick
        return done

    async def purchase(self, receipt: str, at: int | None, items: list[tuple[str, int]],
                       source: str) -> dict[str, Any]:
        r = Receipt(receipt, at if at is not None else self.clock(),
                    tuple((ledger.gtin14(g), q) for g, q in items))
        return (await self.purchases([r], source))[0][0]

    async def import_csv(self, data: bytes) -> dict[str, Any]:
        receipts = ledger.parse_receipts_csv(data)  # all or nothing: raises before any write
        done = await self.purchases(receipts, "csv")
        known = [rec["receipt"] for rec, new in done if not new]
        return {"receipts": len(receipts), "lines": sum(len(r.items) for r in receipts),
                "units": sum(q for r in receipts for _, q in r.items),
                "imported": len(receipts) - len(known), "already_known": known}

    async def footfall(self, at: int | None, entries: int) -> None:
        at = at if at is not None else self.clock()
        if self.door_count is not None:
            await self.door_count(at, entries)
        await self.db.write(ledger.add_entries, FOOTFALL_SOURCE, at, entries)
        if self.report_hours:
            self.notify()

    # -- figures ----------------------------------------------------------------------------

    async def figure(self, name: str, start: int, end: int, **kw: Any) -> dict[str, Any]:
        fn: Callable[..., dict[str, Any]] = getattr(queries, name)
        if name == "devices":
            kw["now"] = self.clock()
        return await self.db.read(_call, fn, start, end, kw)


def _call(store: Store, fn: Callable[..., dict[str, Any]], start: int, end: int,
          kw: dict[str, Any]) -> dict[str, Any]:
    return fn(store, start, end, **kw)


__all__ = ["AnalyticsService", "LedgerError"]
