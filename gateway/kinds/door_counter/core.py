"""Door counters: the rules, no I/O (docs/door-counter.md).

A door counter journals `footfall` events (its period's in/out totals, occupancy, time out of
service), `beam.stuck` / `beam.cleared` and `occupancy.reset`. `apply` turns one such event
into what the gateway keeps: the minute it adds to (`MinuteDelta`) and the device's live view
(`Live`). Device bodies are untrusted: a field out of range makes the event unusable for
counts (`BadEvent`, logged and skipped; the event itself stays stored as every event does).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

KIND = "door-counter"
EVENT_TYPES = ("footfall", "beam.stuck", "beam.cleared", "occupancy.reset")
BEAMS = ("A", "B")
MINUTE_MS = 60_000
MAX_PER_PERIOD = 100_000       # crossings a period can hold (a door does ~1 a second at most)
MAX_OCCUPANCY = 100_000        # the firmware's MAX_OCCUPANCY
MAX_PERIOD_S = 3600


class BadEvent(ValueError):
    pass


@dataclass(frozen=True)
class MinuteDelta:
    minute: int                # unix ms of the minute's start
    entries: int
    exits: int
    oos_ms: int
    occupancy: int             # at the end of the period (the latest period wins)


@dataclass(frozen=True)
class Live:
    """What a door counter shows now."""
    occupancy: int = 0
    stuck: tuple[str, ...] = ()       # beams reported stuck and not cleared
    last_minute: int | None = None    # the latest minute with counts
    updated: int = 0                  # unix ms of the event it comes from (its time)

    @property
    def out_of_service(self) -> bool:
        return bool(self.stuck)


@dataclass
class Applied:
    live: Live
    minute: MinuteDelta | None = None
    notes: list[str] = field(default_factory=list)


def _count(body: dict[str, Any], key: str, hi: int) -> int:
    v = body.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
        raise BadEvent(f"{key} must be an integer 0..{hi}, got {v!r}")
    return v


def minute_of(body: dict[str, Any], t_device: int | None, t_gateway: int) -> int:
    """The minute a `footfall` counts in: its period `start` (the device's copy of the
    gateway's clock), else the event's device time, else when the gateway got it (a device
    that counted before it ever had the clock since boot)."""
    start = body.get("start")
    if start is not None and (not isinstance(start, int) or isinstance(start, bool) or start < 0):
        raise BadEvent(f"start must be unix ms or null, got {start!r}")
    at = start if start is not None else t_device if isinstance(t_device, int) else t_gateway
    return at - at % MINUTE_MS


def apply(live: Live, event: dict[str, Any]) -> Applied:
    """One stored event of a door counter (a row of `events`) -> what changes."""
    body = event.get("body")
    if not isinstance(body, dict):
        raise BadEvent("body must be an object")
    at = event["t_device"] if isinstance(event.get("t_device"), int) else event["t_gateway"]
    typ = event["type"]
    if typ == "footfall":
        period = _count(body, "period_s", MAX_PERIOD_S)
        if period < 1:
            raise BadEvent("period_s must be >= 1")
        d = MinuteDelta(minute_of(body, event.get("t_device"), event["t_gateway"]),
                        _count(body, "in", MAX_PER_PERIOD), _count(body, "out", MAX_PER_PERIOD),
                        # a period's time out of service can exceed period_s a little (the device
                        # measures it by uptime, ends periods by the clock): capped, not refused
                        min(_count(body, "oos_ms", MAX_PERIOD_S * 1000), period * 1000),
                        _count(body, "occupancy", MAX_OCCUPANCY))
        last = d.minute if live.last_minute is None else max(live.last_minute, d.minute)
        return Applied(replace(live, occupancy=d.occupancy, last_minute=last, updated=at), d)
    if typ == "occupancy.reset":
        return Applied(replace(live, occupancy=_count(body, "occupancy", MAX_OCCUPANCY), updated=at))
    if typ in ("beam.stuck", "beam.cleared"):
        beam = body.get("beam")
        if beam not in BEAMS:
            raise BadEvent(f"beam must be 'A' or 'B', got {beam!r}")
        stuck = set(live.stuck)
        (stuck.add if typ == "beam.stuck" else stuck.discard)(beam)
        return Applied(replace(live, stuck=tuple(sorted(stuck)), updated=at))
    return Applied(live)   # another event of the device (none today): nothing to count


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Sums over minute rows (`entries`, `exits`, `oos_ms`)."""
    return {"entries": sum(r["entries"] for r in rows), "exits": sum(r["exits"] for r in rows),
            "oos_ms": sum(r["oos_ms"] for r in rows)}
