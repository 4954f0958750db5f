"""HTTP routes of the analytics tier (docs/analytics.md): the store-wide purchase ledger
(`POST /purchases`, `POST /purchases/import`), the fitting rooms' POS and door-count routes
(kept where they were, same operations, now recorded store-wide too), the figures
(`GET /analytics/...`, JSON or `format=csv`), their charts (SVG) and the analytics page.

Scopes: gateway.analytics.AUTH (POST /purchases...: operations; GET /analytics...: read); the
two /fitting routes keep their rows in the fitting rooms' kind. Refusals are
`{"detail", "reason"}` (and `line` for a CSV) with 422; a range out of bounds is a 422 that
says which bound and what to send.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.analytics import charts, queries
from gateway.analytics.ledger import LedgerError
from gateway.analytics.rollup import DAY, HOUR
from gateway.analytics.service import AnalyticsService

PAGE = Path(__file__).resolve().parents[1] / "http" / "web" / "analytics.html"
MAX_T = 4_102_444_800_000           # 2100-01-01: a bound, so a typo is a 422, not a scan
MAX_SPAN_DAYS = 400
MAX_HOURLY_DAYS = 31                 # funnel buckets per hour: at most 744


# --- request models (moved here from the fitting rooms' api with their routes: same names,
# same schemas in the OpenAPI spec) ------------------------------------------------------------

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


class PurchaseLineOut(BaseModel):
    gtin: str
    qty: int
    sessions: list[str] = Field(description="the try-on sessions this line converted")


class PurchaseOut(BaseModel):
    receipt: str
    at: int = Field(description="unix ms")
    lines: list[PurchaseLineOut]


class ImportOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "receipts": 412, "lines": 655, "units": 731, "imported": 410,
        "already_known": ["R-20261123-0007", "R-20261123-0008"]}]})
    receipts: int = Field(description="receipts in the file")
    lines: int
    units: int
    imported: int = Field(description="receipts new to the ledger")
    already_known: list[str] = Field(description="receipt ids the ledger had (left as they were)")


# --- figures -------------------------------------------------------------------------------

class BucketOut(BaseModel):
    t: int = Field(description="bucket start, unix ms")
    entries: int
    placements: int = Field(description="sample-pad placements")
    pad_dwell_ms: int = Field(description="time samples rested on pads (lifts in this bucket)")
    sessions: int = Field(description="fitting-room sessions that started in this bucket")
    try_ons: int
    purchases: int = Field(description="receipts")
    units: int


class StepOut(BaseModel):
    step: str
    count: int
    of_entries: float | None


class FunnelTotalsOut(BaseModel):
    entries: int
    placements: int
    pad_lifts: int
    pad_dwell_ms: int
    sessions: int
    try_ons: int
    purchases: int
    units: int


class FunnelOut(BaseModel):
    start: int
    end: int
    bucket: Literal["hour", "day"]
    buckets: list[BucketOut]
    steps: list[StepOut] = Field(description="entries → pad placements → fitting-room sessions "
                                             "→ purchases, each with its share of entries")
    totals: FunnelTotalsOut
    avg_pad_dwell_ms: int | None
    placements_per_entry: float | None
    sessions_per_entry: float | None
    purchases_per_entry: float | None = Field(description="the store's conversion")
    purchases_per_session: float | None


class ProductOut(BaseModel):
    product: str = Field(description="GTIN-14 (try-ons, purchases; a pad's tag with a GTIN) or "
                                     "a sample id (a pad's tag): name samples by GTIN to join them")
    placed: int
    pad_dwell_ms: int
    tried_on: int = Field(description="fitting-room sessions that tried it on")
    bought: int = Field(description="units sold")
    try_on_conversion: float | None = Field(description="bought / tried_on")
    pad_conversion: float | None = Field(description="bought / placed")


class ProductsOut(BaseModel):
    start: int
    end: int
    sort: str
    count: int = Field(description="products in the range (the list stops at `limit`)")
    products: list[ProductOut]


class DeviceFiguresOut(BaseModel):
    device: str
    kind: str
    online_min: float
    out_of_service_min: float = Field(description="minutes with a critical alert open on it")
    available_min: float = Field(description="online and in service")
    availability: float | None = Field(description="available share of the range up to now")


class DevicesOut(BaseModel):
    start: int
    end: int
    minutes: float = Field(description="minutes of the range up to now (availability's base)")
    devices: list[DeviceFiguresOut]


class TubeOut(BaseModel):
    start: int
    end: int
    deliveries: int
    p50_ms: int | None = Field(description="request to delivery (carrier taken from the bin)")
    p90_ms: int | None
    p99_ms: int | None
    max_ms: int | None


class LockersOut(BaseModel):
    start: int
    end: int
    loaded: int
    collected: int
    expired: int
    expiry_rate: float | None = Field(description="expired / (expired + collected before "
                                                  "expiry)")
    dwell_avg_ms: int | None = Field(description="loaded to collected")
    dwell_p50_ms: int | None
    dwell_p90_ms: int | None


CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}},
             "description": "the figure (JSON), or its CSV export with `format=csv`"},
       422: {"description": "a bound out of range (the detail says which)"}}


def _refused(exc: LedgerError) -> JSONResponse:
    content: dict[str, Any] = {"detail": str(exc), "reason": exc.reason}
    if exc.line is not None:
        content["line"] = exc.line
    return JSONResponse(status_code=422, content=content)


def hour_range(start: int | None, end: int | None, now: int, max_days: int = MAX_SPAN_DAYS
           ) -> tuple[int, int]:
    """Whole hours, start < end, at most `max_days`; default: the 24 hours up to the next
    whole hour."""
    if end is None:
        end = (now // HOUR + 1) * HOUR
    if start is None:
        start = end - DAY
    for name, v in (("start", start), ("end", end)):
        if v % HOUR:
            raise HTTPException(422, f"{name} must be a whole hour (unix ms, a multiple of "
                                     f"3600000): got {v}, e.g. {v - v % HOUR}")
    if start >= end:
        raise HTTPException(422, f"start ({start}) must be before end ({end})")
    if end - start > max_days * DAY:
        raise HTTPException(422, f"the range is {(end - start) / DAY:g} days: at most {max_days} "
                                 "(ask for several ranges)")
    return start, end


def _answer(figure: str, data: dict[str, Any], fmt: str) -> Any:
    if fmt == "csv":
        return Response(queries.export(figure, data), media_type="text/csv",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{figure}-{data["start"]}.csv"'})
    return data


Start = Query(None, ge=0, le=MAX_T, description="unix ms, a whole hour (default: end - 24 h)")
End = Query(None, ge=0, le=MAX_T, description="unix ms, a whole hour (default: the next whole hour)")
Format = Query("json", description="`csv`: the figure as CSV (every figure has one)")


def router(an: AnalyticsService) -> APIRouter:
    r = APIRouter()

    async def _purchase(body: PurchaseIn, source: str) -> Any:
        try:
            return await an.purchase(body.receipt, body.at, [(i.gtin, i.qty) for i in body.items],
                                     source)
        except LedgerError as exc:
            return _refused(exc)

    @r.post("/purchases", status_code=201, response_model=PurchaseOut, tags=["analytics"])
    async def purchase(body: PurchaseIn) -> Any:
        """POS: one receipt, store-wide (idempotent by `receipt`: a retry returns the recorded
        one). Each unit also converts a recent try-on of that GTIN (fitting rooms)."""
        return await _purchase(body, "api")

    @r.post("/purchases/import", response_model=ImportOut, tags=["analytics"],
            openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {
                "schema": {"type": "string"},
                "example": "receipt,at,gtin,qty\nR-1,2026-11-23T09:12:00+01:00,09506000134352,1\n"}}}},
            responses={413: {"description": "over 2 MiB: split the file"},
                       415: {"description": "not text/csv"},
                       422: {"description": "a malformed CSV: nothing imported; `line` and "
                                            "`detail` say where and why"}})
    async def purchases_import(request: Request) -> Any:
        """A day's receipts as CSV (`Content-Type: text/csv`, UTF-8, at most 2 MiB and 50,000
        lines): a header `receipt,at,gtin,qty` (any order, `qty` optional, other columns
        ignored), then one line per receipt line; `at` in unix ms or ISO 8601 with an offset.
        All or nothing: a bad line imports nothing. Receipts already known are left as they
        were (listed in `already_known`)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("text/csv", "application/csv"):
            raise HTTPException(415, f"send the receipts as Content-Type: text/csv (got "
                                     f"{ctype or 'none'})")
        try:
            return await an.import_csv(await request.body())
        except LedgerError as exc:
            return _refused(exc)

    @r.post("/fitting/purchases", status_code=201, response_model=PurchaseOut)
    async def fitting_purchase(body: PurchaseIn) -> Any:
        """POS: a receipt's lines; each unit converts a recent try-on of that GTIN. The same as
        `POST /purchases` (kept for POS set up before it)."""
        return await _purchase(body, "fitting")

    @r.post("/fitting/footfall", status_code=204,
            responses={204: {"description": "counted (no body)"}})
    async def fitting_footfall(body: FootfallIn) -> None:
        """Door counter: people who came into the store (the funnel's entries)."""
        await an.footfall(body.at, body.entries)

    @r.get("/analytics/funnel", response_model=FunnelOut, responses=CSV, tags=["analytics"])
    async def analytics_funnel(start: int | None = Start, end: int | None = End,
                               bucket: Literal["hour", "day"] = Query(
                                   "hour", description=f"`hour` (ranges up to {MAX_HOURLY_DAYS} "
                                                       "days) or `day` (24 h from start)"),
                               format: Literal["json", "csv"] = Format,
                               rows: Literal["buckets", "steps"] = Query(
                                   "buckets", description="CSV: one row per bucket, or per "
                                                          "step of the funnel")) -> Any:
        """Entries → sample-pad placements (and dwell) → fitting-room sessions → purchases,
        per hour or day, with totals and each step's share of entries."""
        s, e = hour_range(start, end, an.clock(), MAX_HOURLY_DAYS if bucket == "hour" else MAX_SPAN_DAYS)
        data = await an.figure("funnel", s, e, bucket=bucket)
        return _answer("steps" if rows == "steps" else "funnel", data, format)

    @r.get("/analytics/products", response_model=ProductsOut, responses=CSV, tags=["analytics"])
    async def analytics_products(start: int | None = Start, end: int | None = End,
                                 sort: Literal["conversion", "bought", "tried_on", "placed"] =
                                 Query("conversion", description="`conversion`: try-on "
                                                                 "conversion, best first"),
                                 limit: int = Query(50, ge=1, le=1000),
                                 format: Literal["json", "csv"] = Format) -> Any:
        """Per product: placed on a pad, tried on, bought, and the conversions."""
        s, e = hour_range(start, end, an.clock())
        return _answer("products", await an.figure("products", s, e, sort=sort, limit=limit),
                       format)

    @r.get("/analytics/devices", response_model=DevicesOut, responses=CSV, tags=["analytics"])
    async def analytics_devices(start: int | None = Start, end: int | None = End,
                                format: Literal["json", "csv"] = Format) -> Any:
        """Per device: minutes online, out of service (a critical alert open on it) and
        available (online and in service)."""
        s, e = hour_range(start, end, an.clock())
        return _answer("devices", await an.figure("devices", s, e), format)

    @r.get("/analytics/tube", response_model=TubeOut, responses=CSV, tags=["analytics"])
    async def analytics_tube(start: int | None = Start, end: int | None = End,
                             format: Literal["json", "csv"] = Format) -> Any:
        """Tube: request-to-delivery percentiles of the deliveries in the range."""
        s, e = hour_range(start, end, an.clock())
        return _answer("tube", await an.figure("tube", s, e), format)

    @r.get("/analytics/lockers", response_model=LockersOut, responses=CSV, tags=["analytics"])
    async def analytics_lockers(start: int | None = Start, end: int | None = End,
                                format: Literal["json", "csv"] = Format) -> Any:
        """Lockers: orders loaded, collected, expired; loaded-to-collected dwell; expiry rate."""
        s, e = hour_range(start, end, an.clock())
        return _answer("lockers", await an.figure("lockers", s, e), format)

    @r.get("/analytics/charts/{chart}.svg", tags=["analytics"], response_class=Response,
           responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}},
                            "description": "an SVG chart"},
                      404: {"description": "no such chart"}})
    async def analytics_chart(chart: str, start: int | None = Start, end: int | None = End,
                              bucket: Literal["hour", "day"] = Query("hour")) -> Response:
        """A chart of the figures: `hourly` (entries vs purchases per bucket), `funnel`,
        `products` (top 10 by try-on conversion) or `devices` (availability)."""
        if chart not in charts.CHARTS:
            raise HTTPException(404, f"no chart {chart!r}: one of {', '.join(charts.CHARTS)}")
        max_days = MAX_HOURLY_DAYS if chart == "hourly" and bucket == "hour" else MAX_SPAN_DAYS
        s, e = hour_range(start, end, an.clock(), max_days)
        if chart in ("hourly", "funnel"):
            svg = getattr(charts, chart)(await an.figure("funnel", s, e, bucket=bucket))
        elif chart == "products":
            svg = charts.products(await an.figure("products", s, e, sort="conversion", limit=10))
        else:
            svg = charts.devices(await an.figure("devices", s, e))
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    @r.get("/dashboard/analytics", include_in_schema=False)
    async def analytics_page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    return r

