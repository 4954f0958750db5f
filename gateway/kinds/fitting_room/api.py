"""HTTP API of the fitting rooms (docs/fitting-rooms.md, "API") and the mirror page.

Added to the gateway's FastAPI app by `gateway.http.api.create_app` (`router`). The POS and
door-count routes (`POST /fitting/purchases`, `POST /fitting/footfall`) are served by the
analytics tier (gateway/analytics/api.py), which records them store-wide and hands them on to
`FittingService.purchases` / `door_count`.
Refusals are `{"detail": ..., "reason": ...}` with 404 (unknown room/request), 409 (no
session, out of stock, a transition that is not allowed) or 422 (bad GTIN).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.devices.protocol import is_device_id
from gateway.http.screen_texts import ScreenTexts, inject
from gateway.kinds.fitting_room.core import REQUEST_STATES, FittingError
from gateway.kinds.fitting_room.service import FittingService

MIRROR_HTML = Path(__file__).with_name("mirror.html")
MAX_REQUESTS_PAGE = 1000   # GET /fitting/requests: requests per page
RequestState = Literal["open", "acknowledged", "on_the_way", "done", "cancelled"]
assert get_args(RequestState) == REQUEST_STATES, "RequestState must list core.REQUEST_STATES"
_STATE_QUERY = Query(None, description="only requests in this state (`open` for the to-do list)")
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


# --- response models (fields a record does not have stay absent: the routes serialize with
# response_model_exclude_unset, so a call's request shows no `gtin` and a size request no
# `garments`, exactly as before the models) --------------------------------------------------

class RoomSummaryOut(BaseModel):
    room: str
    occupied: bool
    session: str | None = Field(description="the current session id, null when nobody is in")
    garments: int = Field(description="garments in the room now")


class GarmentOut(BaseModel):
    key: str
    uid: str | None = None
    gtin: str | None = None
    serial: str | None = None
    since: int | None = Field(default=None, description="unix ms")
    product: dict[str, Any] | None = Field(description="from the stock source (null: unknown)")
    variants: list[dict[str, Any]] = Field(description="other sizes/colours with availability "
                                                       "here and in nearby stores (`nearby_source`"
                                                       ": `head-office`, or `unavailable` with "
                                                       "`nearby_error`: docs/chain.md)")
    stock_error: str | None = Field(description="why product/variants are missing")


class FittingRequestOut(BaseModel):
    """A request (size, call, or the back-and-forth `advice`). `extra="allow"`: a request
    carries the fields of its kind (`FittingCore._request(**data)`), so a field a new kind adds
    reaches the API even before it is declared here."""
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "id": "r-7", "room": "room-1", "kind": "size", "state": "on_the_way",
        "created": 1795000000000, "updated": 1795000030000, "reason": "tube-in_flight",
        "via": "tube", "history": [["open", 1795000000000], ["on_the_way", 1795000030000]],
        "session": "s-3", "gtin": "04012345678901", "instead_of": "04012345678895",
        "where": "stockroom", "dispatched": 1795000001000,
        "dispatch": {"via": "tube", "job": "fr-r-7", "state": "in_flight"}}]})
    id: str
    room: str
    kind: str = Field(description="`size`, `call` or `advice` (back and forth: the gateway "
                                  "suggests staff help)")
    state: str = Field(description="open, acknowledged, on_the_way, done, cancelled")
    created: int = Field(description="unix ms")
    updated: int = Field(description="unix ms")
    reason: str | None
    via: str = Field(description="who fetches it: `staff` or a dispatcher (`tube`)")
    history: list[list[Any]] = Field(description="[state, at (unix ms)], oldest first")
    seq: int | None = Field(default=None, description="`GET /fitting/requests` only: its place "
                                                      "in creation order, the `after` of the "
                                                      "next page")
    session: str | None = None
    source: str | None = Field(default=None, description="call: `button` or `mirror`")
    garments: list[dict[str, Any]] | None = Field(default=None, description="call, advice: "
                                                                            "what is in the room")
    gtin: str | None = Field(default=None, description="size: the GTIN wanted")
    instead_of: str | None = Field(default=None, description="size: the GTIN tried on")
    where: str | None = Field(default=None, description="size: where to fetch it from")
    by: str | None = Field(default=None, description="staff member of the last update")
    dispatch: dict[str, Any] | None = Field(default=None, description="the dispatcher's view "
                                                                      "(tube carrier)")
    dispatched: int | None = Field(default=None, description="when a dispatcher took it (ms)")
    fallback: str | None = Field(default=None, description="the dispatcher that gave it back "
                                                           "to staff")
    swaps: int | None = Field(default=None, description="advice: garment swaps in the window")
    window_ms: int | None = Field(default=None, description="advice: the swap window")


class RoomViewOut(BaseModel):
    room: str
    occupied: bool
    session: str | None
    garments: list[GarmentOut]
    requests: list[FittingRequestOut] = Field(description="this session's requests")


class ProductFiguresOut(BaseModel):
    gtin: str
    try_ons: int
    converted: int
    conversion: float


class RoomFiguresOut(BaseModel):
    room: str
    sessions: int
    occupied_ms: int
    avg_session_ms: int
    occupancy: float | None = Field(default=None, description="only with both start and end")


class AnalyticsOut(BaseModel):
    sessions: int
    sessions_converted: int
    session_conversion: float | None
    try_ons: int
    try_ons_converted: int
    try_on_conversion: float | None
    products: list[ProductFiguresOut]
    rooms: list[RoomFiguresOut]
    purchases: int
    units: int
    units_attributed: int
    footfall: int
    footfall_conversion: float | None


def _refused(exc: FittingError) -> JSONResponse:
    return JSONResponse(status_code=_STATUS.get(exc.reason, 409),
                        content={"detail": str(exc), "reason": exc.reason})


def router(fr: FittingService) -> APIRouter:
    r = APIRouter()

    @r.get("/fitting/rooms", response_model=list[RoomSummaryOut])
    async def fitting_rooms() -> list[dict[str, Any]]:
        return fr.rooms()

    @r.get("/fitting/rooms/{room}", response_model=RoomViewOut, response_model_exclude_unset=True)
    async def fitting_room(room: str) -> Any:
        """What the mirror shows: garments with product, colour, size, price and availability
        of the other sizes/colours here (floor/stockroom) and in nearby stores; requests."""
        try:
            return await fr.view(room)
        except FittingError as exc:
            return _refused(exc)

    @r.post("/fitting/rooms/{room}/requests", status_code=201,
              response_model=FittingRequestOut, response_model_exclude_unset=True)
    async def fitting_request(room: str, body: RoomRequestIn) -> Any:
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
        return q

    @r.get("/fitting/requests", response_model=list[FittingRequestOut], response_model_exclude_unset=True)
    async def fitting_requests(
            state: RequestState | None = _STATE_QUERY,
            room: str | None = Query(None, max_length=64, description="only this room's"),
            after: int = Query(0, ge=0, le=2**62, description="the `seq` of the last request "
                                                               "of the previous page"),
            limit: int = Query(100, ge=1, le=MAX_REQUESTS_PAGE,
                               description=f"page size, at most {MAX_REQUESTS_PAGE}")
            ) -> list[dict[str, Any]]:
        """Staff: requests in the order they were made, a page at a time: pass the last one's
        `seq` as `after` for the next page (an empty page: no more). A `limit` above
        1000 or an unknown `state` is refused (422)."""
        return await fr.requests_page(state, room, after, limit)

    @r.post("/fitting/requests/{rid}", response_model=FittingRequestOut, response_model_exclude_unset=True)
    async def fitting_request_update(rid: str, body: RequestUpdateIn) -> Any:
        """Staff: acknowledge (a call's LED goes off), on the way, done, cancelled."""
        try:
            return await fr.update_request(rid, body.state, body.by)
        except FittingError as exc:
            return _refused(exc)

    @r.get("/fitting/analytics", response_model=AnalyticsOut, response_model_exclude_unset=True)
    async def fitting_analytics(start: int | None = Query(None, description="unix ms"),
                                end: int | None = Query(None, description="unix ms")
                                ) -> dict[str, Any]:
        """Try-ons per product, try-on → purchase conversion, room occupancy, footfall vs
        purchases."""
        return await fr.analytics(start, end)

    @r.get("/mirror/{room}", response_class=HTMLResponse)
    async def mirror(room: str, lang: str | None = Query(None, max_length=16, description=
                                                         "language of the page (default: "
                                                         "[screens] language)")) -> HTMLResponse:
        """The mirror screen of one room (static HTML + JS; live through /stream), with the
        store's words for when something does not work ([screens])."""
        if not is_device_id(room):
            return HTMLResponse("unknown room", status_code=404)
        texts = (fr.texts or ScreenTexts()).for_page(room, lang)
        return HTMLResponse(inject(MIRROR_HTML.read_text("utf-8").replace("{{ROOM}}", room),
                                   room, texts))

    return r
