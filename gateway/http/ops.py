"""HTTP routes for integrations: webhook subscriptions (docs/webhooks.md), `/metrics` and
`/storage` (the disk and the bounded queues, docs/operations.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.integrations.metrics import CONTENT_TYPE, GatewayMetrics, Sources
from gateway.integrations.webhooks import UnknownSubscription

if TYPE_CHECKING:
    from gateway.integrations.capacity import CapacityWatch
    from gateway.integrations.webhooks import WebhookService


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2000,
                     description="where to POST deliveries", examples=["https://oms.local/pe"])
    events: list[str] = Field(min_length=1, max_length=32,
                              description="event type patterns with `*` wildcards",
                              examples=[["event.tag.*", "device.offline", "command.*"]])
    secret: str | None = Field(default=None, min_length=16, max_length=256,
                               description="HMAC key; the gateway makes one if not given")
    description: str | None = Field(default=None, max_length=200)
    include_secrets: bool = Field(
        default=False, description="also deliver plain pickup codes (`code` of "
        "`locker.order.ready` / `locker.order.code`), e.g. to an order system that texts them "
        "to customers. Off by default: payloads carry no secret (docs/webhooks.md)")


class WebhookOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "wh-0a1b2c3d4e5f", "url": "https://oms.local/pe",
        "events": ["event.tag.*", "device.offline"], "description": None,
        "created": 1795000000000, "delivered": 120, "failures": 2, "failing": 0,
        "last_attempt": 1795000100000, "last_success": 1795000100000, "last_error": None,
        "include_secrets": False, "pending": 0, "dropped": 0, "oldest_pending_created": None,
        "next_attempt": None, "head_attempts": None}]})
    id: str
    url: str
    events: list[str]
    description: str | None
    created: int = Field(description="unix ms")
    delivered: int = Field(description="deliveries answered 2xx")
    failures: int = Field(description="failed attempts, all time")
    failing: int = Field(description="failed attempts since the last success")
    last_attempt: int | None
    last_success: int | None
    last_error: str | None
    include_secrets: bool
    pending: int = Field(description="deliveries waiting")
    dropped: int = Field(description="oldest pending deliveries dropped because the queue was "
                                     "full ([webhooks] max_pending), all time")
    oldest_pending_created: int | None
    next_attempt: int | None = Field(description="unix ms of the next try of the oldest pending")
    head_attempts: int | None = Field(description="attempts of the oldest pending delivery")


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="the HMAC signing key: shown only in this answer")


class DeliveryOut(BaseModel):
    id: int
    sub: str
    stream_id: int
    type: str = Field(description="e.g. `event.tag.placed`, `command.done`")
    data: dict[str, Any] = Field(description="the payload (secrets redacted unless the "
                                             "subscription has include_secrets)")
    created: int
    status: Literal["pending", "delivered"]
    attempts: int
    next_at: int
    last_attempt: int | None
    last_code: int | None
    last_error: str | None
    delivered_at: int | None


class DeliveriesPageOut(BaseModel):
    deliveries: list[DeliveryOut]
    next_after: int = Field(description="pass as `after` for the next page")


class DiskOut(BaseModel):
    path: str = Field(description="the database's folder")
    total_bytes: int
    free_bytes: int
    alert_below_bytes: int = Field(description="disk.low below this ([database] "
                                               "disk_alert_free_percent / _mb; 0: off)")
    low: bool
    db_bytes: int = Field(description="the database file and its WAL")


class WebhookQueueOut(BaseModel):
    id: str
    pending: int
    dropped: int = Field(description="oldest pending deliveries dropped at the cap, all time")
    full: bool


class WebhookQueuesOut(BaseModel):
    max_pending: int = Field(description="the cap per subscription ([webhooks] max_pending)")
    subscriptions: list[WebhookQueueOut]


class ChainOutboxOut(BaseModel):
    enabled: bool
    rows: int = Field(description="messages not yet taken by the store broker")
    alert_rows: int = Field(description="chain.backlog above this ([chain] outbox_alert_rows)")
    policy: str
    alerting: bool


class StorageOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "disk": {"path": "/var/lib/phygital", "total_bytes": 31_000_000_000,
                 "free_bytes": 24_000_000_000, "alert_below_bytes": 3_100_000_000, "low": False,
                 "db_bytes": 3_200_000_000},
        "webhooks": {"max_pending": 100000, "subscriptions": [
            {"id": "wh-0a1b2c3d4e5f", "pending": 12, "dropped": 0, "full": False}]},
        "chain_outbox": {"enabled": True, "rows": 3, "alert_rows": 500000,
                         "policy": "never dropped, never refused: alert above alert_rows",
                         "alerting": False}}]})
    disk: DiskOut
    webhooks: WebhookQueuesOut
    chain_outbox: ChainOutboxOut


def add_ops_routes(app: FastAPI, webhooks: WebhookService, exposition: GatewayMetrics,
                   sources: Sources, capacity: CapacityWatch) -> None:
    def _404(sub_id: str) -> HTTPException:
        return HTTPException(404, f"unknown webhook subscription {sub_id!r} "
                                  "(GET /webhooks lists them)")

    @app.post("/webhooks", status_code=201, tags=["webhooks"], response_model=WebhookCreatedOut)
    async def create_webhook(body: WebhookIn) -> dict[str, Any]:
        """Subscribe `url` to event types: `event.<device event type>` (`event.tag.placed`),
        `device.online|offline|birth`, `command.<status>`, `locker.order.<state>`; `*`
        matches anything. Only events committed after this call are delivered. The answer
        holds the signing `secret` (shown only here). Admin only, like every webhook route."""
        try:
            return await webhooks.create(body.url, body.events, body.secret,
                                            body.description, body.include_secrets)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/webhooks", tags=["webhooks"], response_model=list[WebhookOut])
    async def list_webhooks() -> list[dict[str, Any]]:
        """Subscriptions with their delivery state: `pending` backlog, `next_attempt` (ms) and
        `head_attempts` of the oldest pending delivery, `failing` (failed attempts since the
        last success), `last_error`, `last_attempt`, `last_success`, `delivered`."""
        return await webhooks.list()

    @app.get("/webhooks/{sub_id}", tags=["webhooks"], response_model=WebhookOut)
    async def get_webhook(sub_id: str) -> dict[str, Any]:
        try:
            return await webhooks.get(sub_id)
        except UnknownSubscription:
            raise _404(sub_id) from None

    @app.get("/webhooks/{sub_id}/deliveries", tags=["webhooks"], response_model=DeliveriesPageOut)
    async def webhook_deliveries(
            sub_id: str, status: Literal["pending", "delivered"] | None = None,
            after: int = Query(0, ge=0, description="delivery id to page after"),
            limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """Deliveries in order, with `attempts`, `last_attempt`, `last_code`, `last_error`,
        `next_at` (pending) or `delivered_at`."""
        try:
            rows = await webhooks.deliveries(sub_id, status, after, limit)
        except UnknownSubscription:
            raise _404(sub_id) from None
        return {"deliveries": rows, "next_after": rows[-1]["id"] if rows else after}

    @app.delete("/webhooks/{sub_id}", status_code=204, tags=["webhooks"],
                responses={204: {"description": "unsubscribed (no body)"}})
    async def delete_webhook(sub_id: str) -> Response:
        """Unsubscribe; pending deliveries of this subscription are dropped."""
        try:
            await webhooks.delete(sub_id)
        except UnknownSubscription:
            raise _404(sub_id) from None
        return Response(status_code=204)

    @app.get("/storage", tags=["operations"], response_model=StorageOut)
    async def storage() -> dict[str, Any]:
        """The disk under the database and the bounded queues: each webhook subscription's
        pending deliveries against the cap and how many were dropped, the chain outbox against
        its alert threshold (docs/operations.md, "Queues, disk and reads"). No URL, no secret."""
        return await capacity.snapshot()

    @app.get("/metrics", response_class=Response, tags=["operations"],
             responses={200: {"description": "Prometheus text exposition format",
                              "content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        """Prometheus text exposition (docs/operations.md lists the series)."""
        return Response(await exposition.render(sources), media_type=CONTENT_TYPE)
