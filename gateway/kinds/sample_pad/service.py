"""Sample pads: the catalog that turns a tag on a pad into content for a screen.

A sample id (read from the tag: `S-1001`) maps to content (title, image, url, description).
Tags without a readable id are mapped by UID: a catalog entry may name the `uid` of the tag
attached to that sample. `tag.placed` events on the stream (and in `GET /events`) carry the
resolved `content` (or `null`).

The catalog lives in the `samples` table. `samples.json` seeds it at every start; `PUT
/samples/{id}` edits the table only (the file is never written: it may be a packaged, read-only
or version-controlled file). Each imported entry remembers a hash of its file version, so at
the next start an entry is re-imported only if the file's entry changed: API edits survive
restarts, and an edit made in the file still wins over an older API edit. File format: an
object keyed by sample id (`{"S-1001": {"title": ...}}`), `{"samples": [{"id": ...}]}`, or a
bare list of objects with `id`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from gateway.kinds.base import KindService
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.pads")

SAMPLE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
UID_RE = re.compile(r"(?:[0-9a-f]{8}|[0-9a-f]{14})\Z")
GTIN_RE = re.compile(r"[0-9]{8,14}\Z")
FIELDS = ("id", "title", "image", "url", "description", "uid", "gtin")
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
    gtin = raw.get("gtin")
    if gtin is not None and (not isinstance(gtin, str) or not GTIN_RE.match(gtin)):
        raise CatalogError(f"sample {sid}: gtin {gtin!r} must be 8 to 14 digits (the product "
                           "in the stock source)")
    out["gtin"] = gtin
    return out


def parse_catalog(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and "samples" in data:
        data = data["samples"]
    if isinstance(data, dict):
        if not all(isinstance(v, dict) for v in data.values()):  # found by tests/gateway/test_fuzz.py
            raise CatalogError('expected {"<id>": {"title": ...}, ...}: every sample an object')
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


def _seed_hash(sample: dict[str, Any]) -> str:
    if sample.get("gtin") is None:  # as before `gtin` existed: no re-import on upgrade
        sample = {k: v for k, v in sample.items() if k != "gtin"}
    canon = json.dumps(sample, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def _import_tx(store: Store, samples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Import file entries that are new or changed since their last import."""
    changed = 0
    with store.transaction():
        for s in samples:
            seed = _seed_hash(s)
            if store.sample_seed(s["id"]) == seed and store.get_sample(s["id"]) is not None:
                continue  # unchanged in the file: keep any API edit
            if s["uid"]:
                other = store.sample_by_uid(s["uid"])
                if other is not None and other["id"] != s["id"]:
                    log.warning("uid moved by samples file uid=%s from=%s to=%s", s["uid"],
                                other["id"], s["id"])
                    store.put_sample({**other, "uid": None})
            store.put_sample(s, seed=seed)
            changed += 1
        return store.list_samples(), changed


def _put_tx(store: Store, sample: dict[str, Any]) -> list[dict[str, Any]]:
    with store.transaction():
        if sample["uid"]:
            other = store.sample_by_uid(sample["uid"])
            if other is not None and other["id"] != sample["id"]:
                raise CatalogConflict(f"uid {sample['uid']} already maps to sample {other['id']}; "
                                      f"clear it there first (PUT /samples/{other['id']})")
        store.put_sample(sample)
        return store.list_samples()


def _last_tag_tx(store: Store, pad: str) -> dict[str, Any] | None:
    """The pad's latest tag.placed / tag.removed event (the events_by_device index)."""
    row = store.conn.execute(
        "SELECT type, body, t_gateway FROM events WHERE device = ? AND type IN "
        "('tag.placed', 'tag.removed') ORDER BY id DESC LIMIT 1", (pad,)).fetchone()
    return None if row is None else {"type": row["type"], "body": json.loads(row["body"]),
                                     "at": row["t_gateway"]}


class PadsService(KindService):
    """The sample catalog, cached in memory for enrichment; what a pad's kiosk shows."""

    def __init__(self, db: Database, samples_file: Path | None = None,
                 stock: Any = None, texts: Any = None) -> None:
        self.db = db
        self.samples_file = samples_file
        self.stock = stock  # the store's stock source (the fitting rooms'), for price and stock
        self.texts = texts  # the kiosk page's words (gateway.http.screen_texts.ScreenTexts)
        self._by_id: dict[str, dict[str, Any]] = {}
        self._by_uid: dict[str, str] = {}

    async def load(self) -> None:
        if self.samples_file is not None:
            if not self.samples_file.is_file():
                raise CatalogError(f"samples file {self.samples_file} not found (--samples)")
            try:
                samples = parse_catalog(json.loads(self.samples_file.read_text("utf-8")))
            except (OSError, ValueError) as exc:
                raise CatalogError(f"cannot load {self.samples_file}: {exc}") from exc
            catalog, changed = await self.db.write(_import_tx, samples)
            log.info("samples loaded file=%s entries=%d imported=%d", self.samples_file,
                     len(samples), changed)
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
        catalog = await self.db.write(_put_tx, sample)
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

    async def pad_view(self, pad: str) -> dict[str, Any]:
        """What the kiosk of `pad` shows: the tag resting on it (null: idle), the sample's
        catalog content, and from the stock source (by the sample's `gtin`) the product
        (price, colour), its variants (other colours and sizes, with stock here and in other
        stores), `stock_error` when the stock source failed, and `missing`: what the catalog
        and stock do not say."""
        last = await self.db.read(_last_tag_tx, pad)
        out: dict[str, Any] = {"pad": pad, "tag": None, "content": None, "product": None,
                               "variants": [], "stock_error": None, "missing": []}
        if last is None or last["type"] != "tag.placed":
            return out
        body = last["body"]
        uid, sample = body.get("uid"), body.get("sample")
        out["tag"] = {"uid": uid, "sample": sample, "since": last["at"]}
        out["content"] = self.content_for(sample, uid)
        missing = out["missing"]
        if out["content"] is None:
            missing.append("content")
        else:
            missing += [f for f in ("image", "description") if not out["content"].get(f)]
        gtin = self._by_id[out["content"]["id"]]["gtin"] if out["content"] else None
        if self.stock is None or not gtin:
            missing += ["price", "colours", "stock"]
            return out
        try:
            out["product"] = await self.stock.product(gtin)
            out["variants"] = await self.stock.variants(gtin)
        except ValueError as exc:  # StockError: the API is down; the catalog content still shows
            out["stock_error"] = str(exc)
            log.warning("stock lookup for pad=%s gtin=%s failed: %s", pad, gtin, exc)
        if out["product"] is None:
            missing += ["price", "colours", "stock"]
        return out
