"""The endless aisle's routes (docs/endless-aisle.md). Refusals are `{"detail", "reason"}`:
404 unknown product/request, 409 idempotency conflict or no locker free, 422 a bad or missing
contact, 503 stock API down (409 no-stock: this store has no stock source)."""
from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.aisle.core import AisleError
from gateway.aisle.service import AisleService

_STATUS = {"unknown-product": 404, "unknown-request": 404, "idempotency-conflict": 409,
           "no-locker": 409, "bad-contact": 422, "contact-needed": 422, "no-stock": 409,
           "stock-down": 503}
KEY_PATTERN = r"^[A-Za-z0-9._:@/+=-]+$"
RID_RE = re.compile(r"[0-9a-f]{16}\Z")


class AisleContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Literal["sms", "email"]
    to: str = Field(min_length=3, max_length=254, description="E.164 number or e-mail address")


class AisleRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "idempotency_key": "kiosk-1:7f3a", "origin": "pad-1", "gtin": "09506000134376",
        "contact": {"channel": "sms", "to": "+33612345678"}, "lang": "fr"}]})
    idempotency_key: str = Field(min_length=1, max_length=128, pattern=KEY_PATTERN,
                                 description="one per customer request: asking again gives the same answer")
    origin: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                        description="the screen's device id (its nearest tube station)")
    origin_kind: Literal["sample-pad", "fitting-room"] | None = Field(
        default=None, description="`fitting-room`: a mirror (the fitting rooms' tube station)")
    gtin: str = Field(pattern=r"^[0-9]{14}$", description="the wanted product (colour and size)")
    contact: AisleContactIn | None = Field(default=None, description="needed when it comes from another store")
    lang: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$",
                             description="the message's language (en, fr; another falls back to en)")


class AisleTubeOut(BaseModel):
    state: str = Field(description="the tube dispatch's state (docs/tube.md)")


class AisleLockerOut(BaseModel):
    state: str = Field(description="the locker order's state (docs/lockers.md)")
    compartment: int | None
    pickup_until: float | None = Field(description="unix s")


class AisleMessageOut(BaseModel):
    state: Literal["pending", "delivered", "failed"]
    attempts: int


class AisleRequestOut(BaseModel):
    """A request as the customer sees it: never a pickup code; the contact masked."""
    id: str
    route: Literal["floor", "tube", "staff", "order"] = Field(
        description="floor: on the sales floor; tube: from the stockroom by tube; staff: from the "
                    "stockroom by an associate; order: from another store, into a locker here")
    origin: str
    gtin: str
    name: str
    size: str | None
    colour: str | None
    station: str | None = Field(description="tube: the station it comes to")
    bank: str | None = Field(description="order: the locker bank reserved")
    order: str | None = Field(description="order: the locker order id")
    contact: str | None = Field(description="masked, e.g. +33•••••••78")
    created: int = Field(description="unix ms")
    tube: AisleTubeOut | None
    locker: AisleLockerOut | None
    message: AisleMessageOut | None


class AisleOrderOut(BaseModel):
    seq: int = Field(description="pass the last one as `after` for the next page")
    id: str = Field(description="the aisle request")
    order_id: str = Field(description="the locker order id (POST /lockers/{bank}/orders/{order}/load)")
    bank: str
    gtin: str
    name: str
    size: str | None
    colour: str | None
    source: str | None = Field(description="where the stock source saw it: `store:<id>` or null")
    created: int


class AisleDeliveryOut(BaseModel):
    attempt: int
    t: int = Field(description="unix ms")
    ok: bool
    error: str | None


class AisleOutboxMessageOut(BaseModel):
    id: int
    request: str
    channel: Literal["sms", "email"]
    masked: str = Field(description="the recipient, masked (the number or address is gone once delivered)")
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_at: int
    created: int
    delivered_at: int | None
    last_error: str | None
    deliveries: list[AisleDeliveryOut] = Field(description="the delivery log: one row per attempt")


class AisleErrorOut(BaseModel):
    detail: str
    reason: str


def _refused(exc: AisleError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail, "reason": exc.reason},
                        status_code=_STATUS.get(exc.reason, 409))


def router(aisle: AisleService) -> APIRouter:
    r = APIRouter(tags=["endless aisle"])
    errors: dict[int | str, dict[str, Any]] = {s: {"model": AisleErrorOut} for s in (404, 409, 422, 503)}

    @r.post("/aisle/requests", status_code=201, response_model=AisleRequestOut,
            responses={200: {"model": AisleRequestOut, "description": "the same request again"}, **errors})
    async def aisle_request(body: AisleRequestIn, request: Request) -> Any:
        """A customer asks for a product that is not on the floor: by tube from the stockroom to
        the nearest station, else an order and a locker here (the pickup code by SMS/e-mail).
        Idempotent by `idempotency_key` (per token). Rate-limited per token (429, Retry-After)."""
        principal = getattr(request.state, "principal", None)
        who = getattr(principal, "id", "") or "anonymous"
        try:
            view, created = await aisle.ask(who, body.idempotency_key, body.model_dump(mode="json"))
        except AisleError as exc:
            return _refused(exc)
        return JSONResponse(view, status_code=201 if created else 200)

    @r.get("/aisle/requests/{rid}", response_model=AisleRequestOut, responses={404: {"model": AisleErrorOut}})
    async def aisle_request_view(rid: str) -> Any:
        """Where a request is: the tube, the locker, the message (never the code)."""
        if not RID_RE.match(rid):
            return _refused(AisleError("unknown-request", f"no request {rid[:40]!r}: ids are 16 hex digits"))
        try:
            return await aisle.view(rid)
        except AisleError as exc:
            return _refused(exc)

    @r.get("/aisle/orders", response_model=list[AisleOrderOut])
    async def aisle_orders(after: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000)
                           ) -> list[dict[str, Any]]:
        """The order system polls the aisle's orders (or subscribes to the webhook `aisle.ordered`)."""
        return await aisle.orders(after, limit)

    @r.get("/aisle/outbox", response_model=list[AisleOutboxMessageOut])
    async def aisle_outbox(after: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000)
                           ) -> list[dict[str, Any]]:
        """Staff: the pickup-code messages and their delivery log (never a code; recipients masked)."""
        return await aisle.outbox(after, limit)

    return r
