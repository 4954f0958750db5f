"""Staff routes: alerts with acknowledge, and the staff dashboard page (docs/dashboard.md).

Kept apart from gateway/http/api.py so each domain adds its routes in its own module.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from gateway.devices.alerts import AlertsService

WEB = Path(__file__).with_name("web")


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field(min_length=1, max_length=64, description="who acknowledges (staff name or id)",
                    examples=["anna (floor lead)"])


class AlertOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 17, "key": "offline:lk-1", "severity": "warning", "device": "lk-1",
        "type": "device.offline", "text": "lk-1 (locker-bank) is offline",
        "data": {"change": "offline", "id": "lk-1"}, "state": "acked", "count": 1,
        "created": 1795000000000, "last": 1795000000000, "acked_by": "anna (floor lead)",
        "acked_at": 1795000060000, "resolved_at": None, "source": 5123}]})
    id: int
    key: str = Field(description="one open (or acked) alert per key; repeats fold into `count`")
    severity: str = Field(description="info, warning or critical")
    device: str | None
    type: str = Field(description="the stream item's type that raised it")
    text: str = Field(description="what the dashboard shows")
    data: dict[str, Any] = Field(description="the item's fields (secrets redacted)")
    state: Literal["open", "acked", "resolved"]
    count: int
    created: int = Field(description="unix ms")
    last: int = Field(description="unix ms of the latest repeat")
    acked_by: str | None
    acked_at: int | None
    resolved_at: int | None
    source: int = Field(description="stream id of the item that raised it")


def add_staff_routes(app: FastAPI, alerts: AlertsService) -> None:
    @app.get("/alerts", tags=["staff"], response_model=list[AlertOut])
    async def list_alerts(state: Literal["open", "acked", "resolved", "all"] | None = Query(
                              None, description="default: open and acked (not resolved)"),
                          limit: int = Query(200, ge=1, le=1000)) -> list[dict[str, Any]]:
        """Alerts, newest first. Each has `severity`, `text` (what the dashboard shows), `device`,
        `state` (`open` → `acked` by staff; `resolved` when the cause went away by itself) and
        `count` (repeats folded into it)."""
        return await alerts.list(None if state is None else state, limit)

    @app.post("/alerts/{alert_id}/ack", tags=["staff"], response_model=AlertOut,
              responses={200: {"description": "the alert, acked (or as it was if already acked "
                                              "or resolved)"},
                         404: {"description": "unknown alert"}})
    async def ack_alert(alert_id: int, body: AckIn) -> dict[str, Any]:
        """Staff has seen the alert and is on it (`alert` item `acked` on the stream). Does not
        clear a blocked compartment or a jammed line: use the device's own staff operation."""
        alert = await alerts.ack(alert_id, body.by)
        if alert is None:
            raise HTTPException(404, f"unknown alert {alert_id} (GET /alerts lists them)")
        return alert

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(WEB / "dashboard.html", media_type="text/html")
