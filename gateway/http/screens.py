"""Customer screens (docs/dashboard.md, "Customer screens"): `GET /customer-points`, which of
the store's customer-facing points (a device whose kind has a page: the sample kiosk of a pad,
the mirror of a fitting room; `DeviceKind.screens`) are degraded, since when and why, and
`/web/screen.js`, the script with which each such page says so kindly to the customer, and
`/web/aisle.js`, the endless aisle's "not here? ask for it" step of the kiosk and the mirror.

A point is degraded when its device is offline (since: its open offline alert, else the last
time it was heard) or when a dependency of its page is down (`DeviceKind.problems`: the stock
API). That the gateway itself is unreachable only the page can tell (screen.js probes
`GET /health`); the dashboard shows the same for itself.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.kinds.registry import kind_of
from gateway.storage.db import Database
from gateway.storage.store import Store

WEB = Path(__file__).with_name("web")


class ProblemOut(BaseModel):
    what: str = Field(description="`device` (offline) or a dependency (`stock`)")
    since: int = Field(description="unix ms")
    why: str


class CustomerPointOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "device": "pad-1", "kind": "sample-pad", "page": "/kiosk/pad-1", "state": "degraded",
        "since": 1795000000000, "why": [{"what": "device", "since": 1795000000000,
                                         "why": "sample-pad pad-1 is offline"}]}]})
    device: str
    kind: str = Field(description="device kind")
    page: str = Field(description="the customer page it serves")
    state: Literal["ok", "degraded"]
    since: int | None = Field(description="unix ms: the oldest of its problems (null: ok)")
    why: list[ProblemOut] = Field(description="what does not work, oldest first")


def _devices_tx(store: Store) -> list[dict[str, Any]]:
    """Every device, with `offline_since`: when its open offline alert was raised (or None)."""
    devices = store.list_devices()
    since = dict(store.conn.execute(
        "SELECT device, MIN(created) FROM alerts WHERE key LIKE 'offline:%' AND state != "
        "'resolved' GROUP BY device").fetchall())
    return [d | {"offline_since": since.get(d["id"])} for d in devices]


async def customer_points(db: Database, services: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The points, by device id; `services`: the kinds' services by kind name."""
    out = []
    for dev in await db.read(_devices_tx):
        kind = kind_of(dev["kind"])
        if kind is None or dev["kind"] not in kind.screens:
            continue
        why: list[dict[str, Any]] = []
        if not dev["online"]:
            why.append({"what": "device", "since": dev["offline_since"] or dev["last_seen"],
                        "why": f"{dev['kind']} {dev['id']} is offline"})
        if kind.problems is not None:
            why += kind.problems(services[kind.name])
        why.sort(key=lambda p: p["since"])
        out.append({"device": dev["id"], "kind": dev["kind"],
                    "page": kind.screens[dev["kind"]].format(dev=dev["id"]),
                    "state": "degraded" if why else "ok",
                    "since": why[0]["since"] if why else None, "why": why})
    return out


def add_screen_routes(app: FastAPI, db: Database, services: Mapping[str, Any]) -> None:
    @app.get("/customer-points", tags=["staff"], response_model=list[CustomerPointOut])
    async def list_customer_points() -> list[dict[str, Any]]:
        """The customer-facing points (kiosks, mirrors) by device id: `ok` or `degraded`, since
        when (`since`, unix ms) and why (device offline, stock API down)."""
        return await customer_points(db, services)

    @app.get("/web/screen.js", include_in_schema=False)
    async def screen_js() -> FileResponse:
        return FileResponse(WEB / "screen.js", media_type="text/javascript")

    @app.get("/web/aisle.js", include_in_schema=False)
    async def aisle_js() -> FileResponse:  # the endless aisle's step (docs/endless-aisle.md)
        return FileResponse(WEB / "aisle.js", media_type="text/javascript")
