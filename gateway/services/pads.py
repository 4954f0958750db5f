"""Sample pads: the catalog that turns a tag on a pad into content for a screen.

A sample id (read from the tag: `S-1001`) maps to content (title, image, url, description).
Tags without a readable id are mapped by UID: a catalog entry may name the `uid` of the tag
attached to that sample. `tag.placed` events on the stream (and in `GET /events`) carry the
resolved `content` (or `null`).

The catalog lives in the `samples` table; `samples.json` seeds it at start (its entries
overwrite the table's) and, when configured, every API edit is written back to it
(atomically: temp file + rename, inside the DB transaction so a failed write rolls the edit
back). The file stays the human-editable source and the table never disagrees with it
after a restart. File format: `{"samples": [{"id", "title", "image", "url", "description",
"uid"}]}`; a bare list, or an object keyed by sample id, is read too.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ..db import Database
from ..store import Store

log = logging.getLogger("gateway.pads")

SAMPLE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
UID_RE = re.compile(r"(?:[0-9a-f]{8}|[0-9a-f]{14})\Z")
FIELDS = ("id", "title", "image", "url", "description", "uid")
CONTENT_FIELDS = ("id", "title", "image", "url", "description")


class CatalogError(ValueError):
    pass


class CatalogConflict(CatalogError):
    """The edit would map one tag UID to two samples."""


def normalise_uid(uid: object) -> str | None:
    if uid is None:
        return None
    if not isinstance(uid, str):
        raise CatalogError("uid must be a hex string")
    uid = uid.strip().lower().replace(":", "")
    if not UID_RE.match(uid):
        raise CatalogError(f"uid {uid!r} must be 8 or 14 hex digits")
    return uid


def validate_sample(raw: dict[str, Any]) -> dict[str, Any]:
    sid = raw.get("id")
    if not isinstance(sid, str) or not SAMPLE_ID_RE.match(sid):
        raise CatalogError(f"bad sample id {sid!r}: 1-64 of A-Z a-z 0-9 . _ - (e.g. 'S-1001')")
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        raise CatalogError(f"sample {sid}: title is required")
    out: dict[str, Any] = {"id": sid, "title": title}
    for f in ("image", "url", "description"):
        v = raw.get(f)
        if v is not None and not isinstance(v, str):
            raise CatalogError(f"sample {sid}: {f} must be a string or null")
        out[f] = v
    out["uid"] = normalise_uid(raw.get("uid"))
    return out


def parse_catalog(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and "samples" in data:
        data = data["samples"]
    if isinstance(data, dict):
        data = [{"id": k, **v} for k, v in data.items()]
    if not isinstance(data, list) or not all(isinstance(s, dict) for s in data):
        raise CatalogError('expected {"samples": [{"id": ..., "title": ...}, ...]}')
    samples = [validate_sample(s) for s in data]
    ids = [s["id"] for s in samples]
    uids = [s["uid"] for s in samples if s["uid"]]
    if len(set(ids)) != len(ids):
        raise CatalogError("duplicate sample id in catalog")
    if len(set(uids)) != len(uids):
        raise CatalogError("the same uid is mapped to two samples")
    return samples


def _write_file(path: Path, samples: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".samples-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"samples": samples}, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _import_tx(store: Store, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with store.transaction():
        by_uid = {s["uid"]: s["id"] for s in samples if s["uid"]}
        # a uid moving between samples: free it on the old one first
        for s in store.list_samples():
            if s["uid"] and by_uid.get(s["uid"], s["id"]) != s["id"]:
                store.put_sample({**s, "uid": None})
        for s in samples:
            store.put_sample(s)
        return store.list_samples()


def _put_tx(store: Store, sample: dict[str, Any], file: Path | None) -> list[dict[str, Any]]:
    with store.transaction():
        if sample["uid"]:
            other = store.sample_by_uid(sample["uid"])
            if other is not None and other["id"] != sample["id"]:
                raise CatalogConflict(f"uid {sample['uid']} already maps to sample {other['id']}")
        store.put_sample(sample)
        catalog = store.list_samples()
        if file is not None:
            _write_file(file, catalog)
        return catalog


class PadsService:
    """The sample catalog, cached in memory for enrichment."""

    def __init__(self, db: Database, samples_file: Path | None = None) -> None:
        self.db = db
        self.samples_file = samples_file
        self._by_id: dict[str, dict[str, Any]] = {}
        self._by_uid: dict[str, str] = {}

    async def load(self) -> None:
        if self.samples_file is not None and self.samples_file.exists():
            try:
                samples = parse_catalog(json.loads(self.samples_file.read_text("utf-8")))
            except (OSError, ValueError) as exc:
                raise CatalogError(f"cannot load {self.samples_file}: {exc}") from exc
            catalog = await self.db.write(_import_tx, samples)
            log.info("samples loaded file=%s count=%d", self.samples_file, len(samples))
        else:
            catalog = await self.db.read(Store.list_samples)
        self._cache(catalog)

    def _cache(self, catalog: list[dict[str, Any]]) -> None:
        self._by_id = {s["id"]: s for s in catalog}
        self._by_uid = {s["uid"]: s["id"] for s in catalog if s["uid"]}

    def list(self) -> list[dict[str, Any]]:
        return [self._by_id[k] for k in sorted(self._by_id)]

    def get(self, sample_id: str) -> dict[str, Any] | None:
        return self._by_id.get(sample_id)

    async def put(self, sample_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        sample = validate_sample({**fields, "id": sample_id})
        catalog = await self.db.write(_put_tx, sample, self.samples_file)
        self._cache(catalog)
        return self._by_id[sample_id]

    def content_for(self, sample_id: object, uid: object) -> dict[str, Any] | None:
        """Content for a tag: by the sample id it carries, else by its UID."""
        s = self._by_id.get(sample_id) if isinstance(sample_id, str) else None
        if s is None and isinstance(uid, str):
            sid = self._by_uid.get(uid.lower())
            s = self._by_id.get(sid) if sid else None
        return None if s is None else {k: s[k] for k in CONTENT_FIELDS}

    def enrich(self, event: dict[str, Any]) -> dict[str, Any]:
        """`event` with `content` added if it is a `tag.placed`."""
        if event.get("type") != "tag.placed":
            return event
        body = event.get("body") or {}
        return {**event, "content": self.content_for(body.get("sample"), body.get("uid"))}
