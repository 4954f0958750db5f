"""HTTP routes for integrations: webhook subscriptions (docs/webhooks.md) and `/metrics`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from .metrics import CONTENT_TYPE
from .webhooks import UnknownSubscription

if TYPE_CHECKING:
    from .app import Gateway


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


def add_ops_routes(app: FastAPI, gw: Gateway) -> None:
    def _404(sub_id: str) -> HTTPException:
        return HTTPException(404, f"unknown webhook subscription {sub_id!r} "
                                  "(GET /webhooks lists them)")

    @app.post("/webhooks", status_code=201, tags=["webhooks"])
    async def create_webhook(body: WebhookIn) -> dict[str, Any]:
        """Subscribe `url` to event types: `event.<device event type>` (`event.tag.placed`),
        `device.online|offline|birth`, `command.<status>`, `locker.order.<state>`; `*`
        matches anything. Only events committed after this call are delivered. The answer
        holds the signing `secret` (shown only here). Admin only, like every webhook route."""
        try:
            return await gw.webhooks.create(body.url, body.events, body.secret,
                                            body.description, body.include_secrets)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/webhooks", tags=["webhooks"])
    async def list_webhooks() -> list[dict[str, Any]]:
        """Subscriptions with their delivery state: `pending` backlog, `next_attempt` (ms) and
        `head_attempts` of the oldest pending delivery, `failing` (failed attempts since the
        last success), `last_error`, `last_attempt`, `last_success`, `delivered`."""
        return await gw.webhooks.list()

    @app.get("/webhooks/{sub_id}", tags=["webhooks"])
    async def get_webhook(sub_id: str) -> dict[str, Any]:
        try:
            return await gw.webhooks.get(sub_id)
        except UnknownSubscription:
            raise _404(sub_id) from None

    @app.get("/webhooks/{sub_id}/deliveries", tags=["webhooks"])
    async def webhook_deliveries(
            sub_id: str, status: Literal["pending", "delivered"] | None = None,
            after: int = Query(0, ge=0, description="delivery id to page after"),
            limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """Deliveries in order, with `attempts`, `last_attempt`, `last_code`, `last_error`,
        `next_at` (pending) or `delivered_at`."""
        try:
            rows = await gw.webhooks.deliveries(sub_id, status, after, limit)
        except UnknownSubscription:
            raise _404(sub_id) from None
        return {"deliveries": rows, "next_after": rows[-1]["id"] if rows else after}

    @app.delete("/webhooks/{sub_id}", status_code=204, tags=["webhooks"])
    async def delete_webhook(sub_id: str) -> Response:
        """Unsubscribe; pending deliveries of this subscription are dropped."""
        try:
            await gw.webhooks.delete(sub_id)
        except UnknownSubscription:
            raise _404(sub_id) from None
        return Response(status_code=204)

    @app.get("/metrics", response_class=Response, tags=["operations"],
             responses={200: {"content": {CONTENT_TYPE: {}}}})
    async def metrics() -> Response:
        """Prometheus text exposition (docs/operations.md lists the series)."""
        return Response(await gw.metrics.render(gw), media_type=CONTENT_TYPE)
