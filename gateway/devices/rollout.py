"""A staged firmware rollout, the pure state machine (docs/ota.md "Staged rollout").

No I/O, no clock: every function takes `now` (unix ms) and returns a new `Rollout`
(gateway/devices/ota_service.py persists it, feeds it the journaled `ota.*` events and the
offers' command outcomes, and sends the offers it asks for).

Stages: 0 = the canary (one device), 1 = `percent` % of the others (rounded up), 2 = the rest
(an empty stage is skipped). A stage's devices are offered the bundle together; the next
stage starts only when every device of this one is `installed`: it reported `ota.installed`
for the version AND its latest birth says it runs that version. The rollout halts, and
offers nothing more, when a device of it reports `ota.failed` or `ota.rolled_back` for the
version, refuses the offer (its command `rejected` or `failed`), or is not installed within
`deadline_ms` of its offer; or when someone halts it. A halted rollout stays halted (start a
new one, e.g. with a fixed bundle).

Target states: `waiting` (its stage has not started) -> `offered` -> `installed`, or `failed`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

STATUSES: Final = ("running", "done", "halted")
TARGET_STATES: Final = ("waiting", "offered", "installed", "failed")
STAGE_NAMES: Final = ("canary", "percent", "all")
MAX_DEVICES: Final = 1000


class PlanError(ValueError):
    """A rollout that cannot be planned; the message says what to change."""


@dataclass(frozen=True)
class Target:
    dev: str
    stage: int
    state: str = "waiting"
    offered: int | None = None     # unix ms of the offer
    done: int | None = None        # unix ms it was installed or failed
    reason: str | None = None      # why it failed, or "already" (it ran the version before)
    reported: bool = False         # ota.installed seen for the version (birth not yet checked)


@dataclass(frozen=True)
class Rollout:
    id: str
    version: str
    stage: int                      # the current stage (0..2)
    status: str                     # running | done | halted
    reason: str | None              # why it halted
    percent: int
    deadline_ms: int
    created: int
    updated: int
    targets: tuple[Target, ...]

    def target(self, dev: str) -> Target | None:
        for t in self.targets:
            if t.dev == dev:
                return t
        return None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Rollout:
        fields = {k: v for k, v in d.items() if k != "targets"}
        return Rollout(**fields, targets=tuple(Target(**t) for t in d["targets"]))


def plan(rid: str, version: str, devices: Mapping[str, str], canary: str | None, percent: int,
         deadline_ms: int, now: int) -> Rollout:
    """A rollout of `version` over `devices` ({id: the version it runs}). `canary`: the first
    device (default: the first id in order)."""
    if not devices:
        raise PlanError("no devices to update: name them, or connect devices of the bundle's kinds")
    if len(devices) > MAX_DEVICES:
        raise PlanError(f"at most {MAX_DEVICES} devices per rollout")
    if not 0 <= percent <= 100:
        raise PlanError("percent must be 0-100")
    if deadline_ms <= 0:
        raise PlanError("the deadline must be positive")
    ids = sorted(devices)
    if canary is None:
        canary = ids[0]
    elif canary not in devices:
        raise PlanError(f"the canary {canary!r} is not one of the rollout's devices")
    rest = [d for d in ids if d != canary]
    n = math.ceil(len(rest) * percent / 100)
    stages = {canary: 0, **{d: 1 for d in rest[:n]}, **{d: 2 for d in rest[n:]}}
    targets = tuple(
        Target(d, stages[d], "installed", done=now, reason="already") if devices[d] == version
        else Target(d, stages[d]) for d in [canary, *rest])
    return Rollout(rid, version, 0, "running", None, percent, deadline_ms, now, now, targets)


def _with(r: Rollout, now: int, changes: Mapping[str, Target], **kw: Any) -> Rollout:
    targets = tuple(changes.get(t.dev, t) for t in r.targets)
    return dataclasses.replace(r, targets=targets, updated=now, **kw)


def halt(r: Rollout, reason: str, now: int, failed: Target | None = None) -> Rollout:
    if r.status != "running":
        return r
    changes = {failed.dev: failed} if failed is not None else {}
    return _with(r, now, changes, status="halted", reason=reason)


def on_event(r: Rollout, dev: str, etype: str, body: Mapping[str, Any], now: int) -> Rollout:
    """A journaled `ota.*` event of a device (in `events.id` order). Only a device this
    rollout has offered the version counts: a late event of an earlier offer (a halted
    rollout's download that stopped) is not about this one."""
    t = r.target(dev)
    if r.status != "running" or t is None or t.state != "offered" or body.get("version") != r.version:
        return r
    if etype == "ota.installed":
        return _with(r, now, {dev: dataclasses.replace(t, reported=True)})
    if etype == "ota.failed":
        why = f"{dev} refused or failed the download: {body.get('reason')}"
    elif etype == "ota.rolled_back":
        why = (f"{dev} rolled back to {body.get('running')} after {body.get('boots')} boots of "
               f"{r.version} without a confirmation (it crashed or failed its self-test)")
    else:
        return r
    return halt(r, why, now, dataclasses.replace(t, state="failed", done=now, reason=why))


def on_offer_outcome(r: Rollout, dev: str, status: str, reason: str | None,
                     result: Mapping[str, Any] | None, now: int) -> Rollout:
    """The final status of a device's offer command (done, rejected, failed, expired)."""
    t = r.target(dev)
    if r.status != "running" or t is None or t.state != "offered":
        return r
    if status in ("rejected", "failed"):
        why = f"{dev} {status} the offer: {reason}"
        return halt(r, why, now, dataclasses.replace(t, state="failed", done=now, reason=why))
    if status == "done" and result and result.get("already"):
        return _with(r, now, {dev: dataclasses.replace(t, reported=True)})
    return r  # done: downloading; expired: the deadline decides


def advance(r: Rollout, fw: Mapping[str, str], now: int) -> tuple[Rollout, list[str]]:
    """Install what is installed (reported and its birth says the version: `fw` = {device:
    version it runs}), halt on a missed deadline, move to the next stage when this one is
    complete; returns the rollout and the devices to offer the bundle to now."""
    if r.status != "running":
        return r, []
    changes: dict[str, Target] = {}
    for t in r.targets:
        if t.state in ("waiting", "offered") and t.reported and fw.get(t.dev) == r.version:
            changes[t.dev] = dataclasses.replace(t, state="installed", done=now)
    if changes:
        r = _with(r, now, changes)
    offers: list[str] = []
    stage = r.stage
    while True:
        current = [t for t in r.targets if t.stage == stage]
        late = [t for t in current if t.state == "offered" and t.offered is not None
                and now - t.offered > r.deadline_ms]
        if late:
            t = late[0]
            why = (f"{t.dev} did not come back with {r.version} within {r.deadline_ms // 1000} s "
                   "of the offer")
            return halt(r, why, now, dataclasses.replace(t, state="failed", done=now, reason=why)), []
        waiting = [t for t in current if t.state == "waiting"]
        if waiting:
            r = _with(r, now, {t.dev: dataclasses.replace(t, state="offered", offered=now)
                               for t in waiting}, stage=stage)
            offers += [t.dev for t in waiting]
        if any(t.state != "installed" for t in current):
            return (r if r.stage == stage else dataclasses.replace(r, stage=stage, updated=now)), offers
        if stage == len(STAGE_NAMES) - 1:
            return dataclasses.replace(r, stage=stage, status="done", updated=now), offers
        stage += 1


def summary(r: Rollout) -> dict[str, Any]:
    """What the API shows: no key, no signature (there is none in a rollout)."""
    counts = {s: sum(1 for t in r.targets if t.state == s) for s in TARGET_STATES}
    return {"id": r.id, "version": r.version, "status": r.status, "reason": r.reason,
            "stage": STAGE_NAMES[r.stage], "percent": r.percent,
            "deadline_s": r.deadline_ms // 1000, "created": r.created, "updated": r.updated,
            "counts": counts,
            "devices": [{"device": t.dev, "stage": STAGE_NAMES[t.stage], "state": t.state,
                         "offered": t.offered, "done": t.done, "reason": t.reason}
                        for t in r.targets]}


def running(rollouts: Sequence[Rollout]) -> Rollout | None:
    return next((r for r in rollouts if r.status == "running"), None)
