"""Other stores' stock from head office, and this store's stock to it (docs/chain.md
"Chain-wide availability").

`ChainStock` wraps the store's stock source (`StockSource`, stock.py) when the chain is on
(`[chain] store_id`):

* **reporting**: the `here` figures (floor, stockroom) it reads are appended to the stream as
  `fitting` items `{"type": "stock", "items": [{"gtin", "floor", "stockroom"}]}` when they
  differ from what it last reported (the whole stock file at start, then what changed on
  each read), at most `REPORT_LINES` lines an item. The chain outbox carries them to head
  office (`fitting.stock` on `chain/1/{store}/fitting/gateway`), which keeps the latest per
  (store, GTIN) in PostgreSQL.
* **nearby** (`[chain] central_url`): the variants' `nearby` comes from head office
  (`GET /availability`, every other store's floor + stockroom), with a short timeout and a
  cache. Head office unreachable: `nearby` is `{}` and the variant says so
  (`nearby_source: "unavailable"`, `nearby_error`); the mirror and the kiosk show this store's
  stock and "unavailable right now" for the other stores. Never an error page: a head-office
  outage is not a stock-source outage (`problems()` is the stock source's alone).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from gateway.kinds.fitting_room.stock import StockSource
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.fitting")

REPORT_LINES = 200        # stock lines per stream item (~70 bytes each: well under 64 KiB)
MAX_GTINS = 100           # per head-office request (its limit)


class CentralUnavailable(Exception):
    pass


class CentralAvailability:
    """Head office's `GET /availability`, cached per GTIN for `ttl_s`. After a failure, head
    office is not asked again for `retry_after_s` (a mirror refresh must not wait a timeout
    each time); meanwhile `nearby()` raises `CentralUnavailable` for what is not cached."""

    def __init__(self, url: str, token: str, store_id: str, *, timeout_s: float = 1.5,
                 ttl_s: float = 30.0, retry_after_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/") + "/availability"
        self.store_id = store_id
        self.ttl_s, self.retry_after_s, self.clock = ttl_s, retry_after_s, clock
        self.client = client or httpx.AsyncClient(
            timeout=timeout_s, headers={"Authorization": f"Bearer {token}"})
        self._cache: dict[str, tuple[float, dict[str, int]]] = {}
        self._down_until = 0.0
        self.error: str | None = None

    async def _fetch(self, gtins: list[str]) -> dict[str, dict[str, int]]:
        try:
            r = await self.client.get(self.url, params=[("gtin", g) for g in gtins])
        except httpx.HTTPError as exc:
            raise CentralUnavailable(f"head office {self.url} unreachable: "
                                     f"{type(exc).__name__}") from None
        if r.status_code != 200:
            raise CentralUnavailable(f"head office {self.url}: HTTP {r.status_code}"
                                     + (" (check [chain] central_token_file)"
                                        if r.status_code == 401 else ""))
        try:
            found = r.json()["gtins"]
            return {g: {store: int(s["floor"]) + int(s["stockroom"])
                        for store, s in found.get(g, {}).items() if store != self.store_id}
                    for g in gtins}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CentralUnavailable(f"head office {self.url}: unexpected answer") from None

    async def nearby(self, gtins: Iterable[str]) -> dict[str, dict[str, int]]:
        """{gtin: {other store: units}}, or CentralUnavailable (with why)."""
        now = self.clock()
        wanted = sorted(set(gtins))
        stale = [g for g in wanted if g not in self._cache or now - self._cache[g][0] > self.ttl_s]
        if stale:
            if now < self._down_until:
                raise CentralUnavailable(self.error or "head office unreachable")
            try:
                for i in range(0, len(stale), MAX_GTINS):
                    for g, figures in (await self._fetch(stale[i:i + MAX_GTINS])).items():
                        self._cache[g] = (now, figures)
            except CentralUnavailable as exc:
                if self.error is None:
                    log.warning("other stores' stock unavailable: %s (showing this store's "
                                "only; retrying every %.0fs)", exc, self.retry_after_s)
                self.error = str(exc)
                self._down_until = now + self.retry_after_s
                raise
            if self.error is not None:
                log.info("head office answers again: other stores' stock is back")
            self.error = None
            if len(self._cache) > 50_000:   # bounded: drop what is expired
                self._cache = {g: v for g, v in self._cache.items() if now - v[0] <= self.ttl_s}
        return {g: dict(self._cache[g][1]) for g in wanted}


def _report_tx(store: Store, items: list[dict[str, Any]]) -> None:
    with store.transaction():
        for i in range(0, len(items), REPORT_LINES):
            store.append_stream("fitting", {"type": "stock", "items": items[i:i + REPORT_LINES]})


class ChainStock:
    """A `StockSource` that reports this store's stock to the chain and takes the other
    stores' from head office (`central`, None: the source's own `nearby`)."""

    def __init__(self, inner: StockSource, db: Database, *,
                 central: CentralAvailability | None = None,
                 snapshot: Callable[[], Iterable[dict[str, Any]]] | None = None) -> None:
        self.inner = inner
        self.db = db
        self.central = central
        self.snapshot = snapshot     # every product the source knows (a stock file), or None
        self._reported: dict[str, tuple[int, int]] = {}

    async def product(self, gtin: str) -> dict[str, Any] | None:
        return await self.inner.product(gtin)

    async def by_uid(self, uid: str) -> tuple[str, str] | None:
        return await self.inner.by_uid(uid)

    async def variants(self, gtin: str) -> list[dict[str, Any]]:
        variants = await self.inner.variants(gtin)
        await self.report(variants)
        if self.central is not None and variants:
            try:
                nearby = await self.central.nearby(v["gtin"] for v in variants)
            except CentralUnavailable as exc:
                for v in variants:
                    v.update(nearby={}, nearby_source="unavailable", nearby_error=str(exc))
            else:
                for v in variants:
                    v.update(nearby=nearby.get(v["gtin"], {}), nearby_source="head-office")
        return variants

    async def report(self, products: Iterable[dict[str, Any]]) -> int:
        """Append what changed since the last report; returns the lines appended. A failed
        write is logged and retried at the next read (nothing is marked reported)."""
        lines = []
        for p in products:
            here = (int(p["here"]["floor"]), int(p["here"]["stockroom"]))
            if self._reported.get(p["gtin"]) != here:
                lines.append({"gtin": p["gtin"], "floor": here[0], "stockroom": here[1]})
        if not lines:
            return 0
        try:
            await self.db.write(_report_tx, lines)
        except Exception:
            log.exception("stock report to the chain failed (%d lines); retried at the next "
                          "read", len(lines))
            return 0
        for line in lines:
            self._reported[line["gtin"]] = (line["floor"], line["stockroom"])
        return len(lines)

    async def report_all(self) -> int:
        """At start: the whole stock file (a stock API is reported as it is read)."""
        return await self.report(list(self.snapshot())) if self.snapshot is not None else 0

    def problems(self) -> list[dict[str, Any]]:
        problems = getattr(self.inner, "problems", None)
        return problems() if problems is not None else []
