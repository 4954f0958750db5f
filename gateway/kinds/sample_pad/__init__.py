"""Sample pads: RFID pads next to kiosks and the sample catalog (docs/protocol.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.kinds.base import CliFlag, ConfigKey, DeviceKind, KindContext


def _build(ctx: KindContext) -> Any:
    from gateway.kinds.sample_pad.service import PadsService
    return PadsService(ctx.db, ctx.settings["samples_file"])


def _router(pads: Any) -> Any:
    from gateway.kinds.sample_pad.api import router
    return router(pads)


def _render(pads: Any, kind: str, data: dict[str, Any], reveal: bool) -> dict[str, Any]:
    return pads.enrich(data) if kind == "event" else data  # tag.placed: the sample's content


def _errors() -> tuple[type[Exception], ...]:
    from gateway.kinds.sample_pad.service import CatalogError
    return (CatalogError,)


KIND = DeviceKind(
    name="pads",
    apps={"sample-pad": ("edge.apps.pad", "SamplePad")},
    docs="docs/protocol.md",
    build=_build,
    settings=("samples_file",),
    router=_router,
    render=_render,
    config={"samples": {"file": ConfigKey("samples_file", "path")}},
    flags=(CliFlag("--samples", "samples_file", after="--coap-heartbeat", options={
        "type": Path, "default": None,
        "help": "sample catalog JSON (loaded at start, API edits written back)"}),),
    errors=_errors,
)
