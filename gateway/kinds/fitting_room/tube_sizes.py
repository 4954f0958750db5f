"""Another size by tube (docs/fitting-rooms.md, "How a size request travels"): the
`SizeDispatcher` that sends a wanted size from the stockroom to the fitting rooms' tube
station, and reports the carrier's progress to the fitting-room service.

* **when**: the stock source says the size is to be fetched from the stockroom
  (`where == "stockroom"`: none on the sales floor, some in the stockroom), a tube station
  serves the fitting rooms (`GatewayConfig.fitting_tube_station`) and the boards of both
  stations have been seen by this gateway (a store without a tube keeps the default network
  file: its sizes must not wait for a tube that is not there). Otherwise: staff.
* **the dispatch**: first stockroom station → that station, priority `customer`, item
  `<GTIN> <name> <size>` (what the stockroom display asks staff to load), idempotency key
  `fitting:<request id>`: asking again (a retry, a restart) finds the same dispatch.
* **progress**: read from the tube service's dispatch record (persisted in `tube_jobs` in the
  tube's own transactions), mapped by `STATES`; a `failed` or `cancelled` dispatch hands the
  request back to staff. Staff see tube requests in their list too: someone loads the carrier
  in the stockroom and carries it from the station to the room.
"""
from __future__ import annotations

import logging
from typing import Any

from gateway.kinds.tube.core import InvalidCommand, InvalidJob
from gateway.kinds.tube.service import JobConflict, TubeConfigError, TubeService, UnknownJob
from gateway.storage.store import Store

log = logging.getLogger("gateway.fitting.tube")

DEFAULT_STATION = "fitting-rooms"
OFF = "off"
# dispatch state -> the size request's state (None: leave it where it is)
STATES: dict[str, str | None] = {
    "queued": None,            # waiting for staff to load it in the stockroom
    "routing": "on_the_way",   # loaded, the line is being set
    "in_transit": "on_the_way", "held": "on_the_way", "lost": "on_the_way",
    "arrived": "on_the_way",   # in the station's bin: staff bring it to the room
    "delivered": "on_the_way",  # taken out of the bin; `done` when its tag is read in the room
    "failed": None, "cancelled": None,
}
FALLBACK = ("failed", "cancelled")
CANCELLABLE = ("queued", "routing")


def tube_station(tube: TubeService, configured: str | None) -> str | None:
    """The tube station that serves the fitting rooms: `configured` (must be a floor station of
    the network), `"off"` for none, or when not configured `fitting-rooms` if the network has it."""
    stations = tube.net.stations
    if configured is None:
        return DEFAULT_STATION if DEFAULT_STATION in stations else None
    if configured == OFF:
        return None
    st = stations.get(configured)
    if st is None or st.kind != "floor":
        floors = ", ".join(s for s, v in stations.items() if v.kind == "floor")
        raise TubeConfigError(f"fitting tube_station {configured!r}: not a floor station of tube "
                              f"network {tube.net.name!r} (floor stations: {floors}; or \"off\")")
    return configured


def _known(store: Store, devices: list[str]) -> bool:
    return all(store.get_device(d) is not None for d in devices)


def dispatch_key(request_id: str, prefix: str = "fitting") -> str:
    return f"{prefix}:{request_id}"


class TubeSizeDispatcher:
    """`prefix`: of its dispatches' idempotency keys (`fitting:<request id>`); the endless aisle
    (gateway/aisle/) sends its stockroom items through one of its own (`aisle:<request id>`)."""

    def __init__(self, tube: TubeService, station: str | None, prefix: str = "fitting") -> None:
        self.tube = tube
        self.station = station
        self.prefix = prefix
        self.origin = next((s for s, v in tube.net.stations.items() if v.kind == "stockroom"), None)

    async def dispatch(self, request: dict[str, Any], variant: dict[str, Any]) -> str:
        if self.station is None or self.origin is None or request.get("where") != "stockroom":
            return "staff"
        if not await self.tube.db.read(_known, [self.tube.cfg.devices[s] for s in (self.origin, self.station)]):
            return "staff"  # no tube installed here (its boards were never seen): staff
        item = f"{request['gtin']} {variant.get('name', '')} {variant.get('size', '')}".strip()[:128]
        try:
            await self.tube.dispatch(origin=self.origin, destination=self.station,
                                     priority="customer", item=item, key=dispatch_key(request["id"], self.prefix))
        except (InvalidJob, JobConflict) as exc:
            log.warning("size request %s: no tube dispatch (%s); staff bring it", request["id"], exc)
            return "staff"
        return "tube"

    def progress(self, request: dict[str, Any]) -> dict[str, Any] | None:
        try:
            rec = self.tube.job(dispatch_key(request["id"], self.prefix))
        except UnknownJob:
            return None
        state = rec["state"]
        return {"via": "tube", "state": STATES.get(state), "fallback": state in FALLBACK,
                "cancellable": state in CANCELLABLE,
                "dispatch": {"job": rec["job"], "from": rec["from"], "to": rec["to"],
                             "state": state, "reason": rec["reason"], "attempt": rec["attempt"],
                             "final": rec["final"]}}

    async def cancel(self, request: dict[str, Any]) -> None:
        try:
            await self.tube.cancel(dispatch_key(request["id"], self.prefix))
        except (InvalidCommand, UnknownJob) as exc:  # left meanwhile: staff get it back
            log.info("size request %s: tube dispatch not cancelled: %s", request["id"], exc)
