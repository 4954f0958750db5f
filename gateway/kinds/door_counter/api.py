"""HTTP API of the door counters (docs/door-counter.md, docs/api.md): read only."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.kinds.door_counter.service import DoorCounterService, RangeError


class DoorCounterOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "device": "door-1", "online": True, "last_seen": 1795426642001, "occupancy": 17,
        "out_of_service": False, "stuck_beams": [], "last_minute": 1795426620000,
        "updated": 1795426680012}]})
    device: str
    online: bool
    last_seen: int | None = Field(description="unix ms the gateway last heard from it")
    occupancy: int = Field(description="the device's estimate: entries - exits since its last "
                                       "reset, never below 0")
    out_of_service: bool = Field(description="a beam is stuck: nothing is counted until it clears")
    stuck_beams: list[str] = Field(description='"A" (street side), "B" (store side)')
    last_minute: int | None = Field(description="unix ms of the latest minute with counts")
    updated: int | None = Field(description="unix ms of the event the view comes from")


class MinuteOut(BaseModel):
    minute: int = Field(description="unix ms of the minute's start")
    entries: int
    exits: int
    oos_ms: int = Field(description="ms of the minute a beam was stuck (counts incomplete)")
    occupancy: int = Field(description="the device's estimate at the end of the minute")


class CountsOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    device: str
    from_: int = Field(alias="from", description="unix ms (inclusive)")
    to: int = Field(description="unix ms (exclusive)")
    minutes: list[MinuteOut] = Field(description="minutes with counts or time out of service, in order")
    entries: int
    exits: int
    oos_ms: int


def router(doors: DoorCounterService) -> APIRouter:
    r = APIRouter()

    @r.get("/door-counters", response_model=list[DoorCounterOut])
    async def list_door_counters() -> list[dict[str, Any]]:
        """Every door counter: occupancy estimate, out of service (a stuck beam)."""
        return await doors.counters()

    @r.get("/door-counters/{device}/counts", response_model=CountsOut, response_model_by_alias=True)
    async def door_counts(device: str,
                          from_: int | None = Query(None, alias="from", ge=0,
                                                    description="unix ms (default: `to` - 24 h)"),
                          to: int | None = Query(None, ge=0, description="unix ms (default: now)"),
                          ) -> dict[str, Any]:
        """Per-minute entries and exits of one door counter in [from, to), at most 31 days."""
        try:
            out = await doors.counts(device, from_, to)
        except RangeError as exc:
            raise HTTPException(422, str(exc)) from None
        if out is None:
            raise HTTPException(404, f"no door counter {device!r} (GET /door-counters lists them)")
        return out

    return r
