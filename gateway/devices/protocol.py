"""The device protocol (docs/protocol.md, version 1): topics, envelopes, validation, encoding.

Pure: no I/O, no clock. Everything the gateway receives goes through `decode`, which either
returns a typed message or raises `ProtocolError` with one of the rejection reasons the
protocol names (`oversized`, `malformed`, `bad-version`, `bad-device-id`, `topic-mismatch`,
`bad-field`). The bounds it enforces are the ones docs/protocol.md ("Limits") states.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import orjson

VERSION: Final = 1
MAX_PAYLOAD: Final = 4096
PREFIX: Final = "pe/1"
GATEWAY_ID: Final = "gateway"
GATEWAY_STATE_TOPIC: Final = f"{PREFIX}/gateway/state"
#: ids no device may use: `gateway` names the gateway's state topic, `pe-gateway` is the
#: gateway's MQTT client id and broker user (a device connecting with it as its client id
#: would knock the gateway off a broker that does not bind ids to users)
RESERVED_IDS: Final = frozenset({GATEWAY_ID, "pe-gateway"})

DEVICE_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")
EVENT_TYPE_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
MAX_ID_LEN: Final = 64
MAX_TYPE_LEN: Final = 64
MAX_STR_LEN: Final = 64      # birth strings (kind, fw, cfg, epoch, reset) and each of `caps`
MAX_REASON_LEN: Final = 256  # a reply's `reason`

#: Counters (`seq`, and `session`, `boot`, `first`, `next` of a birth) are at most 2^53 - 1:
#: the largest integer every JSON parser keeps exactly (RFC 8259 section 6: IEEE doubles, as
#: JavaScript and many device libraries read numbers), far inside SQLite's signed 64 bits so
#: `seq + 1` never overflows there, and a device at 1,000 events/s takes 285,000 years to
#: reach it. orjson reads integers up to 2^64 - 1 as ints: without this bound seq or t in
#: [2^63, 2^64) reached the SQLite insert and failed there (`internal-error`).
MAX_COUNTER: Final = 2**53 - 1
#: `t` (ms since the Unix epoch) is at most 9999-12-31T23:59:59.999Z, the last instant a
#: 4-digit year (ISO 8601, Python's datetime) shows; below 2^53 too.
MAX_T: Final = 253_402_300_799_999

#: Rejection reasons `decode` raises (the protocol's list minus `unknown-device`: that one
#: needs state, see gateway.devices.ingest).
REASONS: Final = ("oversized", "malformed", "bad-version", "bad-device-id", "topic-mismatch",
                  "bad-field")

#: Channels a device publishes on, and the ones the gateway publishes on.
INBOUND: Final = ("birth", "status", "evt", "reply")
OUTBOUND: Final = ("cmd", "ctl")
#: Requests a device publishes that are not journaled or ingested: `ota` (firmware chunks,
#: gateway/devices/ota.py `parse_request`; answered on `ctl`, docs/ota.md).
REQUESTS: Final = ("ota",)
SUBSCRIPTIONS: Final = tuple(f"{PREFIX}/+/{ch}" for ch in INBOUND + REQUESTS)

REPLY_STATUSES: Final = ("accepted", "done", "rejected", "failed")

Channel: TypeAlias = Literal["birth", "status", "evt", "reply", "cmd", "ctl"]


class ProtocolError(ValueError):
    """A message the protocol says to drop; `reason` is the counter name at `GET /stats`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Birth:
    dev: str
    t: int | None
    kind: str
    fw: str
    caps: tuple[str, ...]
    cfg: str
    session: int
    boot: int
    reset: str | None
    epoch: str
    first: int
    next: int


@dataclass(frozen=True, slots=True)
class Status:
    dev: str
    t: int | None
    online: bool
    session: int
    epoch: str | None = None  # the journal epoch of the connection (None: older devices)


# not frozen (the other messages are): one is built per event on the ingest hot path, and a
# frozen dataclass's __init__ (object.__setattr__ per field) costs ~3x as much
@dataclass(slots=True)
class Event:
    dev: str
    type: str
    seq: int
    t: int | None
    body: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Reply:
    dev: str
    id: str
    t: int | None
    status: str
    reason: str | None
    result: dict[str, Any] | None = field(hash=False)

    @property
    def final(self) -> bool:
        return self.status != "accepted"


Message: TypeAlias = Birth | Status | Event | Reply


def is_device_id(value: object) -> bool:
    return isinstance(value, str) and DEVICE_ID_RE.match(value) is not None \
        and value not in RESERVED_IDS


def topic(dev: str, channel: Channel) -> str:
    return f"{PREFIX}/{dev}/{channel}"


# valid topics seen, parsed: a store has a few thousand (devices x 4 channels) and every
# inbound message needs one; bounded by clearing it when full
_TOPICS: dict[str, tuple[str, str]] = {}
_TOPICS_MAX: Final = 65_536


