"""The pneumatic tube: stations, the line and the arbiter (docs/tube.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.kinds.base import AlertRule, CliFlag, ConfigKey, DeviceKind, KindContext, positive


def _build(ctx: KindContext) -> Any:
    from gateway.kinds.tube.service import TubeService
    return TubeService(ctx.db, ctx.commands, ctx.settings["tube_network"],
                       tick_s=ctx.settings["tube_tick_s"], clock=ctx.clock)


def _router(tube: Any) -> Any:
    from gateway.kinds.tube.api import router
    return router(tube)


def _event_cursor(store: Any) -> int:
    """The events.id the tube network applied up to (retention keeps what is above it)."""
    return store.conn.execute("SELECT COALESCE(MIN(cursor), 0) FROM tube_state").fetchone()[0]


KIND = DeviceKind(
    name="tube",
    apps={"tube-station": ("edge.apps.tube_station", "TubeStation"),
          "tube-line": ("edge.apps.tube_line", "TubeLine")},
    docs="docs/tube.md",
    build=_build,
    settings=("tube_network", "tube_tick_s"),
    router=_router,
    stream_kind="tube",
    event_cursor=_event_cursor,
    auth=(
        ("POST", "/tube/dispatches", ("operations",)),          # staff send a carrier
        ("DELETE", "/tube/dispatches", ("operations",)),        # ... or cancel it
        ("POST", "/tube/jams", ("operations",)),                # clear a jam
    ),
    # gateway/kinds/tube/service.py: `tube` items of type `alert.<kind>`
    alerts=(
        AlertRule("tube", "alert.carrier_lost", "critical", "tube.lost:{job_id}", "Tube: {message}"),
        AlertRule("tube", "alert.job_failed", "critical", "tube.failed:{job_id}", "Tube: {message}"),
        AlertRule("tube", "alert.jam_cleared", "info", "", "", resolves="tube.lost:{job_id}"),
        AlertRule("tube", "alert.jam_cleared", "info", "", "", resolves="tube.diverter:{diverter_id}"),
        AlertRule("tube", "alert.diverter_timeout", "warning", "tube.diverter:{diverter_id}",
                  "Tube: {message}"),
        AlertRule("tube", "alert.diverter_recovered", "info", "", "",
                  resolves="tube.diverter:{diverter_id}"),
        AlertRule("tube", "alert.hold_timeout", "warning", "tube.hold:{job_id}", "Tube: {message}"),
        AlertRule("tube", "alert.estop", "critical", "tube.estop", "Tube: {message}"),
        AlertRule("tube", "alert.estop_released", "info", "", "", resolves="tube.estop"),
    ),
    config={"tube": {"network": ConfigKey("tube_network", "path"),
                     "tick_s": ConfigKey("tube_tick_s", "float", positive)}},
    flags=(CliFlag("--tube-network", "tube_network", after="--ack-linger-ms", options={
        "type": Path, "default": None, "metavar": "FILE",
        "help": "pneumatic tube network (default boards/tube/store-demo.json; docs/tube.md)"}),),
)
