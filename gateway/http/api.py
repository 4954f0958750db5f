"""HTTP API (FastAPI): devices, events, commands, the live stream and stats; each device kind's
routes come from its router (gateway/kinds/<kind>/api.py, listed in gateway/kinds/registry.py).

Errors are `{"detail": "<what went wrong and what to do>"}` with a 4xx status; validation
errors (422) add `errors` with FastAPI's per-field list.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

from fastapi import FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field

from gateway.aisle.api import router as aisle_router
from gateway.analytics.api import router as analytics_router
from gateway.devices import protocol
from gateway.devices.commands import CommandRejected, IdempotencyConflict, UnknownDevice
from gateway.devices.ingest import device_views
from gateway.http import auth, resilience
from gateway.http.firmware import router as firmware_router
from gateway.http.hours import router as hours_router
from gateway.http.ops import add_ops_routes
from gateway.http.redact import may_see_codes, redact_event, redact_item
from gateway.http.screens import add_screen_routes
from gateway.http.staff import add_staff_routes
from gateway.http.stream import Broadcaster, Subscription, TooManyStreams, sse_events
from gateway.storage.store import Store, StreamItem

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from gateway.aisle.service import AisleService
    from gateway.analytics.service import AnalyticsService
    from gateway.devices.alerts import AlertsService
    from gateway.devices.commands import CommandService
    from gateway.devices.ingest import IngestWorker
    from gateway.devices.ota_service import OtaService
    from gateway.integrations.capacity import CapacityWatch
    from gateway.integrations.metrics import GatewayMetrics
    from gateway.integrations.webhooks import WebhookService
    from gateway.kinds.base import DeviceKind, KindService
    from gateway.storage.db import Database
    from gateway.transport.bus import MqttBus
    from gateway.transport.coap import CoapEdge


class _Timing(Protocol):
    @property
    def command_grace_s(self) -> float: ...


class Served(Protocol):
    """What the HTTP app serves: the parts of the gateway its routes read (a `gateway.app.Gateway`
    is one). A structural type, so that http/ does not import the app that builds it."""
    @property
    def db(self) -> Database: ...
    @property
    def bus(self) -> MqttBus: ...
    @property
    def ingest(self) -> IngestWorker: ...
    @property
    def commands(self) -> CommandService: ...
    @property
    def broadcaster(self) -> Broadcaster: ...
    @property
    def coap(self) -> CoapEdge | None: ...
    @property
    def clock(self) -> Callable[[], int]: ...
    @property
    def config(self) -> _Timing: ...
    @property
    def kinds(self) -> tuple[DeviceKind, ...]: ...
    @property
    def services(self) -> Mapping[str, KindService]: ...
    @property
    def alerts(self) -> AlertsService: ...
    @property
    def webhooks(self) -> WebhookService: ...
    @property
    def metrics(self) -> GatewayMetrics: ...
    @property
    def limits(self) -> auth.Limits: ...
    @property
    def analytics(self) -> AnalyticsService: ...
    @property
    def ota(self) -> OtaService: ...
    @property
    def aisle(self) -> AisleService: ...
    @property
    def capacity(self) -> CapacityWatch: ...

    def render(self, kind: str, data: dict[str, Any], reveal: bool = False) -> dict[str, Any]: ...

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


# --- response models (the OpenAPI spec's answers; FastAPI serializes through them, so a field
# the gateway sends must be declared here or it is dropped: tests/gateway/http/test_api_contract.py) -------

class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ok", "mqtt": "connected", "ingest_queue": 0}]})
    status: Literal["ok", "degraded"] = Field(description="`ok` when the broker connection is up")
    mqtt: Literal["connected", "disconnected"]
    ingest_queue: int = Field(description="messages waiting to be persisted")


class DeviceOut(BaseModel):
    """A device, the same in `GET /devices` and `GET /devices/{device}`."""
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "pad-1", "kind": "sample-pad", "fw": "1.4.0", "caps": ["tag", "led", "blink"],
        "cfg": "a1b2c3d4", "session": 3, "epoch": "5f2a9e01", "boot": 12, "reset": "power",
        "online": True, "last_seen": 1795000123456, "first_seen": 1794000000000, "acked": 42,
        "pending_commands": ["c-0a1b2c3d4e5f6789"]}]})
    id: str
    kind: str = Field(description="sample-pad, fitting-room, locker-bank, tube-station, ...")
    fw: str = Field(description="firmware version from the birth")
    caps: list[str] = Field(description="capabilities (command names) from the birth")
    cfg: str = Field(description="config hash from the birth")
    session: int
    epoch: str = Field(description="journal epoch of the current session (docs/protocol.md)")
    boot: int
    reset: str | None = Field(description="reset cause reported in the birth")
    online: bool
    last_seen: int = Field(description="unix ms")
    first_seen: int = Field(description="unix ms")
    acked: int = Field(description="every seq up to this one of the current epoch is persisted "
                                   "and acknowledged (0 before the first)")
    pending_commands: list[str] = Field(description="ids of its queued, sent or accepted "
                                                    "commands, oldest first")


class SampleContentOut(BaseModel):
    id: str
    title: str
    image: str | None = None
    url: str | None = None
    description: str | None = None


class EventOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 981, "device": "pad-1", "epoch": "5f2a9e01", "seq": 42, "type": "tag.placed",
        "t_device": 1795000123000, "t_gateway": 1795000123456,
        "body": {"uid": "04a1b2c3d4e5f6", "tech": "ntag213", "sample": "S-1001"},
        "content": {"id": "S-1001", "title": "Linen shirt", "image": "/img/s1001.jpg",
                    "url": None, "description": None}}]})
    id: int = Field(description="event id (page with `after`)")
    device: str
    epoch: str
    seq: int | None = Field(description="null: made by the gateway (journal.overflow)")
    type: str
    t_device: int | None = Field(description="device clock, unix ms (null if it had none)")
    t_gateway: int = Field(description="when the gateway persisted it, unix ms")
    body: dict[str, Any] = Field(description="the event's own fields (docs/protocol.md); code "
                                             "fields redacted (docs/security.md)")
    content: SampleContentOut | None = Field(
        default=None, description="`tag.placed` only (absent on other types): the sample's "
                                  "catalog entry, null for a tag not in the catalog")


class EventsPageOut(BaseModel):
    events: list[EventOut]
    next_after: int = Field(description="pass as `after` for the next page")


class LateOutcomeOut(BaseModel):
    status: str
    reason: str | None = None
    result: dict[str, Any] | None = None
    at: int = Field(description="unix ms")


class CommandOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "c-0a1b2c3d4e5f6789", "device": "pad-1", "name": "blink", "args": {"times": 3},
        "idem_key": "kiosk-1-20261123-0912", "status": "done", "reason": None,
        "result": {"times": 3}, "deadline": 1795000133456, "created": 1795000123456,
        "updated": 1795000123700, "late": False, "sends": 1, "last_sent": 1795000123460,
        "late_outcome": None, "final": True}]})
    id: str
    device: str
    name: str
    args: dict[str, Any] = Field(description="as given (a code verifier redacted)")
    idem_key: str
    status: Literal["queued", "sent", "accepted", "done", "rejected", "failed", "expired"]
    reason: str | None
    result: dict[str, Any] | None = Field(description="what the device answered with `done`")
    deadline: int = Field(description="unix ms")
    created: int
    updated: int
    late: bool = Field(description="the device answered after `expired` (see late_outcome)")
    sends: int
    last_sent: int | None
    late_outcome: LateOutcomeOut | None = Field(
        description="a device answer after `expired`, kept beside it: `final` never changes "
                    "(docs/protocol.md, \"Commands\")")
    final: bool = Field(description="done, rejected, failed or expired: the status never changes")


class MqttStatsOut(BaseModel):
    connected: bool
    connects: int
    publish_failures: int


class StatsOut(BaseModel):
    messages_received: int
    events_persisted: int
    duplicates: int
    rejections: dict[str, int] = Field(description="rejected device messages by reason")
    commands: dict[str, int] = Field(description="commands by status")
    mqtt: MqttStatsOut
    coap: dict[str, Any] | None = Field(description="the CoAP edge's counters (docs/coap.md); "
                                                    "null when it is off")
    acks_failed: int
    ingest_batches: int
    stream_subscribers: int


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


def create_app(gw: Served) -> FastAPI:
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
        (gateway/http/redact.py); verifiers never."""
        return gw.render(item.kind, redact_item(item.kind, item.data), reveal)

    @app.get("/health", response_model=HealthOut)
    async def health() -> dict[str, Any]:
        """Liveness and readiness: `status` is `ok` when the broker connection is up."""
        return {"status": "ok" if gw.bus.connected else "degraded",
                "mqtt": "connected" if gw.bus.connected else "disconnected",
                "ingest_queue": gw.ingest.queue.qsize()}

    @app.get("/devices", response_model=list[DeviceOut])
    async def list_devices() -> list[dict[str, Any]]:
        """Every device that has sent a birth, by id (each as `GET /devices/{device}`)."""
        return await gw.db.read(device_views)

    @app.get("/devices/{device}", response_model=DeviceOut)
    async def get_device(device: str) -> dict[str, Any]:
        views = await gw.db.read(device_views, device)
        if not views:
            raise HTTPException(404, f"unknown device {device!r}: it has never sent a birth "
                                     "(GET /devices lists known devices)")
        return views[0]

    @app.get("/events", response_model=EventsPageOut, response_model_exclude_unset=True)
    async def list_events(device: str | None = None, type: str | None = None,
                          after: int = Query(0, ge=0, description="event id to page after"),
                          limit: int = Query(100, ge=1, description="page size, capped at 1000")
                          ) -> dict[str, Any]:
        rows = await gw.db.read(Store.list_events, device=device, type=type, after=after,
                                limit=min(limit, MAX_EVENTS_PAGE))
        events = [gw.render("event", redact_event(e)) for e in rows]
        return {"events": events, "next_after": events[-1]["id"] if events else after}

    @app.post("/devices/{device}/commands", response_model=CommandOut,
              responses={200: {"description": "final outcome"},
                         202: {"model": CommandOut,
                               "description": "outcome pending (poll GET /commands/{id})"},
                         404: {"description": "unknown device"},
                         409: {"description": "idempotency key reused for a different command"}})
    async def post_command(device: str, req: CommandRequest, response: Response
                           ) -> dict[str, Any]:
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
        response.status_code = 200 if cmd["final"] else 202
        response.headers["Location"] = f"/commands/{cmd['id']}"
        return cmd

    @app.get("/commands/{command_id}", response_model=CommandOut)
    async def get_command(command_id: str) -> dict[str, Any]:
        cmd = await gw.commands.get(command_id)
        if cmd is None:
            raise HTTPException(404, f"unknown command {command_id!r}")
        return cmd

    @app.get("/stream", response_class=StreamingResponse,
             responses={200: {"description": "Server-Sent Events (`text/event-stream`): "
                                             "an endless response, one item per `data:` line",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
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

    @app.get("/stats", response_model=StatsOut)
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

    for kind in gw.kinds:  # samples, fitting rooms + mirror page, lockers, tube (docs/<kind>.md)
        if kind.router is not None:
            app.include_router(kind.router(gw.services[kind.name]))

    # purchases store-wide, the fitting rooms' POS and door-count routes, /analytics/...
    app.include_router(analytics_router(gw.analytics))
    app.include_router(aisle_router(gw.aisle))  # the endless aisle (docs/endless-aisle.md)
    app.include_router(firmware_router(gw.ota))  # bundles, rollouts (docs/ota.md)
    app.include_router(hours_router(gw.db, gw.clock))  # events per hour, kept for years
    add_staff_routes(app, gw.alerts)
    add_screen_routes(app, gw.db, gw.services)  # customer points, the screens' script (gateway/http/screens.py)
    add_ops_routes(app, gw.webhooks, gw.metrics, gw,  # webhooks, /metrics, /storage
                   gw.capacity)                        # (gateway/http/ops.py)
    resilience.install(app)  # disk full / database locked: a clear 507 / 503
    auth.install(app, gw.db, gw.limits)  # every route above and below: tokens, scopes, limits, audit
    return app
