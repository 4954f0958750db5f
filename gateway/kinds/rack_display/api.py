"""HTTP API of the rack displays (docs/api.md, docs/rack-display.md): the online likes feed and
the racks."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from gateway.kinds.rack_display.core import MAX_EVENTS, MAX_PRODUCTS, LikeError
from gateway.kinds.rack_display.service import RackDisplayService


class LikeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128, description="the feed's event id: counted once")
    product: str = Field(min_length=1, max_length=64)
    delta: int = Field(default=1, description="1 a like, -1 an unlike")


class LikesIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "events": [{"id": "evt-9f2c", "product": "P-1001"}, {"id": "evt-9f2d", "product": "P-1002",
                                                             "delta": -1}]}]})
    events: list[LikeIn] = Field(min_length=1, max_length=MAX_EVENTS)


class LikesOut(BaseModel):
    accepted: int = Field(description="new events, counted")
    duplicates: int = Field(description="event ids already counted (a retry): not counted again")


class RackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="LIKES", max_length=16, description="top line of the display")
    products: list[str] = Field(max_length=MAX_PRODUCTS)


class RackOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "device": "rack-1", "label": "DENIM", "products": ["P-1001", "P-1002"], "likes": 42,
        "rev": 7, "shown_rev": 7, "updated": 1795426642001}]})
    device: str
    label: str
    products: list[str]
    likes: int = Field(description="what the display should show")
    rev: int = Field(description="revision of that state")
    shown_rev: int | None = Field(description="the rev the display confirmed since it last "
                                              "connected (null: it shows its last known value)")
    updated: int


def router(racks: RackDisplayService) -> APIRouter:
    r = APIRouter()

    @r.post("/likes", response_model=LikesOut)
    async def post_likes(body: LikesIn) -> dict[str, Any]:
        """The online shop's likes: idempotent by event id (a retried batch counts once)."""
        try:
            return await racks.post_likes([e.model_dump() for e in body.events])
        except LikeError as exc:
            raise HTTPException(422, str(exc)) from None

    @r.get("/racks", response_model=list[RackOut])
    async def list_racks() -> list[dict[str, Any]]:
        return racks.list()

    @r.get("/racks/{device}", response_model=RackOut)
    async def get_rack(device: str) -> dict[str, Any]:
        v = racks.view(device)
        if v is None:
            raise HTTPException(404, f"no rack for display {device!r} (PUT /racks/{{device}} maps one)")
        return v

    @r.put("/racks/{device}", response_model=RackOut)
    async def put_rack(device: str, body: RackIn) -> dict[str, Any]:
        try:
            return await racks.put_rack(device, body.label, body.products)
        except LikeError as exc:
            raise HTTPException(422, str(exc)) from None

    return r
