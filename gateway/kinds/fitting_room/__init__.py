"""Fitting rooms: readers that recognise garments, the mirror page, sizes by tube (docs/fitting-rooms.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.kinds.base import (
    CliFlag,
    ConfigKey,
    DeviceKind,
    KindContext,
    RetentionRule,
    non_negative,
    nonempty,
    positive,
)


def _build(ctx: KindContext) -> Any:
    from gateway.http.screen_texts import ScreenTexts
    from gateway.kinds.fitting_room.core import Rules
    from gateway.kinds.fitting_room.service import FittingService
    from gateway.kinds.fitting_room.stock import FileStock, HttpStock, WatchedStock
    from gateway.kinds.fitting_room.tube_sizes import TubeSizeDispatcher, tube_station
    s = ctx.settings
    inner = HttpStock(s["stock_url"]) if s["stock_url"] else \
        FileStock(s["stock_file"]) if s["stock_file"] else None
    # its health: the screens and GET /customer-points say when the stock API is down
    stock: Any = WatchedStock(inner, ctx.clock) if inner is not None else None
    if stock is not None and s["store_id"]:
        stock = _chain_stock(ctx, stock, inner)
    fitting = FittingService(ctx.db, stock, rules=Rules(
        swap_n=s["fitting_swap_n"], swap_window_ms=int(s["fitting_swap_window_s"] * 1000)),
        clock=ctx.clock)
    fitting.texts = ScreenTexts.load(s["screens_texts_file"], s["screens_language"])
    tube = ctx.services["tube"]  # stockroom sizes by tube
    fitting.dispatcher = TubeSizeDispatcher(tube, tube_station(tube, s["fitting_tube_station"]))
    return fitting


def _chain_stock(ctx: KindContext, stock: Any, inner: Any) -> Any:
    """The chain is on: report this store's stock to it, and with `[chain] central_url` take
    the other stores' from head office (nearby.py, docs/chain.md)."""
    from gateway.kinds.fitting_room.nearby import CentralAvailability, ChainStock
    from gateway.kinds.fitting_room.stock import FileStock, StockError
    s = ctx.settings
    central = None
    if s["chain_central_url"]:
        path = s["chain_central_token_file"]
        try:
            token = Path(path).read_text("utf-8").strip() if path else ""
        except OSError as exc:
            raise StockError(f"[chain] central_token_file: {exc}") from None
        if not token:
            raise StockError(f"[chain] central_token_file {path}: empty; put head office's "
                             "HTTP token in it (phygital central --http-token-file)")
        central = CentralAvailability(s["chain_central_url"], token, s["store_id"])
    snapshot = (lambda: inner.products.values()) if isinstance(inner, FileStock) else None
    return ChainStock(stock, ctx.db, central=central, snapshot=snapshot)


def _router(fitting: Any) -> Any:
    from gateway.kinds.fitting_room.api import router
    return router(fitting)


def _errors() -> tuple[type[Exception], ...]:
    from gateway.http.screen_texts import TextsError
    from gateway.kinds.fitting_room.stock import StockError
    return (StockError, TextsError)


def _problems(fitting: Any) -> list[dict[str, Any]]:
    stock = fitting.stock
    return stock.problems() if hasattr(stock, "problems") else []


# the kind's own tables (gateway/storage/store.py migrate_kind: versioned per kind, appended
# here). The state row (`fitting`, core migration 6) keeps the live state only: the rooms, the
# id counter and the cursor; history is in rows, written when it changes (service.py).
MIGRATIONS: tuple[str, ...] = (
    # 1: history in tables (issue 17). A state row from before (everything in one JSON) is
    #    split by the service on its first load, in one transaction (FittingService.load).
    """
    CREATE TABLE fitting_sessions (
        id      TEXT PRIMARY KEY,
        room    TEXT NOT NULL,
        start   INTEGER NOT NULL,          -- unix ms
        "end"   INTEGER,                   -- unix ms; NULL while the session is on
        data    TEXT NOT NULL);            -- JSON: the core's session (items, swaps, tried...)
    CREATE INDEX fitting_sessions_start ON fitting_sessions (start);
    CREATE INDEX fitting_sessions_end ON fitting_sessions ("end");
    CREATE TABLE fitting_tryons (          -- one per (session, product): the try-ons
        session   TEXT NOT NULL,
        gtin      TEXT NOT NULL,
        start     INTEGER NOT NULL,        -- the session's start, unix ms
        converted INTEGER NOT NULL,        -- 1: a purchase was attributed to it
        PRIMARY KEY (session, gtin));
    CREATE INDEX fitting_tryons_gtin ON fitting_tryons (gtin, start);
    CREATE TABLE fitting_requests (
        id      TEXT PRIMARY KEY,
        room    TEXT NOT NULL,
        state   TEXT NOT NULL,
        created INTEGER NOT NULL,          -- unix ms
        updated INTEGER NOT NULL,          -- unix ms
        pinned  INTEGER NOT NULL,          -- 1: not final, or its dispatch is not (in memory)
        data    TEXT NOT NULL);            -- JSON: the request as the API shows it
    CREATE INDEX fitting_requests_pinned ON fitting_requests (pinned, updated);
    CREATE TABLE fitting_purchases (
        receipt TEXT PRIMARY KEY,
        at      INTEGER NOT NULL,          -- unix ms
        data    TEXT NOT NULL);            -- JSON: {"receipt", "at", "lines"}
    CREATE INDEX fitting_purchases_at ON fitting_purchases (at);
    CREATE TABLE fitting_footfall (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,          -- unix ms
        entries INTEGER NOT NULL);
    CREATE INDEX fitting_footfall_at ON fitting_footfall (at);
    """,
    # 2: `GET /fitting/requests?state=&room=&after=` pages in rowid order (the creation order,
    #    `seq`), each filter an index search (an index ends with the rowid: no sort)
    """
    CREATE INDEX fitting_requests_by_state ON fitting_requests (state);
    CREATE INDEX fitting_requests_by_room ON fitting_requests (room);
    CREATE INDEX fitting_requests_by_room_state ON fitting_requests (room, state);
    """,
)


