"""HTTP API of the fitting rooms (docs/fitting-rooms.md, "API") and the mirror page.

Added to the gateway's FastAPI app by `gateway.api.create_app` (`add_fitting_routes`).
Refusals are `{"detail": ..., "reason": ...}` with 404 (unknown room/request), 409 (no
session, out of stock, a transition that is not allowed) or 422 (bad GTIN).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .core.fitting import FittingError
from .protocol import is_device_id

if TYPE_CHECKING:
    from .app import Gateway

MIRROR_HTML = Path(__file__).parent / "web" / "mirror.html"
_STATUS = {"unknown-room": 404, "unknown-request": 404, "bad-gtin": 422, "bad-state": 422,
           "unknown-product": 404}


class RoomRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(pattern="^(size|call)$", description="`size`: another size/colour; "
                                                           "`call`: call an associate")
    gtin: str | None = Field(default=None, description="size: the GTIN wanted")
    instead_of: str | None = Field(default=None, description="size: the GTIN tried on")


class RequestUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: str = Field(description="acknowledged | on_the_way | done | cancelled")
    by: str | None = Field(default=None, max_length=64, description="staff member (optional)")


class PurchaseLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gtin: str
    qty: int = Field(default=1, ge=1, le=1000)


class PurchaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    receipt: str = Field(min_length=1, max_length=64, description="POS receipt id (a retry "
                                                                  "with the same id is ignored)")
    at: int | None = Field(default=None, description="unix ms (default: now)")
    items: list[PurchaseLine] = Field(min_length=1)


class FootfallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: int | None = Field(default=None, description="unix ms (default: now)")
    entries: int = Field(ge=0, le=100_000, description="people who came in since the last report")


def _refused(exc: FittingError) -> JSONResponse:
    return JSONResponse(status_code=_STATUS.get(exc.reason, 409),
                        content={"detail": str(exc), "reason": exc.reason})


def add_fitting_routes(app: FastAPI, gw: Gateway) -> None:
    fr = gw.fitting

    @app.get("/fitting/rooms")
    async def fitting_rooms() -> list[dict[str, Any]]:
        return fr.rooms()

    @app.get("/fitting/rooms/{room}")
    async def fitting_room(room: str) -> JSONResponse:
        """What the mirror shows: garments with product, colour, size, price and availability
        of the other sizes/colours here (floor/stockroom) and in nearby stores; requests."""
        try:
            return JSONResponse(await fr.view(room))
        except FittingError as exc:
            return _refused(exc)

    @app.post("/fitting/rooms/{room}/requests", status_code=201)
    async def fitting_request(room: str, body: RoomRequestIn) -> JSONResponse:
        """From the mirror: `{"kind": "size", "gtin": ...}` asks staff for another size (or
        the tube, when it exists); `{"kind": "call"}` calls an associate."""
        try:
            if body.kind == "call":
                q = await fr.call(room)
            else:
                if not body.gtin:
                    raise FittingError("bad-gtin", "a size request needs the `gtin` wanted")
                q = await fr.ask_size(room, body.gtin, body.instead_of)
        except FittingError as exc:
            return _refused(exc)
        return JSONResponse(status_code=201, content=q)

    @app.get("/fitting/requests")
    async def fitting_requests(state: str | None = None, room: str | None = None
                               ) -> list[dict[str, Any]]:
        """Staff: requests (`state=open` for the to-do list)."""
        return fr.requests(state, room)

    @app.post("/fitting/requests/{rid}")
    async def fitting_request_update(rid: str, body: RequestUpdateIn) -> JSONResponse:
        """Staff: acknowledge (a call's LED goes off), on the way, done, cancelled."""
        try:
            return JSONResponse(await fr.update_request(rid, body.state, body.by))
        except FittingError as exc:
            return _refused(exc)

    @app.post("/fitting/purchases", status_code=201)
    async def fitting_purchase(body: PurchaseIn) -> JSONResponse:
        """POS: a receipt's lines; each unit converts a recent try-on of that GTIN."""
        try:
            p = await fr.purchase(body.receipt, body.at, [(i.gtin, i.qty) for i in body.items])
        except FittingError as exc:
            return _refused(exc)
        return JSONResponse(status_code=201, content=p)

    @app.post("/fitting/footfall", status_code=204)
    async def fitting_footfall(body: FootfallIn) -> None:
        """Door counter: people who came into the store."""
        await fr.door_count(body.at, body.entries)

    @app.get("/fitting/analytics")
    async def fitting_analytics(start: int | None = Query(None, description="unix ms"),
                                end: int | None = Query(None, description="unix ms")
                                ) -> dict[str, Any]:
        """Try-ons per product, try-on → purchase conversion, room occupancy, footfall vs
        purchases."""
        return fr.analytics(start, end)

    @app.get("/mirror/{room}", response_class=HTMLResponse)
    async def mirror(room: str) -> HTMLResponse:
        """The mirror screen of one room (static HTML + JS; live through /stream)."""
        if not is_device_id(room):
            return HTMLResponse("unknown room", status_code=404)
        return HTMLResponse(MIRROR_HTML.read_text("utf-8").replace("{{ROOM}}", room))