def parse_topic(topic_: str) -> tuple[str, str]:
    """`pe/1/{dev}/{channel}` → `(dev, channel)` for the channels a device publishes on."""
    hit = _TOPICS.get(topic_)
    if hit is not None:
        return hit
    parts = topic_.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX or parts[3] not in INBOUND:
        raise ProtocolError("topic-mismatch", f"not a device topic: {topic_!r}")
    if not is_device_id(parts[2]):
        raise ProtocolError("bad-device-id", device_id_problem(parts[2]))
    if len(_TOPICS) >= _TOPICS_MAX:
        _TOPICS.clear()
    hit = _TOPICS[topic_] = (parts[2], parts[3])
    return hit


def device_id_problem(dev: str) -> str:
    """Why `dev` is not a device id, for a refusal's detail."""
    if dev in RESERVED_IDS:
        return f"device id {dev!r} is reserved (for the gateway)"
    return f"bad device id {dev!r}: 1-32 characters of a-z, 0-9 and '-', not starting with '-'"


# -- decoding ---------------------------------------------------------------------------------

def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field(obj: dict[str, Any], name: str, where: str = "") -> Any:
    if name not in obj:
        raise ProtocolError("bad-field", f"missing {where}{name}")
    return obj[name]


def _int(obj: dict[str, Any], name: str, where: str = "", *, minimum: int = 0,
         maximum: int = MAX_COUNTER) -> int:
    v = _field(obj, name, where)
    if not _is_int(v) or not minimum <= v <= maximum:
        raise ProtocolError("bad-field", f"{where}{name} must be an integer "
                                         f"{minimum}..{maximum}, got {_short(v)}")
    return int(v)


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _str(obj: dict[str, Any], name: str, where: str = "", *, max_len: int = 256,
         allow_empty: bool = False) -> str:
    v = _field(obj, name, where)
    if not isinstance(v, str) or len(v) > max_len or (not v and not allow_empty):
        raise ProtocolError("bad-field",
                            f"{where}{name} must be a string of 1..{max_len} characters")
    return v


def _opt_str(obj: dict[str, Any], name: str, where: str = "", *, max_len: int = 256) -> str | None:
    v = obj.get(name)
    if v is not None and (not isinstance(v, str) or len(v) > max_len):
        raise ProtocolError("bad-field",
                            f"{where}{name} must be null or a string of at most {max_len} "
                            "characters")
    return v


def _time(obj: dict[str, Any]) -> int | None:
    t = _field(obj, "t")
    if t is not None and (not _is_int(t) or not 0 <= t <= MAX_T):
        raise ProtocolError("bad-field", f"t must be null or milliseconds since the epoch "
                                         f"0..{MAX_T}, got {_short(t)}")
    return None if t is None else int(t)


def _body(obj: dict[str, Any]) -> dict[str, Any]:
    body = _field(obj, "body")
    if not isinstance(body, dict):
        raise ProtocolError("bad-field", "body must be an object")
    return body


