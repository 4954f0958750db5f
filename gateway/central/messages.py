"""What head office accepts from the central broker: chain messages as gateway/integrations/
chain.py publishes them, bridge notifications, and the stores' retained gateway state.

Everything else is refused with a reason (counted by the consumer, logged, never stored). The
store id must be the same in the topic and in the envelope: the central broker's ACL confines
a store's bridge user to `chain/1/{store}/#` (docs/chain.md), so the topic's store is the one
the credentials vouch for, and an envelope naming another store is a bad or forged message.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.integrations.chain import PREFIX, STORE_ID_RE

MAX_MESSAGE = 64 * 1024         # bytes of one chain message (a `tag.placed` is ~300)
MAX_TYPE = 100                  # characters of `type`
KIND_RE = re.compile(r"[a-z][a-z_]{0,15}\Z")
DEVICE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")   # protocol device ids, and "gateway"
# `t` (ms since the epoch, the store's clock when the outbox row was committed) picks the
# month partition: a clock years off would create partitions nobody looks at
OLDEST = datetime(2020, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=2)
# a store's stock report (gateway/kinds/fitting_room/nearby.py): `fitting.stock` with
# `data.items` = [{"gtin": 14 digits, "floor": n, "stockroom": n}], at most MAX_STOCK_ITEMS
STOCK_TYPE = "fitting.stock"
MAX_STOCK_ITEMS = 500
MAX_STOCK_COUNT = 1_000_000     # units of one GTIN in one place: more is a bad figure
GTIN_RE = re.compile(r"\d{14}\Z")
# a store's funnel figures for one hour (gateway/analytics/rollup.py report_hours_tx):
# `analytics.hour` with `data` = {"type": "hour", "hour": unix ms of a UTC hour, and the
# counts of FUNNEL_COLS}: the hour's totals as the store knows them now
FUNNEL_TYPE = "analytics.hour"
FUNNEL_COLS = ("entries", "placements", "pad_lifts", "pad_dwell_ms", "sessions", "try_ons",
               "purchases", "units")
MAX_FUNNEL_COUNT = 10_000_000          # people, placements, receipts... in one hour
MAX_FUNNEL_DWELL_MS = 10 ** 12         # pad dwell summed over an hour (~31 years)
HOUR_MS = 3_600_000


class Refused(ValueError):
    """A message head office does not store; `reason` is the counter's label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class StockLine:
    gtin: str
    floor: int
    stockroom: int


@dataclass(frozen=True)
class FunnelHour:
    hour: datetime
    counts: tuple[int, ...]             # FUNNEL_COLS, in that order


@dataclass(frozen=True)
class ChainEvent:
    store: str
    seq: int
    stream_id: int
    type: str
    kind: str
    device: str
    t: datetime
    data: dict[str, Any]
    stock: tuple[StockLine, ...] = ()   # a `fitting.stock` report's lines
    hour: FunnelHour | None = None      # an `analytics.hour` report


@dataclass(frozen=True)
class BridgeState:
    store: str
    up: bool


@dataclass(frozen=True)
class GatewayState:
    store: str
    state: dict[str, Any]


Message = ChainEvent | BridgeState | GatewayState


def _int(m: dict[str, Any], key: str, low: int) -> int:
    v = m.get(key)
    if type(v) is not int or v < low:
        raise Refused("bad_envelope", f"{key} must be an integer >= {low}, got {v!r}")
    return v


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused("bad_json", f"payload is not JSON ({exc})") from None


def _stock(data: dict[str, Any]) -> tuple[StockLine, ...]:
    items = data.get("items")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_STOCK_ITEMS:
        raise Refused("bad_stock", f"items must be a list of 1..{MAX_STOCK_ITEMS} lines")
    lines = []
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("gtin"), str) \
                or not GTIN_RE.match(it["gtin"]):
            raise Refused("bad_stock", "each line needs a 14-digit gtin")
        counts = (it.get("floor"), it.get("stockroom"))
        if not all(type(n) is int and 0 <= n <= MAX_STOCK_COUNT for n in counts):
            raise Refused("bad_stock", f"{it['gtin']}: floor and stockroom must be integers "
                                       f"0..{MAX_STOCK_COUNT}")
        lines.append(StockLine(it["gtin"], it["floor"], it["stockroom"]))
    return tuple(lines)


