"""Head office over HTTP: chain-wide stock availability for the stores' mirrors and kiosks
(docs/chain.md "Chain-wide availability"), and the chain-wide funnel (docs/chain.md "The
chain-wide funnel"). Started by `phygital central --http HOST:PORT`.

`GET /funnel?start&end&bucket`: the store funnel's answer (gateway/analytics, same fields and
bounds) summed over every store's hour reports (`chain_funnel`), plus each store's totals.

`GET /availability?gtin=...` (repeat, 1..MAX_GTINS): per GTIN, every store's latest reported
stock (`chain_stock`, filled by the consumer from `fitting.stock` chain events). One bearer
token (`--http-token-file`) for the chain's gateways: the figures are not secret, but the
route must not be an open door into the head-office database. Read-only; a PostgreSQL outage
answers 503 (the stores then show their own stock only).
"""
from __future__ import annotations

import hmac
import re
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from gateway.analytics.api import MAX_HOURLY_DAYS, MAX_SPAN_DAYS, FunnelOut, hour_range
from gateway.analytics.queries import assemble_funnel, rate
from gateway.analytics.rollup import DAY, HOUR
from gateway.central.messages import FUNNEL_COLS
from gateway.central.schema import availability, create_schema, funnel

T = TypeVar("T")

MAX_GTINS = 100
GTIN_RE = re.compile(r"\d{8,14}\Z")


class StoreStockOut(BaseModel):
    floor: int = Field(description="units on the sales floor, as the store last reported")
    stockroom: int = Field(description="units in the stockroom")
    at: int = Field(description="when the store reported it (unix ms, the store's clock)")


class AvailabilityOut(BaseModel):
    model_config = {"json_schema_extra": {"examples": [{
        "as_of": 1795000000000,
        "gtins": {"09506000134369": {"store-0002": {"floor": 3, "stockroom": 1,
                                                    "at": 1794999990000}}}}]}}
    as_of: int = Field(description="head office's clock when it answered (unix ms)")
    gtins: dict[str, dict[str, StoreStockOut]] = Field(
        description="per GTIN asked (14 digits), per store that reported it; {}: no store did")


class StoreFunnelOut(BaseModel):
    store: str
    entries: int
    placements: int
    sessions: int
    purchases: int
    units: int
    purchases_per_entry: float | None = Field(description="the store's conversion")


class ChainFunnelOut(FunnelOut):
    stores: list[StoreFunnelOut] = Field(description="each store that reported an hour of "
                                                     "the range, with its totals")


class _Db:
    """One connection, reopened after an error (a PostgreSQL restart); queries one at a time."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def availability(self, gtins: list[str]) -> dict[str, dict[str, dict[str, int]]]:
        return self._run(availability, gtins)

    def funnel(self, start: int, end: int, size: int
               ) -> tuple[list[tuple[int, ...]], list[tuple[Any, ...]]]:
        return self._run(funnel, start, end, size)

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
                    create_schema(self._conn)   # before the consumer's first batch, too
                return fn(self._conn, *args)
            except psycopg.Error:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise


def create_app(dsn: str, token: str) -> FastAPI:
    if len(token) < 16:
        raise ValueError("the HTTP token must be at least 16 characters (e.g. "
                         "`openssl rand -hex 24 > central-http.token`)")
    app = FastAPI(title="Phygital Edge head office", version="1",
                  description="Chain-wide stock availability and funnel (docs/chain.md)")
    db = _Db(dsn)
    bearer = HTTPBearer(auto_error=False)

    # a default, not Annotated: the annotation is a string here and `bearer` a local name
    def authorised(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(401, "give the chain's head-office token: Authorization: Bearer "
                                     "<token> (the store's [chain] central_token_file)",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/availability", response_model=AvailabilityOut, dependencies=[Depends(authorised)])
    def get_availability(gtin: Annotated[list[str], Query(
            description=f"a GTIN (8-14 digits; repeat, at most {MAX_GTINS})")]) -> dict[str, Any]:
        """Every store's latest reported stock of each GTIN (scope: the chain's token)."""
        if not 0 < len(gtin) <= MAX_GTINS:
            raise HTTPException(422, f"give 1..{MAX_GTINS} gtin parameters, got {len(gtin)}")
        bad = [g[:20] for g in gtin if not GTIN_RE.match(g)]
        if bad:
            raise HTTPException(422, f"not a GTIN (8-14 digits): {bad[:5]}")
        wanted = sorted({g.zfill(14) for g in gtin})
        try:
            found = db.availability(wanted)
        except psycopg.Error as exc:
            raise HTTPException(503, "head office database unavailable, try again shortly "
                                     f"({type(exc).__name__})") from None
        return {"as_of": int(time.time() * 1000), "gtins": found}

    @app.get("/funnel", response_model=ChainFunnelOut, dependencies=[Depends(authorised)])
    def get_funnel(start: int | None = Query(None, description="unix ms, a whole hour (default: "
                                                               "24 h before end)"),
                   end: int | None = Query(None, description="unix ms, a whole hour (default: "
                                                             "the next whole hour)"),
                   bucket: Literal["hour", "day"] = Query(
                       "hour", description=f"`hour` (ranges up to {MAX_HOURLY_DAYS} days) or "
                                           "`day` (24 h from start)")) -> dict[str, Any]:
        """The chain-wide funnel: entries → pad placements → fitting-room sessions →
        purchases, summed over every store's hour reports, per hour or day, with each store's
        totals (scope: the chain's token)."""
        s, e = hour_range(start, end, int(time.time() * 1000),
                          MAX_HOURLY_DAYS if bucket == "hour" else MAX_SPAN_DAYS)
        size = HOUR if bucket == "hour" else DAY
        try:
            buckets, stores = db.funnel(s, e, size)
        except psycopg.Error as exc:
            raise HTTPException(503, "head office database unavailable, try again shortly "
                                     f"({type(exc).__name__})") from None
        out = assemble_funnel(s, e, bucket, buckets)
        out["stores"] = [dict(zip(("store", *FUNNEL_COLS), r)) for r in stores]
        for st in out["stores"]:
            st["purchases_per_entry"] = rate(st["purchases"], st["entries"])
        return out

    return app


def serve(app: FastAPI, host: str, port: int, stop: threading.Event) -> threading.Thread:
    """uvicorn in a thread of its own until `stop` is set."""
    import asyncio

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False, limit_concurrency=64))

    def run() -> None:
        async def main() -> None:
            task = asyncio.create_task(server.serve())
            while not stop.is_set() and not task.done():
                await asyncio.sleep(0.2)
            server.should_exit = True
            await task
        asyncio.run(main())

    t = threading.Thread(target=run, daemon=True, name="central-http")
    t.start()
    return t
