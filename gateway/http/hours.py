"""`GET /events/hours`: device events counted per UTC hour, device and type (issue 17), kept
`[retention] event_hours_days` (two years) where the raw events (`GET /events`) are kept
`events_days` (30). Scope `read` (auth.POLICY); counts only, nothing secret.

Bounded: a range of at most `MAX_RANGE_DAYS`, pages of at most `MAX_LIMIT` rows with a cursor,
each filter an index search (store migration 21, tests/gateway/storage/test_query_plans.py);
the raw events not counted yet are read too, and when there are more than `MAX_LAG` of them (a
fold behind, e.g. the first minutes after an upgrade counts the kept events) the route answers
503 with Retry-After rather than scan them. Bad input is a 400 that says what to send.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gateway.devices import protocol
from gateway.storage.db import Database
from gateway.storage.store import HOUR_MS, Store

MAX_RANGE_DAYS = 366
MAX_LIMIT = 10_000
MAX_LAG = 200_000           # raw events not counted yet that one read may add itself
MAX_T = 2 ** 53             # unix ms (far beyond any real time; JSON-safe)


class EventHourOut(BaseModel):
    hour: int = Field(description="unix ms of the UTC hour's start")
    device: str
    type: str
    n: int = Field(description="events of this device and type in that hour")


class EventHoursOut(BaseModel):
    hours: list[EventHourOut] = Field(description="ordered by (hour, device, type)")
    next: str | None = Field(description="pass as `after` for the next page; null: the last page")


def encode_cursor(key: tuple[int, str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, str, str]:
    """The key a page ended at, or ValueError."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        hour, device, type_ = json.loads(raw)
        ok = isinstance(hour, int) and isinstance(device, str) and isinstance(type_, str)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
    if not ok:
        raise ValueError("not [hour, device, type]")
    return hour, device, type_


def _bad(what: str) -> HTTPException:
    return HTTPException(400, what)


def router(db: Database, clock: Callable[[], int]) -> APIRouter:
    r = APIRouter()

    @r.get("/events/hours", response_model=EventHoursOut,
           responses={400: {"description": "a bad range, device, cursor: the detail says what "
                                           "to send"},
                      503: {"description": "the hourly counts are catching up (Retry-After)"}})
    async def event_hours(
            device: str | None = Query(None, max_length=64, description="only this device"),
            type: str | None = Query(None, min_length=1, max_length=64,
                                     description="only this event type, e.g. `tag.placed`"),
            from_: int | None = Query(None, alias="from", ge=0, le=MAX_T,
                                      description="unix ms, a whole UTC hour (default: `to` "
                                                  "- 24 h)"),
            to: int | None = Query(None, ge=0, le=MAX_T,
                                   description="unix ms, a whole UTC hour, excluded (default: "
                                               "the next whole hour)"),
            after: str | None = Query(None, max_length=300,
                                      description="`next` of the previous page"),
            limit: int = Query(1000, ge=1, le=MAX_LIMIT,
                               description=f"rows per page, at most {MAX_LIMIT}")
            ) -> Any:
        """Device events counted per UTC hour, device and type: every event, also those past
        `[retention] events_days` (the counts are kept `event_hours_days`, two years by
        default). The hours whose start is in [`from`, `to`), at most 366 days; pages of
        `limit` rows in (hour, device, type) order, `next` for the following page."""
        end = to if to is not None else (clock() // HOUR_MS + 1) * HOUR_MS
        start = from_ if from_ is not None else end - 24 * HOUR_MS
        for name, v in (("from", start), ("to", end)):
            if v % HOUR_MS:
                raise _bad(f"{name} must be a whole UTC hour in unix ms (a multiple of "
                           f"{HOUR_MS}), got {v}: e.g. {v // HOUR_MS * HOUR_MS}")
        if start >= end:
            raise _bad(f"from ({start}) must be before to ({end})")
        if end - start > MAX_RANGE_DAYS * 24 * HOUR_MS:
            raise _bad(f"the range is {(end - start) / (24 * HOUR_MS):.0f} days; at most "
                       f"{MAX_RANGE_DAYS} a request: ask for the rest in another one")
        if device is not None and not protocol.is_device_id(device):
            raise _bad(f"device {device[:64]!r} is not a device id (GET /devices lists them)")
        key = None
        if after is not None:
            try:
                key = decode_cursor(after)
            except ValueError:
                raise _bad("after must be the `next` of a previous page, as it was given") from None
        lag = await db.read(Store.hours_lag)
        if lag > MAX_LAG:
            return JSONResponse(status_code=503, headers={"Retry-After": "60"}, content={
                "detail": f"the hourly counts are catching up ({lag} events still to count, "
                          "e.g. after an upgrade); retry in a minute"})
        rows, nxt = await db.read(lambda s: s.event_hours_page(
            since=start, until=end, device=device, type=type, after=key, limit=limit))
        return {"hours": [{"hour": h, "device": d, "type": t, "n": n} for h, d, t, n in rows],
                "next": encode_cursor(nxt) if nxt is not None else None}

    return r