def _funnel_hour(data: dict[str, Any], now: datetime) -> FunnelHour:
    h = data.get("hour")
    if type(h) is not int or h % HOUR_MS:
        raise Refused("bad_funnel", f"hour must be a whole UTC hour in unix ms, got {h!r}")
    hour = datetime.fromtimestamp(h / 1000, UTC)
    if not OLDEST <= hour <= now + FUTURE_SLACK:
        raise Refused("bad_funnel", f"hour {hour.isoformat()} outside {OLDEST.date()}..now+2 days")
    counts = []
    for c in FUNNEL_COLS:
        v = data.get(c)
        top = MAX_FUNNEL_DWELL_MS if c == "pad_dwell_ms" else MAX_FUNNEL_COUNT
        if type(v) is not int or not 0 <= v <= top:
            raise Refused("bad_funnel", f"{c} must be an integer 0..{top}, got {str(v)[:20]}")
        counts.append(v)
    return FunnelHour(hour, tuple(counts))


def parse(topic: str, payload: bytes, *, now: datetime | None = None) -> Message:
    """The message on `topic`, or `Refused`."""
    if len(payload) > MAX_MESSAGE:
        raise Refused("too_large", f"{len(payload)} bytes, at most {MAX_MESSAGE}")
    levels = topic.split("/")
    if len(levels) == 3 and levels[0] == "chain-bridge" and levels[2] == "state":
        store = levels[1]
        if not STORE_ID_RE.match(store):
            raise Refused("bad_topic", f"store id {store!r} in {topic!r}")
        if payload not in (b"0", b"1"):
            raise Refused("bad_bridge_state", f"expected 0 or 1, got {payload[:20]!r}")
        return BridgeState(store, payload == b"1")
    prefix = PREFIX.split("/")
    if len(levels) != 5 or levels[:2] != prefix:
        raise Refused("bad_topic", f"{topic[:200]!r} is not {PREFIX}/<store>/<kind>/<device>")
    store, kind, device = levels[2:]
    if not STORE_ID_RE.match(store):
        raise Refused("bad_topic", f"store id {store!r} in {topic!r}")
    if (kind, device) == ("gateway", "state"):
        state = _json(payload)
        if not isinstance(state, dict):
            raise Refused("bad_envelope", "gateway state must be a JSON object")
        return GatewayState(store, state)
    if not KIND_RE.match(kind) or not DEVICE_RE.match(device):
        raise Refused("bad_topic", f"kind {kind!r} / device {device!r} in {topic!r}")
    m = _json(payload)
    if not isinstance(m, dict):
        raise Refused("bad_envelope", "a chain message is a JSON object")
    if m.get("v") != 1:
        raise Refused("bad_envelope", f"version {m.get('v')!r}, this head office reads v 1")
    if m.get("store") != store:
        raise Refused("store_mismatch",
                      f"envelope store {str(m.get('store'))[:40]!r} on a topic of {store!r}")
    seq, stream_id, t_ms = _int(m, "seq", 1), _int(m, "stream_id", 0), _int(m, "t", 0)
    typ = m.get("type")
    if not isinstance(typ, str) or not 0 < len(typ) <= MAX_TYPE:
        raise Refused("bad_envelope", f"type must be a string of 1..{MAX_TYPE} characters")
    if typ.partition(".")[0] != kind:
        raise Refused("bad_envelope", f"type {typ!r} on a {kind!r} topic")
    data = m.get("data")
    if not isinstance(data, dict):
        raise Refused("bad_envelope", "data must be a JSON object")
    t = datetime.fromtimestamp(t_ms / 1000, UTC)
    now = now or datetime.now(UTC)
    if not OLDEST <= t <= now + FUTURE_SLACK:
        raise Refused("bad_time", f"t {t.isoformat()} outside {OLDEST.date()}..now+2 days "
                      "(is the store's clock set? NTP)")
    stock = _stock(data) if typ == STOCK_TYPE else ()
    hour = _funnel_hour(data, now) if typ == FUNNEL_TYPE else None
    return ChainEvent(store, seq, stream_id, typ, kind, device, t, data, stock, hour)
