"""HTTP API (FastAPI): devices, events, commands, the live stream, stats and the sample catalog.

Errors are `{"detail": "<what went wrong and what to do>"}` with a 4xx status; validation
errors (422) add `errors` with FastAPI's per-field list.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field

from . import auth, protocol, resilience
from .api_lockers import add_locker_routes
from .api_staff import add_staff_routes
from .commands import CommandRejected, IdempotencyConflict, UnknownDevice
from .fitting_api import add_fitting_routes
from .ingest import public_device
from .ops_api import add_ops_routes
from .redact import may_see_codes, redact_event, redact_item
from .services.pads import CatalogConflict, CatalogError
from .store import Store, StreamItem
from .stream import Broadcaster, Subscription, TooManyStreams, sse_events
from .tube_api import tube_router

if TYPE_CHECKING:
    from .app import Gateway

MAX_EVENTS_PAGE = 1000


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="command name, e.g. `blink`")
    args: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str = Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/+=-]+$",
        description="the caller's key: a retry with the same key returns the same command")
    timeout_s: float = Field(default=10.0, ge=0.1, le=300.0,
                             description="the device must answer within this many seconds")
    wait: bool = Field(default=True,
                       description="wait for the final outcome (up to timeout_s + 2 s)")


class SampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    image: str | None = None
    url: str | None = None
    description: str | None = None
    uid: str | None = Field(default=None,
                            description="tag UID (8 or 14 hex digits) mapped to this sample")


#: `Retry-After` of a refused `/stream`: a slot frees when another stream of the token closes,
#: which the server cannot predict; a browser tab reloading comes back within seconds.
STREAM_RETRY_AFTER_S = 10


def _too_many_streams(exc: TooManyStreams, who: str) -> str:
    if exc.limit == "per_token":
        return (f"too many live streams for token {who!r}: at most {exc.cap} open at once. "
                "Close one (every EventSource, e.g. each browser tab, holds one) and retry; "
                "the cap is streams_per_token in PHYGITAL_RATE_LIMITS (docs/security.md)")
    return (f"too many live streams on this gateway: at most {exc.cap} open at once. Retry "
            "later; the cap is streams_total in PHYGITAL_RATE_LIMITS (docs/security.md)")


class _StreamResponse(StreamingResponse):
    """Releases the stream's subscription however the response ends, even if its generator
    never started (the client went away before the headers were sent)."""

    def __init__(self, broadcaster: Broadcaster, sub: Subscription, *args: Any,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = lambda: broadcaster.unsubscribe(sub)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


#: Swagger UI's script, style and icon (and ReDoc's unused script), served by the gateway
#: itself (a store may have no internet): public under the `/docs` row of auth.POLICY.
DOCS_STATIC = "/docs/static"


def create_app(gw: Gateway) -> FastAPI:
    # FastAPI's own /docs loads its assets from a CDN; fastapi-offline serves the same page
    # (same path, FastAPI's own HTML) with the assets it vendors, at DOCS_STATIC. /redoc is
    # off: ReDoc's bundle always fetches its vendor's logo from the vendor's CDN.
    app = FastAPIOffline(title="Phygital Edge gateway", version="0.1.0",
                         description="Store gateway: devices, events, commands (docs/protocol.md).",
                         docs_url="/docs", redoc_url=None, static_url=DOCS_STATIC)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        detail = "; ".join(f"{_field_path(e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                           for e in errors) or "invalid request"
        return JSONResponse(status_code=422,
                            content={"detail": detail, "errors": jsonable_encoder(errors)})

    def render(item: StreamItem, reveal: bool = False) -> dict[str, Any]:
        """A stream item for one subscriber: plain pickup codes only with `reveal`
        (gateway/redact.py); verifiers never."""
        data = redact_item(item.kind, item.data)
        if item.kind == "event":
            return gw.pads.enrich(data)
        if item.kind == "locker":
            return gw.lockers.render(data, reveal)
        return data

    async def _device_or_404(device: str) -> dict[str, Any]:
        dev = await gw.db.read(Store.get_device, device)
        if dev is None:
            raise HTTPException(404, f"unknown device {device!r}: it has never sent a birth "
                                     "(GET /devices lists known devices)")
        return dev

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and readiness: `status` is `ok` when the broker connection is up."""
        return {"status": "ok" if gw.bus.connected else "degraded",
                "mqtt": "connected" if gw.bus.connected else "disconnected",
                "ingest_queue": gw.ingest.queue.qsize()}

    @app.get("/devices")
    async def list_devices() -> list[dict[str, Any]]:
        return [public_device(d) for d in await gw.db.read(Store.list_devices)]

    @app.get("/devices/{device}")
    async def get_device(device: str) -> dict[str, Any]:
        dev = await _device_or_404(device)
        watermark = await gw.db.read(Store.get_watermark, device, dev["epoch"])
        pending = await gw.db.read(Store.pending_commands, device)
        return public_device(dev, watermark or 0) | {"pending_commands": [c["id"] for c in pending]}

    @app.get("/events")
    async def list_events(device: str | None = None, type: str | None = None,
                          after: int = Query(0, ge=0, description="event id to page after"),
                          limit: int = Query(100, ge=1, description="page size, capped at 1000")
                          ) -> dict[str, Any]:
        rows = await gw.db.read(Store.list_events, device=device, type=type, after=after,
                                limit=min(limit, MAX_EVENTS_PAGE))
        events = [gw.pads.enrich(redact_event(e)) for e in rows]
        return {"events": events, "next_after": events[-1]["id"] if events else after}

    @app.post("/devices/{device}/commands",
              responses={200: {"description": "final outcome"},
                         202: {"description": "outcome pending (poll GET /commands/{id})"},
                         404: {"description": "unknown device"},
                         409: {"description": "idempotency key reused for a different command"}})
    async def post_command(device: str, req: CommandRequest) -> JSONResponse:
        if not protocol.is_device_id(device):
            raise HTTPException(404, f"unknown device {device!r}: not a valid device id")
        try:
            cmd, _created = await gw.commands.submit(device, req.name, req.args,
                                                    req.idempotency_key, req.timeout_s,
                                                    wait_send=not req.wait)
        except UnknownDevice:
            raise HTTPException(404, f"unknown device {device!r}: it has never sent a birth "
                                     "(GET /devices lists known devices)") from None
        except IdempotencyConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except CommandRejected as exc:
            raise HTTPException(422, str(exc)) from None
        if req.wait and not cmd["final"]:
            remaining = (cmd["deadline"] - gw.clock()) / 1000 + gw.config.command_grace_s + 0.5
            cmd = await gw.commands.wait(cmd["id"], max(0.0, remaining)) or cmd
        headers = {"Location": f"/commands/{cmd['id']}"}
        return JSONResponse(status_code=200 if cmd["final"] else 202, content=cmd,
                            headers=headers)

    @app.get("/commands/{command_id}")
    async def get_command(command_id: str) -> dict[str, Any]:
        cmd = await gw.commands.get(command_id)
        if cmd is None:
            raise HTTPException(404, f"unknown command {command_id!r}")
        return cmd

    @app.get("/stream", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}},
                        429: {"description": "too many open streams for this token (default "
                                             "16) or the gateway (256); see Retry-After"}})
    async def stream(request: Request, last_event_id: str | None = Header(default=None),
                     after: int | None = Query(None, ge=0,
                                               description="resume after this stream id "
                                                           "(same as Last-Event-ID)")
                     ) -> StreamingResponse:
        """Server-Sent Events: `event` (persisted device events, `tag.placed` with `content`),
        `device` (birth/online/offline) and `command` (status changes). `id:` is the stream id;
        reconnect with `Last-Event-ID` to get everything after it. `order.ready` /
        `order.code` carry the plain pickup `code` only for a token with the `lockers` or
        `admin` scope (docs/security.md, "Secrets"). Open streams are capped per token and
        in total (429 past either; docs/security.md, "Rate limits")."""
        resume = after
        if last_event_id is not None and last_event_id.strip():
            try:
                resume = int(last_event_id)
            except ValueError:
                raise HTTPException(400, f"Last-Event-ID must be a stream id (an integer), "
                                         f"got {last_event_id!r}") from None
            if resume < 0:
                raise HTTPException(400, "Last-Event-ID must be >= 0")

        async def read_after(after_id: int, limit: int) -> list[StreamItem]:
            return await gw.db.read(Store.stream_after, after_id, limit)

        principal = request.scope.get("state", {}).get("principal", auth.ANONYMOUS)
        reveal = may_see_codes(principal.scopes)

        def render_for(item: StreamItem) -> dict[str, Any]:
            return render(item, reveal)

        try:  # a slot of this token's (and the gateway's) open-stream budget
            sub = gw.broadcaster.subscribe(principal.id or None)
        except TooManyStreams as exc:
            raise HTTPException(429, _too_many_streams(exc, principal.name),
                                headers={"Retry-After": str(STREAM_RETRY_AFTER_S)}) from None
        return _StreamResponse(
            gw.broadcaster, sub,
            sse_events(gw.broadcaster, read_after, render_for, resume, sub=sub),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        counters = await gw.db.read(Store.counters)
        return {
            "messages_received": counters.get("messages_received", 0),
            "events_persisted": counters.get("events_persisted", 0),
            "duplicates": counters.get("duplicates", 0),
            "rejections": await gw.db.read(Store.rejections),
            "commands": await gw.db.read(Store.count_commands),
            "mqtt": {"connected": gw.bus.connected, "connects": gw.bus.connects,
                     "publish_failures": gw.bus.publish_failures},
            "coap": gw.coap.stats() if gw.coap is not None else None,
            "acks_failed": gw.ingest.ack_failures,
            "ingest_batches": gw.ingest.batches,
            "stream_subscribers": len(gw.broadcaster.subscribers),
        }

    @app.get("/samples")
    async def list_samples() -> list[dict[str, Any]]:
        return gw.pads.list()

    @app.get("/samples/{sample_id}")
    async def get_sample(sample_id: str) -> dict[str, Any]:
        s = gw.pads.get(sample_id)
        if s is None:
            raise HTTPException(404, f"unknown sample {sample_id!r} (PUT /samples/{{id}} adds one)")
        return s

    @app.put("/samples/{sample_id}")
    async def put_sample(sample_id: str, body: SampleIn) -> dict[str, Any]:
        try:
            return await gw.pads.put(sample_id, body.model_dump())
        except CatalogConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except CatalogError as exc:
            raise HTTPException(422, str(exc)) from None

    add_fitting_routes(app, gw)  # fitting rooms + mirror page (docs/fitting-rooms.md)

    add_locker_routes(app, gw)  # gateway/api_lockers.py (docs/lockers.md)

    add_staff_routes(app, gw)
    add_ops_routes(app, gw)  # webhooks, /metrics (gateway/ops_api.py)
    app.include_router(tube_router(gw))  # /tube/... (docs/tube.md)
    resilience.install(app)  # disk full / database locked: a clear 507 / 503
    auth.install(app, gw)  # every route above and below: tokens, scopes, limits, audit
    return app
