"""Rack displays: a small screen per rack showing the online likes of its products
(docs/rack-display.md). Likes come from the online shop's feed (`POST /likes`, scope `likes`,
role `likes-feed`: that and nothing else, no `read`, so never a code); displays get them as
desired state (docs/protocol.md, "Desired state")."""
from __future__ import annotations

from typing import Any

from gateway.kinds.base import DeviceKind, KindContext


def _build(ctx: KindContext) -> Any:
    from gateway.http.screen_texts import ScreenTexts
    from gateway.kinds.rack_display.service import RackDisplayService
    s = ctx.settings
    texts = ScreenTexts.load(s["screens_texts_file"], s["screens_language"])
    # the store's words for "last known" on each display ([screens], docs/rack-display.md)
    return RackDisplayService(ctx.db, ctx.commands, ctx.clock,
                              stale=lambda device: texts.for_page(device)["rack_stale"])


def _router(racks: Any) -> Any:
    from gateway.kinds.rack_display.api import router
    return router(racks)


def _errors() -> tuple[type[Exception], ...]:
    from gateway.http.screen_texts import TextsError
    return (TextsError,)


# the kind's own tables (gateway/storage/store.py migrate_kind: versioned per kind, appended here)
MIGRATIONS = (
    # 1: the online likes feed's event ids (idempotency, kept 30 days), likes per product, and
    #    per display its rack (label, products) and the state it should show with its `rev`
    #    (docs/protocol.md "Desired state")
    """
    CREATE TABLE IF NOT EXISTS rack_likes (
        event_id TEXT PRIMARY KEY,
        product  TEXT NOT NULL,
        delta    INTEGER NOT NULL,
        received INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS rack_likes_received ON rack_likes (received);
    CREATE TABLE IF NOT EXISTS rack_products (
        product TEXT PRIMARY KEY,
        likes   INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS racks (
        device   TEXT PRIMARY KEY,
        label    TEXT NOT NULL,
        products TEXT NOT NULL,             -- JSON list
        rev      INTEGER NOT NULL,
        state    TEXT NOT NULL,             -- JSON: what the display should show
        updated  INTEGER NOT NULL);
    """,
)

KIND = DeviceKind(
    name="racks",
    apps={"rack-display": ("edge.apps.rack_display", "RackDisplay")},
    docs="docs/rack-display.md",
    build=_build,
    settings=("screens_texts_file", "screens_language"),
    migrations=MIGRATIONS,
    retention_exempt={
        "rack_likes": "the service deletes a feed event id after 30 days (service.LIKE_IDS_KEEP_MS)",
        "rack_products": "one row per product liked",
        "racks": "one row per display",
    },
    router=_router,
    auth=(
        ("POST", "/likes", ("likes",)),                  # the online shop's likes feed
        ("PUT", "/racks", ("operations",)),              # staff map a rack to its products
    ),
    scopes=("likes",),
    roles={"likes-feed": ("likes",)},
    errors=_errors,
)