# retention of the history above ([retention] fitting_days, docs/fitting-rooms.md "Storage"):
# a session and its try-ons `fitting_days` after it ended (never one that is on; the try-ons
# first, by their session's end: a session's start <= its end, so the walk stops right), a
# staff request after its last change (only final ones whose dispatch is final: `pinned = 0`),
# a purchase and a door count after they were made
RETENTION: tuple[RetentionRule, ...] = (
    RetentionRule("fitting_tryons", "retention_fitting_days", "start",
                  "EXISTS (SELECT 1 FROM fitting_sessions s WHERE s.id = fitting_tryons.session "
                  'AND s."end" < ?)'),
    RetentionRule("fitting_sessions", "retention_fitting_days", "start",
                  '"end" IS NOT NULL AND "end" < ?'),
    RetentionRule("fitting_requests", "retention_fitting_days", "created",
                  "pinned = 0 AND updated < ?"),
    RetentionRule("fitting_purchases", "retention_fitting_days", "at", "at < ?"),
    RetentionRule("fitting_footfall", "retention_fitting_days", "at", "at < ?"),
)


def _event_cursor(store: Any) -> int:
    """The events.id the fitting rooms applied up to (retention keeps what is above it)."""
    row = store.conn.execute("SELECT cursor FROM fitting WHERE id = 1").fetchone()
    return row[0] if row else 0


KIND = DeviceKind(
    name="fitting",
    apps={"fitting-room": ("edge.apps.fitting_room", "FittingRoom")},
    docs="docs/fitting-rooms.md",
    build=_build,
    settings=("stock_file", "stock_url", "fitting_swap_n", "fitting_swap_window_s",
              "fitting_tube_station", "screens_texts_file", "screens_language",
              "store_id", "chain_central_url", "chain_central_token_file",
              "retention_fitting_days"),
    needs=("tube",),
    migrations=MIGRATIONS,
    retention=RETENTION,
    retention_exempt={},
    router=_router,
    stream_kind="fitting",
    event_cursor=_event_cursor,
    screens={"fitting-room": "/mirror/{dev}"},
    problems=_problems,
    auth=(
        ("GET", "/mirror", ()),                                  # the mirror page: its data calls need tokens
        ("POST", "/fitting/rooms/*/requests", ("requests",)),   # the mirror asks for a size
        ("POST", "/fitting/requests/*", ("operations",)),       # staff work the requests
        ("POST", "/fitting/purchases", ("operations",)),        # POS receipts
        ("POST", "/fitting/footfall", ("operations",)),         # door counter
    ),
    config={"fitting": {
        "stock_file": ConfigKey("stock_file", "path"),
        "stock_url": ConfigKey("stock_url", "str", nonempty),
        "swap_n": ConfigKey("fitting_swap_n", "int", positive),
        "swap_window_s": ConfigKey("fitting_swap_window_s", "float", positive),
        "tube_station": ConfigKey("fitting_tube_station", "str", nonempty),
    }, "retention": {"fitting_days": ConfigKey("retention_fitting_days", "float", non_negative)}},
    flags=(
        CliFlag("--stock", "stock_file", after="--samples", options={
            "type": Path, "default": None,
            "help": "fitting rooms: stock JSON file (docs/fitting-rooms.md)"}),
        CliFlag("--stock-url", "stock_url", options={
            "default": None, "help": "fitting rooms: a store system's stock API instead of --stock"}),
        CliFlag("--fitting-swaps", "fitting_swap_n", options={
            "type": int, "default": 3, "metavar": "N",
            "help": "back-and-forth alert after N swaps (default 3) ..."}),
        CliFlag("--fitting-swap-window", "fitting_swap_window_s", options={
            "type": float, "default": 600.0, "metavar": "SECONDS",
            "help": "... within this many seconds (default 600)"}),
        CliFlag("--fitting-tube-station", "fitting_tube_station", after="--tube-network",
                options={"default": None, "metavar": "STATION",
                         "help": "tube station serving the fitting rooms: stockroom sizes come "
                                 "by tube (default fitting-rooms if the network has it; off: "
                                 "staff bring every size)"}),
    ),
    errors=_errors,
)
