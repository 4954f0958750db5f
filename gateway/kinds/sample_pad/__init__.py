"""Sample pads: RFID pads next to kiosks and the sample catalog (docs/protocol.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.kinds.base import CliFlag, ConfigKey, DeviceKind, KindContext


def _build(ctx: KindContext) -> Any:
    from gateway.http.screen_texts import ScreenTexts
    from gateway.kinds.sample_pad.service import PadsService
    s = ctx.settings
    return PadsService(ctx.db, s["samples_file"], stock=ctx.services["fitting"].stock,
                       texts=ScreenTexts.load(s["screens_texts_file"], s["screens_language"]))


def _router(pads: Any) -> Any:
    from gateway.kinds.sample_pad.api import router
    return router(pads)


def _render(pads: Any, kind: str, data: dict[str, Any], reveal: bool) -> dict[str, Any]:
    return pads.enrich(data) if kind == "event" else data  # tag.placed: the sample's content


def _errors() -> tuple[type[Exception], ...]:
    from gateway.http.screen_texts import TextsError
    from gateway.kinds.sample_pad.service import CatalogError
    return (CatalogError, TextsError)


def _problems(pads: Any) -> list[dict[str, Any]]:
    stock = pads.stock  # the kiosk shows price and stock from it
    return stock.problems() if hasattr(stock, "problems") else []


KIND = DeviceKind(
    name="pads",
    apps={"sample-pad": ("edge.apps.pad", "SamplePad")},
    docs="docs/protocol.md",
    build=_build,
    settings=("samples_file", "screens_texts_file", "screens_language"),
    needs=("fitting",),  # the store's stock source (price, colours, stock) is the fitting rooms'
    router=_router,
    render=_render,
    auth=(("GET", "/kiosk", ()),),  # the kiosk page: its data calls need tokens (role kiosk)
    screens={"sample-pad": "/kiosk/{dev}"},
    problems=_problems,
    config={"samples": {"file": ConfigKey("samples_file", "path")}},
    flags=(CliFlag("--samples", "samples_file", after="--coap-heartbeat", options={
        "type": Path, "default": None,
        "help": "sample catalog JSON (loaded at start, API edits written back)"}),),
    errors=_errors,
)
