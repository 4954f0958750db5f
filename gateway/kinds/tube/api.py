"""HTTP API of the pneumatic tube (docs/tube.md, "API"): dispatches, staff recovery, line view."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.kinds.tube.core import InvalidCommand, InvalidJob
from gateway.kinds.tube.service import JobConflict, TubeService, UnknownJob

KEY_PATTERN = r"^[A-Za-z0-9._:@/+=-]+$"


class DispatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    origin: str = Field(alias="from", min_length=1, max_length=64, examples=["stockroom"],
                        description="sending station")
    destination: str = Field(alias="to", min_length=1, max_length=64, examples=["fitting-rooms"],
                             description="receiving station")
    priority: Literal["customer", "replenishment"] = Field(
        default="customer", description="`customer` (someone is waiting) goes before `replenishment`")
    item: str = Field(min_length=1, max_length=128, examples=["SKU-1042 size M"],
                      description="what staff put in the carrier (shown on the sender's display)")
    idempotency_key: str = Field(min_length=1, max_length=64, pattern=KEY_PATTERN,
                                 description="the caller's key; also the dispatch id. A retry with "
                                             "the same key returns the same dispatch")


class DispatchOut(BaseModel):
    """A dispatch record (also the `tube` stream items' `dispatch.<state>`)."""
    model_config = ConfigDict(populate_by_name=True, json_schema_extra={"examples": [{
        "job": "k-1", "from": "stockroom", "to": "fitting-rooms", "priority": "customer",
        "item": "SKU-1042 size M", "created": 1795000000.0, "state": "delivered", "reason": "",
        "attempt": 1, "final": True,
        "history": [[1795000000.0, "queued", ""], [1795000012.5, "delivered", ""]]}]})
    job: str = Field(description="the dispatch id (its idempotency key)")
    origin: str = Field(alias="from")
    destination: str = Field(alias="to")
    priority: str
    item: str
    created: float = Field(description="unix s")
    state: str = Field(description="queued, routing, loading, in_flight, delivered, cancelled, "
                                   "failed, ... (docs/tube.md)")
    reason: str
    attempt: int
    final: bool
    history: list[list[Any]] = Field(description="[at (unix s), state, reason], newest last")


class JamClearedOut(BaseModel):
    target: str
    changes: list[dict[str, Any]] = Field(description="the alerts and dispatch updates it caused")


class LineOut(BaseModel):
    network: str
    estop: bool
    estop_devices: list[str] = Field(description="devices whose e-stop is pressed")
    reservations: dict[str, str] = Field(description="resource -> dispatch id")
    blocked: dict[str, str] = Field(description="resource -> the lost/failed dispatch or "
                                               "`fault: <why>` (a faulted diverter `div:<id>`)")
    stations: dict[str, dict[str, bool]] = Field(
        description="station -> `door_open`, `carrier_present`")
    segments: list[dict[str, Any]]
    diverters: list[str]
    devices: dict[str, str] = Field(description="station / diverter id -> device id")
    cursor: int = Field(description="events.id of the last tube event applied")
    live: list[DispatchOut]


def _404(job: str) -> HTTPException:
    return HTTPException(404, f"unknown dispatch {job!r} (GET /tube/dispatches lists them)")


def router(tube: TubeService) -> APIRouter:
    r = APIRouter(prefix="/tube", tags=["tube"])

    @r.post("/dispatches", status_code=201, response_model=DispatchOut,
            responses={200: {"model": DispatchOut,
                             "description": "the existing dispatch of this idempotency key"},
                       409: {"description": "the key was used for a different dispatch"},
                       422: {"description": "unknown station, no route, bad priority"}})
    async def create_dispatch(body: DispatchIn, response: Response) -> dict[str, Any]:
        """Queue a dispatch. Its state changes appear on the stream as `tube` items
        (`dispatch.queued` ... `dispatch.delivered`). Example: `{"from": "stockroom", "to":
        "fitting-rooms", "priority": "customer", "item": "SKU-1 M", "idempotency_key": "k-1"}`."""
        try:
            rec, created = await tube.dispatch(origin=body.origin, destination=body.destination,
                                                  priority=body.priority, item=body.item,
                                                  key=body.idempotency_key)
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except InvalidJob as exc:
            raise HTTPException(422, str(exc)) from None
        response.status_code = 201 if created else 200
        response.headers["Location"] = f"/tube/dispatches/{rec['job']}"
        return rec

    @r.get("/dispatches", response_model=list[DispatchOut])
    async def list_dispatches(state: str | None = None) -> list[dict[str, Any]]:
        """Live dispatches and the last 1000 finished (least recently updated first),
        optionally in one `state`; older ones: GET /tube/dispatches/{job}."""
        return tube.jobs(state)

    @r.get("/dispatches/{job}", response_model=DispatchOut)
    async def get_dispatch(job: str) -> dict[str, Any]:
        try:
            return await tube.get_job(job)
        except UnknownJob:
            raise _404(job) from None

    @r.delete("/dispatches/{job}", response_model=DispatchOut,
              responses={409: {"description": "the carrier is already in the line: staff recover "
                                              "it, then POST /tube/jams/{job}/clear?resend=false"}})
    async def cancel_dispatch(job: str) -> dict[str, Any]:
        """Cancel a dispatch that is not in the tube yet (queued or routing)."""
        try:
            return await tube.cancel(job)
        except UnknownJob:
            raise _404(job) from None
        except InvalidCommand as exc:
            raise HTTPException(409, str(exc)) from None

    @r.post("/jams/{target}/clear", response_model=JamClearedOut,
            responses={409: {"description": "nothing to clear there"}})
    async def clear_jam(target: str, resend: bool = True) -> dict[str, Any]:
        """Staff have found the carrier (of a dispatch, or in a blocked segment) and taken it
        back to its sender, or freed a stuck diverter: free the line. The dispatch is sent
        once more (`resend=true`, its last attempt) or cancelled (`resend=false`)."""
        try:
            return {"target": target, "changes": await tube.clear_jam(target, resend)}
        except InvalidCommand as exc:
            raise HTTPException(409, str(exc)) from None

    @r.get("/line", response_model=LineOut)
    async def line() -> dict[str, Any]:
        """Reservations (resource -> dispatch), blocked resources, station doors and bins,
        e-stop, live dispatches."""
        return tube.view()

    return r
