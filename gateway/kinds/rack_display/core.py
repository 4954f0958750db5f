"""Rack displays, the pure core: what a like from the online feed is, what a rack is, and what
its display shows (no I/O). docs/rack-display.md."""
from __future__ import annotations

import re
from typing import Any

EVENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}\Z")
PRODUCT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
DEVICE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")   # docs/protocol.md: a device id
LABEL_RE = re.compile(r"[ -~]{0,16}\Z")                # the display's 8x8 font: printable ASCII
MAX_EVENTS = 500          # likes per POST /likes
MAX_PRODUCTS = 100        # products per rack
MAX_LIKES = 999_999_999   # what the display can show (9 digits)


class LikeError(ValueError):
    """A like or a rack the gateway refuses (the message says what to send instead)."""


def validate_like(raw: dict[str, Any]) -> tuple[str, str, int]:
    """`(event id, product, delta)` of one feed event: delta +1 (a like) or -1 (an unlike)."""
    eid, product, delta = raw.get("id"), raw.get("product"), raw.get("delta", 1)
    if not isinstance(eid, str) or not EVENT_ID_RE.match(eid):
        raise LikeError(f"bad event id {eid!r}: 1-128 of A-Z a-z 0-9 . _ : @ / + = - (the feed's own id)")
    if not isinstance(product, str) or not PRODUCT_RE.match(product):
        raise LikeError(f"event {eid}: bad product {product!r}: 1-64 of A-Z a-z 0-9 . _ -")
    if delta not in (1, -1) or isinstance(delta, bool):
        raise LikeError(f"event {eid}: delta must be 1 (like) or -1 (unlike), got {delta!r}")
    return eid, product, int(delta)


def validate_rack(device: str, label: str, products: list[str]) -> tuple[str, list[str]]:
    if not DEVICE_RE.match(device):
        raise LikeError(f"bad device id {device!r}: [a-z0-9][a-z0-9-]{{0,31}} (the display's id)")
    if not LABEL_RE.match(label):
        raise LikeError(f"label {label!r}: at most 16 printable ASCII characters (the display's font)")
    if len(products) > MAX_PRODUCTS:
        raise LikeError(f"a rack has at most {MAX_PRODUCTS} products, got {len(products)}")
    for p in products:
        if not PRODUCT_RE.match(p):
            raise LikeError(f"bad product {p!r}: 1-64 of A-Z a-z 0-9 . _ -")
    return label, sorted(set(products))


def rack_state(label: str, products: list[str], counts: dict[str, int],
               stale: str | None = None) -> dict[str, Any]:
    """What the rack's display shows: the likes of its products, summed (capped at 9 digits),
    its label, and `stale`: the store's words for "last known" (its bottom line while offline)."""
    state: dict[str, Any] = {"likes": min(MAX_LIKES, sum(counts.get(p, 0) for p in products)),
                             "label": label}
    if stale is not None:
        state["stale"] = stale
    return state
