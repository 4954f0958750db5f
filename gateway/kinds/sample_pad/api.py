"""HTTP API of the sample catalog (docs/api.md): what a sample pad's tag shows."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.devices.protocol import is_device_id
from gateway.http.screen_texts import inject
from gateway.kinds.sample_pad.service import CatalogConflict, CatalogError, PadsService

KIOSK_HTML = Path(__file__).with_name("kiosk.html")


class SampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    image: str | None = None
    url: str | None = None
    description: str | None = None
    uid: str | None = Field(default=None,
                            description="tag UID (8 or 14 hex digits) mapped to this sample")
    gtin: str | None = Field(default=None, description="the product this sample stands for in "
                                                       "the stock source (8-14 digits): the "
                                                       "kiosk shows its price, colours, stock")


class SampleOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "S-1001", "title": "Linen shirt", "image": "/img/s1001.jpg",
        "url": "https://example.test/s-1001", "description": "Washed linen, blue",
        "uid": "04a1b2c3d4e5f6", "gtin": None}]})
    id: str
    title: str
    image: str | None
    url: str | None
    description: str | None
    uid: str | None = Field(description="tag UID mapped to this sample")
    gtin: str | None = Field(default=None, description="the product in the stock source")


class PadTagOut(BaseModel):
    uid: str | None
    sample: str | None = Field(description="the sample id the tag carries, if any")
    since: int = Field(description="unix ms (gateway time) it was placed")


class PadViewOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "pad": "pad-1", "tag": {"uid": "04102030405001", "sample": "S-1001", "since": 1795000000000},
        "content": {"id": "S-1001", "title": "Oak plank, natural oil", "image": None,
                    "url": "/catalog/flooring/oak-natural", "description": "Engineered oak"},
        "product": {"gtin": "09506000200019", "style": "oak-plank", "name": "Oak plank",
                    "colour": "natural", "size": "14 mm", "price": 54.9, "currency": "EUR"},
        "variants": [], "stock_error": None, "missing": ["image"]}]})
    pad: str
    tag: PadTagOut | None = Field(description="the tag resting on the pad; null: idle")
    content: dict[str, Any] | None = Field(description="the sample's catalog content (null: "
                                                       "not in the catalog)")
    product: dict[str, Any] | None = Field(description="from the stock source by the sample's "
                                                       "`gtin` (price, colour); null: unknown")
    variants: list[dict[str, Any]] = Field(description="the product's colours and sizes, each "
                                                       "with `here` and `nearby` (other stores); "
                                                       "with head office configured also "
                                                       "`nearby_source` (`head-office`, or "
                                                       "`unavailable` with `nearby_error` and "
                                                       "`nearby` {}: docs/chain.md)")
    stock_error: str | None = Field(description="why product/variants are missing: the stock "
                                                "source failed")
    missing: list[str] = Field(description="what the catalog and stock do not say: content, "
                                           "image, description, price, colours, stock")


def router(pads: PadsService) -> APIRouter:
    r = APIRouter()

    @r.get("/samples", response_model=list[SampleOut])
    async def list_samples() -> list[dict[str, Any]]:
        return pads.list()

    @r.get("/samples/{sample_id}", response_model=SampleOut)
    async def get_sample(sample_id: str) -> dict[str, Any]:
        s = pads.get(sample_id)
        if s is None:
            raise HTTPException(404, f"unknown sample {sample_id!r} (PUT /samples/{{id}} adds one)")
        return s

    @r.put("/samples/{sample_id}", response_model=SampleOut)
    async def put_sample(sample_id: str, body: SampleIn) -> dict[str, Any]:
        try:
            return await pads.put(sample_id, body.model_dump())
        except CatalogConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except CatalogError as exc:
            raise HTTPException(422, str(exc)) from None

    @r.get("/pads/{pad}", response_model=PadViewOut)
    async def pad_view(pad: str) -> dict[str, Any]:
        """What the kiosk of a sample pad shows: the sample resting on it (from its latest
        tag event), its catalog content, price, colours and stock here and in other stores."""
        if not is_device_id(pad):
            raise HTTPException(404, f"unknown pad {pad!r}: not a valid device id")
        return await pads.pad_view(pad)

    @r.get("/kiosk/{pad}", response_class=HTMLResponse)
    async def kiosk(pad: str, lang: str | None = Query(None, max_length=16, description=
                                                       "language of the page (default: [screens] "
                                                       "language)")) -> HTMLResponse:
        """The sample kiosk of one pad (static HTML + JS, no CDN; live through /stream): what
        the customer puts on the pad, and a kind word when something does not work."""
        if not is_device_id(pad):
            return HTMLResponse("unknown pad", status_code=404)
        texts = pads.texts.for_page(pad, lang)
        return HTMLResponse(inject(KIOSK_HTML.read_text("utf-8"), pad, texts))

    return r
