"""Over-the-air updates over HTTP (docs/ota.md): firmware bundles and staged rollouts.

    POST /firmware                        upload a bundle (the zip `phygital firmware build` writes)
    GET  /firmware                        bundles and rollouts
    POST /firmware/rollouts               start a rollout (canary, a percentage, all)
    GET  /firmware/rollouts/{rollout_id}  one rollout, device by device
    POST /firmware/rollouts/{rollout_id}/halt

Writes need `admin` (whoever can change the firmware can open every door), reads `read`
(their rows in gateway.http.auth.POLICY). No answer holds a key or a signature: a rollout is
versions, devices and states.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.devices import ota
from gateway.devices.ota_service import DEFAULT_DEADLINE_S, MAX_DEADLINE_S, OtaError
from gateway.devices.protocol import DEVICE_ID_RE
from gateway.devices.rollout import MAX_DEVICES
from gateway.http import auth

if TYPE_CHECKING:
    from gateway.devices.ota_service import OtaService

ZIP_TYPES = ("application/zip", "application/octet-stream", "application/x-zip-compressed")


class BundleOut(BaseModel):
    version: str = Field(description="what a device's birth reports as `fw` once it runs it")
    kinds: list[str] = Field(description="the device kinds it is for")
    boards: list[str] = Field(description="the board names it is for (`sim`: the virtual rig)")
    min_heap: int = Field(description="bytes of heap a device needs to take it")
    files: int
    bytes: int = Field(description="the .mpy files' total size")
    sha256: str = Field(description="the manifest's sha256 (what the offers are signed over)")
    uploaded: int | None = Field(description="unix ms")


class UploadOut(BundleOut):
    created: bool = Field(description="false: this very bundle was already there")


class RolloutDeviceOut(BaseModel):
    device: str
    stage: Literal["canary", "percent", "all"]
    state: Literal["waiting", "offered", "installed", "failed"]
    offered: int | None = Field(description="unix ms of the offer")
    done: int | None = Field(description="unix ms it was installed or failed")
    reason: str | None = Field(description="why it failed; `already`: it ran the version before")


class RolloutOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "ro-0a1b2c3d4e5f", "version": "0.2.0", "status": "running", "reason": None,
        "stage": "percent", "percent": 50, "deadline_s": 600, "created": 1795000000000,
        "updated": 1795000123456,
        "counts": {"waiting": 1, "offered": 1, "installed": 1, "failed": 0},
        "devices": [{"device": "pad-1", "stage": "canary", "state": "installed",
                     "offered": 1795000000000, "done": 1795000100000, "reason": None}]}]})
    id: str
    version: str
    status: Literal["running", "done", "halted"]
    reason: str | None = Field(description="why it halted")
    stage: Literal["canary", "percent", "all"] = Field(description="the stage being offered")
    percent: int
    deadline_s: int = Field(description="a device must be back on the version this long after its offer")
    created: int
    updated: int
    counts: dict[str, int] = Field(description="devices per state")
    devices: list[RolloutDeviceOut]


class FirmwareOut(BaseModel):
    bundles: list[BundleOut]
    rollouts: list[RolloutOut] = Field(description="oldest first")
    chunks_served: int = Field(description="chunks answered since the gateway started")


class RolloutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=32, description="an uploaded bundle's version")
    devices: list[str] | None = Field(
        default=None, max_length=MAX_DEVICES,
        description="the devices to update (default: every known device of the bundle's kinds "
                    "that can update over the air)")
    canary: str | None = Field(default=None, max_length=32,
                               description="the first device alone (default: the first id)")
    percent: int = Field(default=25, ge=0, le=100,
                         description="the second stage: this share of the others (rounded up)")
    deadline_s: int = Field(default=DEFAULT_DEADLINE_S, ge=10, le=MAX_DEADLINE_S,
                            description="halt when a device is not back on the version this "
                                        "long after its offer")


def _refused(exc: OtaError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


def router(svc: OtaService) -> APIRouter:
    r = APIRouter(tags=["firmware"])

    @r.post("/firmware", status_code=201, response_model=UploadOut,
            openapi_extra={"requestBody": {"required": True, "content": {"application/zip": {
                "schema": {"type": "string", "format": "binary"}}}}},
            responses={200: {"model": UploadOut, "description": "this very bundle was already there"},
                       409: {"description": "the version exists with other content"},
                       413: {"description": f"over {ota.MAX_BUNDLE // 1024} KiB"},
                       415: {"description": "not application/zip"},
                       422: {"description": "not a valid bundle (the detail says what and what to do)"}})
    async def upload(request: Request, response: Response) -> Any:
        """A firmware bundle, the zip `phygital firmware build` writes, as the body
        (`Content-Type: application/zip`, at most 1 MiB). Checked whole (manifest, paths,
        every file's size and sha256) before it is kept."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ZIP_TYPES:
            raise HTTPException(415, f"send the bundle as Content-Type: application/zip (got "
                                     f"{ctype or 'none'})")
        try:
            view, created = await svc.upload(await request.body())
        except OtaError as exc:
            raise _refused(exc) from None
        if not created:
            response.status_code = 200
        return view | {"created": created}

    @r.get("/firmware", response_model=FirmwareOut)
    async def firmware() -> Any:
        """The bundles the gateway keeps and every rollout."""
        return {"bundles": svc.bundle_views(), "rollouts": svc.rollout_views(),
                "chunks_served": svc.served}

    @r.post("/firmware/rollouts", status_code=201, response_model=RolloutOut,
            responses={404: {"description": "no such bundle"},
                       409: {"description": "another rollout is running"},
                       422: {"description": "a device cannot take it (the detail says which and why)"}})
    async def start(body: RolloutIn) -> Any:
        """Start a staged rollout: the canary, then `percent` % of the others, then the rest;
        a stage starts when every device of the one before is back on the new version. Halts
        by itself when a device reports `ota.failed` or `ota.rolled_back`, refuses the offer,
        or is not back within `deadline_s`. One rollout runs at a time."""
        for d in [*(body.devices or []), *([body.canary] if body.canary else [])]:
            if not DEVICE_ID_RE.match(d):
                raise HTTPException(422, f"bad device id {d[:40]!r}")
        if body.devices is not None and len(set(body.devices)) != len(body.devices):
            raise HTTPException(422, "devices: each device once")
        try:
            return await svc.start(body.version, body.devices, body.canary, body.percent,
                                   body.deadline_s)
        except OtaError as exc:
            raise _refused(exc) from None

    @r.get("/firmware/rollouts/{rollout_id}", response_model=RolloutOut,
           responses={404: {"description": "no such rollout"}})
    async def get_rollout(rollout_id: str) -> Any:
        view = svc.rollout_view(rollout_id)
        if view is None:
            raise HTTPException(404, f"no rollout {rollout_id[:40]!r}: GET /firmware lists them")
        return view

    @r.post("/firmware/rollouts/{rollout_id}/halt", response_model=RolloutOut,
            responses={404: {"description": "no such rollout"}})
    async def halt(rollout_id: str, request: Request) -> Any:
        """Halt a running rollout: no device is offered it any more, downloads in progress stop
        (their chunks are refused). Halting a finished or halted rollout changes nothing."""
        principal = request.scope.get("state", {}).get("principal", auth.ANONYMOUS)
        view = await svc.halt(rollout_id, principal.name)
        if view is None:
            raise HTTPException(404, f"no rollout {rollout_id[:40]!r}: GET /firmware lists them")
        return view

    return r
