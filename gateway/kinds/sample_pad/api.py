"""HTTP API of the sample catalog (docs/api.md): what a sample pad's tag shows."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from gateway.kinds.sample_pad.service import CatalogConflict, CatalogError, PadsService


class SampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    image: str | None = None
    url: str | None = None
    description: str | None = None
    uid: str | None = Field(default=None,
                            description="tag UID (8 or 14 hex digits) mapped to this sample")


class SampleOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "S-1001", "title": "Linen shirt", "image": "/img/s1001.jpg",
        "url": "https://example.test/s-1001", "description": "Washed linen, blue",
        "uid": "04a1b2c3d4e5f6"}]})
    id: str
    title: str
    image: str | None
    url: str | None
    description: str | None
    uid: str | None = Field(description="tag UID mapped to this sample")


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

    return r
