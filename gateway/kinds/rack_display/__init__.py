"""Rack displays: a small screen per rack showing the online likes of its products
(docs/rack-display.md). Likes come from the online shop's feed (`POST /likes`, scope `likes`,
role `likes-feed`: that and nothing else, no `read`, so never a code); displays get them as
desired state (docs/protocol.md, "Desired state")."""
from __future__ import annotations

from typing import Any

from gateway.kinds.base import DeviceKind, KindContext


def _build(ctx: KindContext) -> Any:
    from gateway.kinds.rack_display.service import RackDisplayService
    return RackDisplayService(ctx.db, ctx.commands, ctx.clock)


def _router(racks: Any) -> Any:
    from gateway.kinds.rack_display.api import router
    return router(racks)


def _errors() -> tuple[type[Exception], ...]:
    return ()


KIND = DeviceKind(
    name="racks",
    apps={"rack-display": ("edge.apps.rack_display", "RackDisplay")},
    docs="docs/rack-display.md",
    build=_build,
    router=_router,
    auth=(
        ("POST", "/likes", ("likes",)),                  # the online shop's likes feed
        ("PUT", "/racks", ("operations",)),              # staff map a rack to its products
    ),
    scopes=("likes",),
    roles={"likes-feed": ("likes",)},
    errors=_errors,
)
