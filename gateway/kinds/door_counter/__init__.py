"""Door counters: two IR break beams across the entrance count people in and out
(docs/door-counter.md)."""
from __future__ import annotations

from typing import Any

from gateway.kinds.base import AlertRule, DeviceKind, KindContext


def _build(ctx: KindContext) -> Any:
    from gateway.kinds.door_counter.service import DoorCounterService
    return DoorCounterService(ctx.db, clock=ctx.clock)


def _router(doors: Any) -> Any:
    from gateway.kinds.door_counter.api import router
    return router(doors)


KIND = DeviceKind(
    name="doors",
    apps={"door-counter": ("edge.apps.door_counter", "DoorCounter")},
    docs="docs/door-counter.md",
    build=_build,
    router=_router,
    auth=(
        ("GET", "/door-counters", ("read",)),                   # counts and occupancy
    ),
    alerts=(
        AlertRule("event", "beam.stuck", "warning", "beam.stuck:{device}:{beam}",
                  "Door counter {device}: beam {beam} blocked for {blocked_ms} ms: it is out of "
                  "service and counts nothing until the beam clears; check for something in the "
                  "beam or a misaligned sensor"),
        AlertRule("event", "beam.cleared", "info", "", "", resolves="beam.stuck:{device}:{beam}"),
    ),
)
