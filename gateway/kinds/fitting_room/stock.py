"""Stock sources for the fitting rooms: what a garment is and where its other sizes are.

The fitting-room service only talks to a `StockSource` (docs/fitting-rooms.md, "Stock"):

* `product(gtin)` → `{"gtin", "style", "name", "colour", "size", "price", "currency"}` or None
* `variants(gtin)` → every product of the same style (other sizes and colours, the garment
  itself included), each with `"here": {"floor": n, "stockroom": n}` and
  `"nearby": {"<store>": n}`
* `by_uid(uid)` → `(gtin, serial)` for tags without a GS1 Digital Link (UID mapping), or None

`FileStock` (the demo default) reads one JSON file; `HttpStock` asks a store system over
HTTP with the same shapes (`GET {base}/products/{gtin}`, `GET {base}/products/{gtin}/variants`,
`GET {base}/tags/{uid}`; 404 = unknown).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import httpx

from gateway.kinds.fitting_room import gs1

PRODUCT_FIELDS = ("gtin", "style", "name", "colour", "size", "price", "currency")


class StockError(ValueError):
    pass


class StockSource(Protocol):
    async def product(self, gtin: str) -> dict[str, Any] | None: ...

    async def variants(self, gtin: str) -> list[dict[str, Any]]: ...

    async def by_uid(self, uid: str) -> tuple[str, str] | None: ...


def _product(raw: dict[str, Any]) -> dict[str, Any]:
    try:
        gtin = gs1.normalise_gtin(str(raw.get("gtin", "")))
    except gs1.Gs1Error as exc:
        raise StockError(f"stock product {raw.get('name', '?')!r}: {exc}") from None
    for f in ("style", "name", "size"):
        if not isinstance(raw.get(f), str) or not raw[f]:
            raise StockError(f"stock product {gtin}: {f} is required")
    price = raw.get("price")
    if not isinstance(price, (int, float)) or price < 0:
        raise StockError(f"stock product {gtin}: price must be a number >= 0")
    here = raw.get("here") or {}
    nearby = raw.get("nearby") or {}
    counts = [here.get("floor", 0), here.get("stockroom", 0), *nearby.values()]
    if not all(isinstance(n, int) and n >= 0 for n in counts):
        raise StockError(f"stock product {gtin}: availability counts must be integers >= 0")
    return {"gtin": gtin, "style": raw["style"], "name": raw["name"],
            "colour": raw.get("colour"), "size": raw["size"], "price": price,
            "currency": raw.get("currency", "EUR"),
            "here": {"floor": here.get("floor", 0), "stockroom": here.get("stockroom", 0)},
            "nearby": dict(nearby)}


class FileStock:
    """`{"products": [{"gtin", "style", "name", "colour", "size", "price", "currency",
    "here": {"floor", "stockroom"}, "nearby": {"store": n}}], "tags": {"<uid>": "<gtin>/<serial>"}}`"""

    def __init__(self, path: Path | None = None, data: dict[str, Any] | None = None) -> None:
        if data is None:
            if path is None or not Path(path).is_file():
                raise StockError(f"stock file {path} not found (--stock)")
            try:
                data = json.loads(Path(path).read_text("utf-8"))
            except ValueError as exc:
                raise StockError(f"stock file {path} is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("products"), list):
            raise StockError('stock: expected {"products": [...], "tags": {...}}')
        self.products = {p["gtin"]: p for p in map(_product, data["products"])}
        self.tags: dict[str, tuple[str, str]] = {}
        for uid, ident in (data.get("tags") or {}).items():
            g, _, serial = str(ident).partition("/")
            self.tags[uid.lower()] = (gs1.normalise_gtin(g), gs1.validate_serial(serial))

    async def product(self, gtin: str) -> dict[str, Any] | None:
        p = self.products.get(gtin)
        return None if p is None else {k: p[k] for k in PRODUCT_FIELDS}

    async def variants(self, gtin: str) -> list[dict[str, Any]]:
        p = self.products.get(gtin)
        if p is None:
            return []
        return [dict(v) for v in self.products.values() if v["style"] == p["style"]]

    async def by_uid(self, uid: str) -> tuple[str, str] | None:
        return self.tags.get(uid.lower())


class HttpStock:
    """A store system's stock API (shapes above); a timeout or 5xx raises StockError."""

    def __init__(self, base_url: str, timeout_s: float = 3.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.client = client or httpx.AsyncClient(timeout=timeout_s)

    async def _get(self, path: str) -> Any:
        try:
            r = await self.client.get(self.base + path)
        except httpx.HTTPError as exc:
            raise StockError(f"stock service {self.base}: {exc!r}") from None
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise StockError(f"stock service {self.base}{path}: HTTP {r.status_code}")
        return r.json()

    async def product(self, gtin: str) -> dict[str, Any] | None:
        p = await self._get(f"/products/{gtin}")
        return None if p is None else {k: _product(p)[k] for k in PRODUCT_FIELDS}

    async def variants(self, gtin: str) -> list[dict[str, Any]]:
        return [_product(v) for v in (await self._get(f"/products/{gtin}/variants") or [])]

    async def by_uid(self, uid: str) -> tuple[str, str] | None:
        t = await self._get(f"/tags/{uid.lower()}")
        return None if t is None else (gs1.normalise_gtin(t["gtin"]), str(t["serial"]))


def where_to_fetch(variant: dict[str, Any]) -> str | None:
    """Where staff (or the tube) get a wanted size: the sales floor first, then the
    stockroom, then the nearby store with the most."""
    if variant["here"]["floor"] > 0:
        return "floor"
    if variant["here"]["stockroom"] > 0:
        return "stockroom"
    stores = sorted(((n, s) for s, n in variant["nearby"].items() if n > 0), reverse=True)
    return f"store:{stores[0][1]}" if stores else None


class WatchedStock:
    """A `StockSource` that remembers whether the last call worked: `down_since` (unix ms of
    the first failure after the last success, None while it works) and `error`. What the
    customer points (`GET /customer-points`) and the screens say about the stock API."""

    def __init__(self, inner: StockSource, clock: Any) -> None:
        self.inner = inner
        self.clock = clock
        self.down_since: int | None = None
        self.error: str | None = None

    async def _call(self, coro: Any) -> Any:
        try:
            out = await coro
        except StockError as exc:
            if self.down_since is None:
                self.down_since = self.clock()
            self.error = str(exc)
            raise
        self.down_since, self.error = None, None
        return out

    async def product(self, gtin: str) -> dict[str, Any] | None:
        return await self._call(self.inner.product(gtin))

    async def variants(self, gtin: str) -> list[dict[str, Any]]:
        return await self._call(self.inner.variants(gtin))

    async def by_uid(self, uid: str) -> tuple[str, str] | None:
        return await self._call(self.inner.by_uid(uid))

    def problems(self) -> list[dict[str, Any]]:
        """[] while it works, else one problem: what, since when, why."""
        if self.down_since is None:
            return []
        return [{"what": "stock", "since": self.down_since,
                 "why": f"the stock API does not answer: {self.error}"}]