def decode_envelope(topic_: str, payload: bytes) -> tuple[str, dict[str, Any]]:
    """Checks shared by every inbound message; returns `(channel, object)`."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("oversized", f"{len(payload)} bytes > {MAX_PAYLOAD}")
    dev, channel = parse_topic(topic_)
    # orjson (several times faster than json, the largest item of the ingest loop) is strict:
    # invalid UTF-8, lone surrogates, NaN/Infinity and numbers too large for a double are
    # errors; integers beyond 64 bits are read as floats (then fail the integer checks below),
    # integers up to 2^64 - 1 as ints (the bounds in `_int`/`_time` refuse what is too large)
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("malformed", f"not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "payload is not a JSON object")
    v = obj.get("v")
    if not _is_int(v) or v != VERSION:
        raise ProtocolError("bad-version", f"v={v!r}, this gateway speaks v={VERSION}")
    d = _field(obj, "dev")
    if not isinstance(d, str):
        raise ProtocolError("bad-field", "dev must be a string")
    if d != dev:
        raise ProtocolError("topic-mismatch", f"dev={d!r} published on {topic_!r}")
    _str(obj, "type", max_len=MAX_TYPE_LEN)
    return channel, obj


_match_event_type = EVENT_TYPE_RE.match


def decode(topic_: str, payload: bytes) -> Message:
    """Validate one inbound MQTT message; raise `ProtocolError(reason)` if the protocol says
    to drop it.

    An event (almost all of the traffic) first takes a fast path: the same orjson parse, then
    the checks of `decode_checked` inline (no helper calls), accepting only what
    `decode_checked` accepts and building the same `Event`; anything else goes through
    `decode_checked`, which says why (issue 18: ~4.4 -> ~1.7 us per 180 B event; a typed
    msgspec decode measured no faster once the body is parsed by orjson too, which it must
    be for the two to accept the same bodies: tests/gateway/devices/test_gateway_protocol.py
    compares both paths)."""
    hit = _TOPICS.get(topic_)
    if hit is not None and hit[1] == "evt" and len(payload) <= MAX_PAYLOAD:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is dict:
            v, seq, t, body, mtype = (obj.get("v"), obj.get("seq"), obj.get("t"),
                                      obj.get("body"), obj.get("type"))
            if (type(v) is int and v == VERSION and obj.get("dev") == hit[0]
                    and type(seq) is int and 1 <= seq <= MAX_COUNTER
                    and (t is None and "t" in obj or type(t) is int and 0 <= t <= MAX_T)
                    and type(body) is dict and type(mtype) is str and _match_event_type(mtype)):
                return Event(dev=hit[0], type=mtype, seq=seq, t=t, body=body)
    return decode_checked(topic_, payload)


def decode_checked(topic_: str, payload: bytes) -> Message:
    """`decode` one check at a time, each with its refusal (reason and detail)."""
    channel, obj = decode_envelope(topic_, payload)
    dev: str = obj["dev"]
    mtype: str = obj["type"]
    t = _time(obj)
    body = _body(obj)
    if channel == "birth":
        if mtype != "birth":
            raise ProtocolError("bad-field", f"type {mtype!r} on a birth topic")
        caps = _field(body, "caps", "body.")
        if not isinstance(caps, list) or not all(
                isinstance(c, str) and 0 < len(c) <= MAX_STR_LEN for c in caps):
            raise ProtocolError("bad-field", "body.caps must be a list of strings of "
                                             f"1..{MAX_STR_LEN} characters")
        first = _int(body, "first", "body.", minimum=1)
        nxt = _int(body, "next", "body.", minimum=1)
        if nxt < first:
            raise ProtocolError("bad-field", f"body.next ({nxt}) < body.first ({first})")
        return Birth(dev=dev, t=t, kind=_str(body, "kind", "body.", max_len=MAX_STR_LEN),
                     fw=_str(body, "fw", "body.", max_len=MAX_STR_LEN), caps=tuple(caps),
                     cfg=_str(body, "cfg", "body.", max_len=MAX_STR_LEN),
                     session=_int(body, "session", "body."),
                     boot=_int(body, "boot", "body."),
                     reset=_opt_str(body, "reset", "body.", max_len=MAX_STR_LEN),
                     epoch=_str(body, "epoch", "body.", max_len=MAX_STR_LEN), first=first,
                     next=nxt)
    if channel == "status":
        if mtype not in ("online", "offline"):
            raise ProtocolError("bad-field", f"status type must be online/offline, not {mtype!r}")
        return Status(dev=dev, t=t, online=mtype == "online",
                      session=_int(body, "session", "body."),
                      epoch=_opt_str(body, "epoch", "body.", max_len=64))
    if channel == "evt":
        if not EVENT_TYPE_RE.match(mtype):
            raise ProtocolError("bad-field", f"bad event type {mtype!r}")
        return Event(dev=dev, type=mtype, seq=_int(obj, "seq", minimum=1), t=t, body=body)
    # reply
    if mtype != "reply":
        raise ProtocolError("bad-field", f"type {mtype!r} on a reply topic")
    cid = _str(obj, "id", max_len=MAX_ID_LEN)
    status = _field(body, "status", "body.")
    if status not in REPLY_STATUSES:
        raise ProtocolError("bad-field", f"body.status must be one of {', '.join(REPLY_STATUSES)}")
    result = body.get("result")
    if result is not None and not isinstance(result, dict):
        raise ProtocolError("bad-field", "body.result must be an object or null")
    return Reply(dev=dev, id=cid, t=t, status=status,
                 reason=_opt_str(body, "reason", "body.", max_len=MAX_REASON_LEN),
                 result=result)


# -- encoding (gateway → device) -------------------------------------------------------------

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _encode(obj: dict[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode()


def encode_ack(dev: str, epoch: str, upto: int, now: int) -> bytes:
    # one per device per batch, strings and ints only: orjson (no NaN/big-int concerns here;
    # `_encode` stays strict for commands, whose args come from API callers)
    return orjson.dumps({"v": VERSION, "dev": dev, "type": "ack", "t": now,
                    "body": {"epoch": epoch, "upto": upto, "now": now}})


def encode_ctl_new_epoch(dev: str, epoch: str, upto: int, new: str, now: int) -> bytes:
    """Tell a device whose journal was rolled back to go on in epoch `new` (docs/protocol.md,
    "Journal rolled back: `new_epoch`")."""
    return _encode({"v": VERSION, "dev": dev, "type": "new_epoch", "t": now,
                    "body": {"epoch": epoch, "upto": upto, "new": new, "now": now}})


def encode_ctl_rebirth(dev: str, now: int) -> bytes:
    return _encode({"v": VERSION, "dev": dev, "type": "rebirth", "t": now, "body": {}})


def encode_cmd(dev: str, command_id: str, name: str, args: dict[str, Any], deadline: int,
               now: int) -> bytes:
    """A command envelope; raises `ProtocolError("oversized")` if it would not fit a device."""
    payload = _encode({"v": VERSION, "dev": dev, "type": "cmd", "id": command_id, "t": now,
                       "body": {"name": name, "args": args, "deadline": deadline}})
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("oversized", f"command is {len(payload)} bytes > {MAX_PAYLOAD}")
    return payload


def encode_gateway_state(online: bool, now: int | None) -> bytes:
    return _encode({"v": VERSION, "dev": GATEWAY_ID, "type": "online" if online else "offline",
                    "t": now, "body": {}})

