"""Pneumatic tube arbiter: the pure core of the tube service (architecture decision 4).

No I/O, no asyncio, no clock. Every input is a method call carrying `now` (seconds, from a clock
that survives restarts, e.g. `time.time()`); every output is a list of actions for the I/O layer
to carry out. Same inputs, same outputs, so it can be model-tested (tests/gateway/kinds/tube/test_tube_core.py) and
simulated (hil/sim/tube_world.py, bench/tube_throughput.py). Rules: docs/tube.md.

    arbiter = TubeArbiter(TubeNetwork.from_dict(config))
    actions = arbiter.submit(DispatchRequest("J1", "stockroom", "fitting-rooms", "customer", "SKU-1", now), now)
    actions += arbiter.on_station("stockroom", send_ready=True, now=now)       # staff loaded it
    actions += arbiter.on_diverter_confirmed("DV1", "through", now)            # ...
    actions += arbiter.on_photo_eye("PE-T1", now)
    actions += arbiter.on_station("fitting-rooms", carrier_present=True, now=now)    # arrived
    actions += arbiter.on_station("fitting-rooms", carrier_present=False, now=now)   # delivered

Resources a job can hold (one job per resource, ever):
    send:<station>   the station's send chamber (from LoadCarrier until the carrier has left)
    seg:<segment>    a tube segment
    div:<diverter>   a diverter (and the position it was set to)
    recv:<station>   the destination's receive bin (from route start until the carrier is removed)
A lost or failed job keeps the resources where its carrier may be: that is what "blocked" means.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gateway.kinds.tube.network import (  # noqa: F401  (re-exported: one import for users)
    BLOW,
    SUCK,
    Checkpoint,
    Diverter,
    NetworkConfigError,
    NoRoute,
    Route,
    Station,
    TubeNetwork,
    TubeSegment,
)

SNAPSHOT_VERSION = 1

# ---- priorities and states ---------------------------------------------------------------
PRIORITY_RANK = {"customer": 1.0, "replenishment": 0.0}

QUEUED = "queued"          # waiting: for the send chamber, for staff to load, or for the line
ROUTING = "routing"        # route reserved, diverters moving
IN_TRANSIT = "in_transit"  # blower on, carrier moving
HELD = "held"              # in the tube, blower stopped (door open, occupied bin, e-stop)
ARRIVED = "arrived"        # in the destination's receive bin
DELIVERED = "delivered"    # carrier removed from the bin                      (final)
LOST = "lost"              # not seen in its window; line blocked; awaits staff
FAILED = "failed"          # lost again after the one resend; awaits staff     (final)
CANCELLED = "cancelled"    #                                                   (final)
STATES = (QUEUED, ROUTING, IN_TRANSIT, HELD, ARRIVED, DELIVERED, LOST, FAILED, CANCELLED)
FINAL_STATES = frozenset({DELIVERED, FAILED, CANCELLED})
LINE_STATES = frozenset({ROUTING, IN_TRANSIT, HELD})   # jobs using the line (count for max_concurrent)

RESERVATION_ROUTE = "route"                    # hold the whole route until arrival
RESERVATION_RELEASE_BEHIND = "release_behind"  # reserve whole, free what the carrier has passed
ORIGIN_DOOR_UNTIL_DEPARTURE = "until_departure"
ORIGIN_DOOR_WHOLE_TRANSIT = "whole_transit"


class InvalidJob(ValueError):
    """A dispatch request that can never be carried out (unknown station, no route, bad priority)."""


class InvalidCommand(ValueError):
    """A staff/API command that does not apply to the current state (says what to do instead).

    `actions` holds what moving the clock to `now` produced before the command was refused
    (e.g. a carrier declared lost at that instant): the caller must still carry them out."""

    def __init__(self, message: str, actions: list[Any] | None = None):
        super().__init__(message)
        self.actions = list(actions or [])


# ---- inputs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DispatchRequest:
    id: str
    origin: str
    destination: str
    priority: str          # "customer" | "replenishment"
    item: str
    created: float         # when the request was made (ageing counts from here)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DispatchRequest:
        return cls(str(d["id"]), str(d.get("origin", d.get("from"))), str(d.get("destination", d.get("to"))),
                   str(d.get("priority", "replenishment")), str(d.get("item", "")), float(d["created"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ArbiterPolicy:
    reservation: str = RESERVATION_ROUTE
    ageing_s: float = 120.0        # waiting this long more is worth one priority class
    max_attempts: int = 2          # first send + one resend
    hold_alert_s: float = 30.0     # a hold longer than this raises an alert (once per hold)
    origin_door: str = ORIGIN_DOOR_UNTIL_DEPARTURE
    preposition: bool = True       # turn free diverters for the next job while its carrier is loaded

    def __post_init__(self) -> None:
        if self.reservation not in (RESERVATION_ROUTE, RESERVATION_RELEASE_BEHIND):
            raise ValueError(f"policy.reservation: {self.reservation!r} is not 'route' or 'release_behind'")
        if self.origin_door not in (ORIGIN_DOOR_UNTIL_DEPARTURE, ORIGIN_DOOR_WHOLE_TRANSIT):
            raise ValueError(f"policy.origin_door: {self.origin_door!r} is not 'until_departure' or 'whole_transit'")
        if not self.ageing_s > 0:
            raise ValueError(f"policy.ageing_s: must be > 0, got {self.ageing_s}")
        if self.max_attempts < 1:
            raise ValueError(f"policy.max_attempts: must be >= 1, got {self.max_attempts}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ArbiterPolicy:
        known = {f.name for f in fields(cls)}
        unknown = set(d or {}) - known
        if unknown:
            raise ValueError(f"policy: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        return cls(**dict(d or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- actions (outputs) ---------------------------------------------------------------------
# Actuation actions carry a command_id: the device applies an id at most once (decision 3).
# An action re-emitted by `resume()` after a restart carries the SAME id (idempotent); a new
# actuation (resume after a hold, re-set after an e-stop) carries a new one.
@dataclass(frozen=True)
class SetDiverter:
    diverter_id: str
    position: str
    job_id: str
    command_id: str


@dataclass(frozen=True)
class StartBlower:
    job_id: str
    direction: str               # "blow" | "suck"
    route: tuple[str, ...]       # segment ids, origin to destination
    origin: str
    destination: str
    command_id: str


@dataclass(frozen=True)
class StopBlower:
    job_id: str
    reason: str
    command_id: str


@dataclass(frozen=True)
class LoadCarrier:
    """Tell the origin station (display) which item to load next; staff then press send."""
    station_id: str
    job_id: str
    item: str
    destination: str
    command_id: str


@dataclass(frozen=True)
class Alert:
    kind: str
    message: str
    severity: str = "warning"            # "info" | "warning" | "error"
    job_id: str | None = None
    station_id: str | None = None
    diverter_id: str | None = None
    eye_id: str | None = None
    segment_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobUpdate:
    job_id: str
    state: str
    reason: str = ""


Action = SetDiverter | StartBlower | StopBlower | LoadCarrier | Alert | JobUpdate


def action_to_dict(action: Action) -> dict[str, Any]:
    d = asdict(action)
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = list(v)
    return {"type": type(action).__name__, **d}


@dataclass(frozen=True)
class JobStatus:
    """Read-only view of a job."""
    request: DispatchRequest
    state: str
    attempt: int
    reason: str
    loaded: bool
    departed: bool
    resources: tuple[str, ...]


# ---- internal state ----------------------------------------------------------------------
@dataclass
class _Job:
    req: DispatchRequest
    seq: int
    state: str = QUEUED
    attempt: int = 1
    reason: str = ""
    assigned: bool = False          # owns send:<origin>
    loaded: bool = False            # staff loaded it and pressed send
    departed: bool = False          # seen at its first checkpoint
    next_cp: int = 0                # next checkpoint expected
    last_coord: int = 0             # coord of the last checkpoint seen (0: origin)
    last_dist: float = 0.0
    deadline: float | None = None   # for the next checkpoint (in_transit) or the diverters (routing)
    pending: dict[str, str] = field(default_factory=dict)   # diverter -> position awaiting confirmation
    hold_since: float | None = None
    hold_alerted: bool = False
    blower_on: bool = False
    cmd_n: int = 0
    commands: dict[str, str] = field(default_factory=dict)  # last command id per purpose

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["req"] = self.req.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _Job:
        d = dict(d)
        d["req"] = DispatchRequest.from_dict(d["req"])
        d["pending"] = dict(d.get("pending", {}))
        d["commands"] = dict(d.get("commands", {}))
        return cls(**d)


@dataclass
class _StationState:
    door_open: bool = False
    carrier_present: bool = False     # a carrier in the receive bin


class TubeArbiter:
    """Event-driven arbiter of one tube network. Every public method returns a list of actions."""

    def __init__(self, network: TubeNetwork, policy: ArbiterPolicy | None = None):
        self.network = network
        self.policy = policy or ArbiterPolicy()
        self._now = float("-inf")
        self._seq = 0
        self._estop = False
        self._jobs: dict[str, _Job] = {}                  # every job, in submission order
        self._live: dict[str, _Job] = {}                  # jobs not in a final state, same order
        self._holds: dict[str, str] = {}                  # resource -> job id
        self._faulted: dict[str, str] = {}                # diverter -> reason
        self._stations = {sid: _StationState() for sid in network.stations}
        self._diverter_pos: dict[str, str | None] = {d: None for d in network.diverters}      # last reported
        self._diverter_target: dict[str, str | None] = {d: None for d in network.diverters}   # last commanded

    # ================================ public API ==========================================
    def submit(self, job: DispatchRequest, now: float) -> list[Action]:
        """Queue a dispatch. Re-submitting an id returns its current state (no second dispatch)."""
        if job.id in self._jobs:
            j = self._jobs[job.id]
            if j.req != job:
                raise InvalidJob(f"job id {job.id!r} already used for a different dispatch ({j.req})")
            return [JobUpdate(job.id, j.state, "duplicate submit: already known")]
        if job.priority not in PRIORITY_RANK:
            raise InvalidJob(f"job {job.id!r}: priority {job.priority!r} is not one of {', '.join(PRIORITY_RANK)}")
        try:
            self.network.route(job.origin, job.destination)
        except NoRoute as e:
            raise InvalidJob(f"job {job.id!r}: {e}") from None
        out: list[Action] = []
        now = self._advance(now, out)
        self._seq += 1
        self._jobs[job.id] = self._live[job.id] = _Job(job, self._seq)
        out.append(JobUpdate(job.id, QUEUED, f"{job.priority} dispatch {job.origin} -> {job.destination}"))
        self._reconcile(now, out)
        return out

    def cancel(self, job_id: str, now: float, reason: str = "cancelled") -> list[Action]:
        """Cancel a job that is not in the tube yet (queued or routing). Final jobs: no-op."""
        j = self._get(job_id)
        out: list[Action] = []
        now = self._advance(now, out)
        if j.state in FINAL_STATES:
            return out
        if j.state not in (QUEUED, ROUTING):
            raise _refuse(out, f"job {job_id!r} is {j.state}: its carrier is in the line; "
                          "use clear_jam(job, resend=False) once staff hold the carrier")
        if j.loaded:
            out.append(Alert("remove_carrier", f"job {job_id} cancelled: take its carrier ({j.req.item}) "
                             f"out of the send chamber at {j.req.origin}", "info", job_id, j.req.origin))
        self._release_all(j)
        j.assigned = j.loaded = False
        j.pending.clear()
        j.deadline = None
        self._set_state(j, CANCELLED, reason, out)
        self._reconcile(now, out)
        return out

    def on_diverter_confirmed(self, diverter_id: str, position: str | None, now: float) -> list[Action]:
        """A diverter reports its position (limit switch); one not in its config counts as unknown (None)."""
        out: list[Action] = []
        now = self._advance(now, out)
        if diverter_id not in self.network.diverters:
            out.append(Alert("unknown_device", f"diverter {diverter_id!r} is not in network {self.network.name!r}",
                             diverter_id=diverter_id))
            return out
        if position not in self.network.diverters[diverter_id].positions:
            out.append(Alert("unknown_position", f"diverter {diverter_id} reports position {position!r}, not one of "
                             f"{', '.join(self.network.diverters[diverter_id].positions)}: check its config",
                             diverter_id=diverter_id))
            position = None
        self._diverter_pos[diverter_id] = position
        if diverter_id in self._faulted:
            del self._faulted[diverter_id]
            out.append(Alert("diverter_recovered", f"diverter {diverter_id} reports position {position!r} again",
                             "info", diverter_id=diverter_id))
        holder = self._holder(f"div:{diverter_id}")
        if holder is not None:
            if holder.state == ROUTING and holder.pending.get(diverter_id) == position:
                del holder.pending[diverter_id]
                if not holder.pending:
                    holder.deadline = None
            elif holder.state in (IN_TRANSIT, HELD):
                need, coord = next((p, c) for d, p, c in self._route(holder).diverter_settings if d == diverter_id)
                if position != need and coord > holder.last_coord:
                    out.append(Alert("diverter_moved", f"diverter {diverter_id} reports {position!r} while job "
                                     f"{holder.req.id}'s carrier still has to pass it at {need!r}: holding it; "
                                     "check the diverter", "error", holder.req.id, diverter_id=diverter_id))
        self._reconcile(now, out)
        return out

    def on_photo_eye(self, eye_id: str, now: float) -> list[Action]:
        """A line photo-eye saw a carrier pass."""
        out: list[Action] = []
        now = self._advance(now, out)
        seg = self.network.eye_segment.get(eye_id)
        if seg is None:
            out.append(Alert("unknown_device", f"photo-eye {eye_id!r} is not in network {self.network.name!r}",
                             eye_id=eye_id))
            return out
        j = self._holder(f"seg:{seg}")
        if j is None or j.state not in (IN_TRANSIT, HELD):
            where = f" (segment {seg} is blocked by {j.state} job {j.req.id})" if j else ""
            out.append(Alert("unexpected_carrier", f"carrier seen at {eye_id} with no dispatch expecting it{where}",
                             "warning", j.req.id if j else None, eye_id=eye_id, segment_ids=(seg,)))
            self._reconcile(now, out)
            return out
        cps = self._route(j).checkpoints
        idx = next((c.index for c in cps[j.next_cp:] if c.kind == "eye" and c.ref == eye_id), None)
        if idx is None:
            out.append(Alert("photo_eye_repeat", f"{eye_id} saw job {j.req.id}'s carrier again (already passed)",
                             "info", j.req.id, eye_id=eye_id))
            return out
        for c in cps[j.next_cp:idx]:
            if c.kind == "eye":
                out.append(Alert("photo_eye_missed", f"{c.ref} did not see job {j.req.id}'s carrier "
                                 f"(seen later at {eye_id}): clean or check the eye", "warning", j.req.id,
                                 eye_id=c.ref))
        self._passed(j, cps[idx], now, out)
        self._reconcile(now, out)
        return out

    def on_station(self, station_id: str, *, now: float, door_open: bool | None = None,
                   carrier_present: bool | None = None, send_ready: bool | str | None = None) -> list[Action]:
        """A station reports its door, its receive bin (`carrier_present`) or a send press
        (`send_ready`: a carrier is loaded in the send chamber and staff pressed send; pass the job
        id the station was showing (from LoadCarrier) so a press meant for a job that has since
        been cancelled or replaced is not taken for the new one; True = whichever job is assigned;
        False = the carrier was taken back out)."""
        out: list[Action] = []
        now = self._advance(now, out)
        st = self._stations.get(station_id)
        if st is None:
            out.append(Alert("unknown_device", f"station {station_id!r} is not in network {self.network.name!r}",
                             station_id=station_id))
            return out
        if door_open is not None:
            st.door_open = bool(door_open)
        incoming = self._holder(f"recv:{station_id}")
        if carrier_present is not None and bool(carrier_present) != st.carrier_present:
            st.carrier_present = bool(carrier_present)
            if st.carrier_present:
                if incoming is not None and incoming.state in (IN_TRANSIT, HELD):
                    if incoming.next_cp >= self._route(incoming).final_hop_from():
                        self._arrive(incoming, now, out)
                    else:
                        out.append(Alert("destination_occupied", f"a carrier appeared in {station_id}'s bin while "
                                         f"job {incoming.req.id} is still upstream: "
                                         "holding it until the bin is emptied",
                                         "warning", incoming.req.id, station_id))
                elif incoming is None or incoming.state != ARRIVED:
                    out.append(Alert("unexpected_carrier", f"a carrier arrived in {station_id}'s bin with no dispatch "
                                     "to it: remove it", "warning", station_id=station_id))
            elif incoming is not None and incoming.state == ARRIVED:
                self._release(incoming, [f"recv:{station_id}"])
                self._set_state(incoming, DELIVERED, f"carrier removed at {station_id}", out)
        if send_ready is not None:
            owner = self._holder(f"send:{station_id}")
            if send_ready:
                if owner is None or owner.state != QUEUED:
                    out.append(Alert("unexpected_send", f"send pressed at {station_id} but no dispatch is waiting "
                                     "to be loaded there", "info", station_id=station_id))
                elif isinstance(send_ready, str) and send_ready != owner.req.id:
                    out.append(Alert("unexpected_send", f"send pressed at {station_id} for job {send_ready}, but the "
                                     f"chamber is assigned to {owner.req.id}: take that carrier out and load "
                                     f"{owner.req.item}", "warning", owner.req.id, station_id))
                elif not owner.loaded:
                    owner.loaded = True
                    out.append(JobUpdate(owner.req.id, QUEUED, f"loaded at {station_id}, waiting for the line"))
            elif owner is not None and owner.state == QUEUED and owner.loaded:
                owner.loaded = False
                out.append(JobUpdate(owner.req.id, QUEUED, f"carrier taken out of the send chamber at {station_id}"))
        self._reconcile(now, out)
        return out

    def on_estop(self, active: bool, now: float, source: str = "") -> list[Action]:
        """Emergency stop pressed (active=True) or released. Everything in the tube is held."""
        out: list[Action] = []
        now = self._advance(now, out)
        if bool(active) == self._estop:
            return out
        self._estop = bool(active)
        src = f" ({source})" if source else ""
        if active:
            out.append(Alert("estop", f"emergency stop{src}: all blowers stopped, nothing starts", "error"))
            for j in self._iter(ROUTING):
                j.deadline = None            # diverters may stop with the e-stop: re-set on release
        else:
            out.append(Alert("estop_released", f"emergency stop released{src}", "info"))
            for j in self._iter(ROUTING):
                if j.pending:
                    self._send_diverters(j, now, out, list(j.pending.items()))
        self._reconcile(now, out)
        return out

    def clear_jam(self, target: str, now: float, *, resend: bool = True) -> list[Action]:
        """Staff recovery. `target` is a job id, or a segment/diverter id that is blocked.

        The staff have found the carrier and taken it back to the sender (or the diverter works
        again). The job's resources are freed. A lost (or held, or in-transit) job is re-queued
        for its one resend if it has one left and `resend` is true, else it ends `failed`
        (resend wanted, none left) or `cancelled` (resend=False). A failed job stays failed; the
        line it blocked is freed. A faulted diverter is returned to service."""
        out: list[Action] = []
        now = self._advance(now, out)
        job = self._jobs.get(target)
        if job is None and target in self.network.segments:
            job = self._holder(f"seg:{target}")
            if job is None or job.state not in (LOST, FAILED, HELD, IN_TRANSIT):
                held_by = f" (held by {job.state} job {job.req.id})" if job else ""
                raise _refuse(out, f"segment {target!r} is not blocked{held_by}")
        elif job is None and target in self.network.diverters:
            holder = self._holder(f"div:{target}")
            if holder is not None and holder.state in (LOST, FAILED):
                job = holder
            elif target in self._faulted:
                del self._faulted[target]
                out.append(Alert("jam_cleared", f"diverter {target} returned to service by staff", "info",
                                 diverter_id=target))
                self._reconcile(now, out)
                return out
            else:
                raise _refuse(out, f"diverter {target!r} is neither faulted nor blocked")
        elif job is None:
            raise _refuse(out, f"{target!r} is not a job, segment or diverter of network {self.network.name!r}")
        if job.state == FAILED:
            held = self._release_all(job)
            if held:                       # clearing twice is harmless
                out.append(Alert("jam_cleared", f"line freed after failed job {job.req.id} ({', '.join(held)})",
                                 "info", job.req.id, segment_ids=_segs(held)))
        elif job.state in (LOST, HELD, IN_TRANSIT):
            if job.blower_on:
                self._blower_off(job, "staff recovering the carrier", out)
            held = self._release_all(job)
            job.pending.clear()
            job.deadline = job.hold_since = None
            job.assigned = job.loaded = job.departed = False
            job.next_cp, job.last_coord, job.last_dist = 0, 0, 0.0
            out.append(Alert("jam_cleared", f"staff cleared job {job.req.id} ({', '.join(held) or 'nothing held'})",
                             "info", job.req.id, segment_ids=_segs(held)))
            if not resend:
                self._set_state(job, CANCELLED, "carrier recovered by staff, not resent", out)
            elif job.attempt < self.policy.max_attempts:
                job.attempt += 1
                self._set_state(job, QUEUED, f"resend {job.attempt}/{self.policy.max_attempts}: carrier back at "
                                f"{job.req.origin}", out)
            else:
                self._set_state(job, FAILED, "no resend left", out)
                out.append(Alert("job_failed", f"job {job.req.id} ({job.req.item}) failed after "
                                 f"{job.attempt} attempts", "error", job.req.id))
        else:
            raise _refuse(out, f"job {job.req.id!r} is {job.state}: nothing to clear" +
                                 ("; use cancel()" if job.state in (QUEUED, ROUTING) else ""))
        self._reconcile(now, out)
        return out

    def tick(self, now: float) -> list[Action]:
        """Let time pass: detects missed photo-eyes and diverters, escalates long holds, re-ranks."""
        out: list[Action] = []
        now = self._advance(now, out)
        self._reconcile(now, out)
        return out

    def resume(self, now: float) -> list[Action]:
        """Call once after `from_dict` when the gateway restarts. Re-emits the actuations that
        should be in force, with their original command ids (devices dedupe them), and gives
        every running timer at least a fresh window from `now`, so replayed device events that
        happened while the gateway was down are not mistaken for losses."""
        out: list[Action] = []
        self._now = max(self._now, now)
        now = self._now
        t = self.network.timing
        for j in list(self._live.values()):
            r = self._route(j)
            if j.state == QUEUED and j.assigned and not j.loaded:
                out.append(LoadCarrier(j.req.origin, j.req.id, j.req.item, j.req.destination, j.commands["load"]))
            elif j.state == ROUTING:
                for d, p in j.pending.items():
                    out.append(SetDiverter(d, p, j.req.id, j.commands[f"div:{d}"]))
                if j.pending and j.deadline is not None:
                    slowest = max(self.network.diverters[d].travel_time_s for d in j.pending)
                    j.deadline = max(j.deadline, now + t.window(slowest))
            elif j.state == IN_TRANSIT:
                out.append(StartBlower(j.req.id, r.direction, r.segments, r.origin, r.destination, j.commands["start"]))
                if j.deadline is not None:
                    j.deadline = max(j.deadline, now + self._hop_window(j, spinup=True))
            elif j.state == HELD and "stop" in j.commands:
                out.append(StopBlower(j.req.id, j.reason, j.commands["stop"]))
        self._reconcile(now, out)
        return out

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick()` would change something (a photo-eye or diverter
        window closing, a hold alert), or None. The I/O layer sleeps until then or the next event.
        Deadlines fire when `now` is strictly after them."""
        times = []
        for j in self._live.values():
            diverters_due = j.state == ROUTING and j.pending and not self._estop
            if j.deadline is not None and (diverters_due or j.state == IN_TRANSIT):
                times.append(j.deadline)
            elif j.state == HELD and j.hold_since is not None and not j.hold_alerted:
                times.append(j.hold_since + self.policy.hold_alert_s)
        return min(times) if times else None

    # ---- views ---------------------------------------------------------------------------
    def job(self, job_id: str) -> JobStatus:
        j = self._get(job_id)
        return JobStatus(j.req, j.state, j.attempt, j.reason, j.loaded, j.departed,
                         tuple(sorted(r for r, o in self._holds.items() if o == job_id)))

    def jobs(self) -> list[JobStatus]:
        return [self.job(i) for i in self._jobs]

    def reservations(self) -> dict[str, str]:
        """resource -> job id, for every resource held (by active, arrived, lost and failed jobs)."""
        return dict(self._holds)

    def blocked(self) -> dict[str, str]:
        """Resources blocked by lost/failed jobs (resource -> job id), plus faulted diverters."""
        b = {r: o for r, o in self._holds.items() if self._jobs[o].state in (LOST, FAILED)}
        b.update({f"div:{d}": f"fault: {why}" for d, why in self._faulted.items()})
        return b

    @property
    def estop_active(self) -> bool:
        return self._estop

    def station_state(self, station_id: str) -> dict[str, bool]:
        s = self._stations[station_id]
        return {"door_open": s.door_open, "carrier_present": s.carrier_present}

    def forget_finished(self) -> list[str]:
        """Drop final jobs from memory (after the gateway has stored them). Returns their ids.
        A re-submit of a forgotten id is then a new dispatch: keep ids unique upstream."""
        gone = [i for i, j in self._jobs.items()
                if j.state in FINAL_STATES and not any(o == i for o in self._holds.values())]
        for i in gone:
            del self._jobs[i]
        return gone

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "network": self.network.name,
            "network_fingerprint": self.network.fingerprint,
            "policy": self.policy.to_dict(),
            "now": self._now if self._now != float("-inf") else None,
            "seq": self._seq,
            "estop": self._estop,
            "stations": {k: asdict(v) for k, v in self._stations.items()},
            "diverters": {d: {"position": self._diverter_pos[d], "target": self._diverter_target[d],
                              "fault": self._faulted.get(d)}
                          for d in self.network.diverters},
            "holds": dict(self._holds),
            "jobs": [j.to_dict() for j in self._jobs.values()],
        }

    @classmethod
    def from_dict(cls, network: TubeNetwork, data: Mapping[str, Any],
                  policy: ArbiterPolicy | None = None) -> TubeArbiter:
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"tube snapshot version {data.get('version')!r} is not {SNAPSHOT_VERSION}")
        jobs = [_Job.from_dict(d) for d in data["jobs"]]
        if data.get("network_fingerprint") != network.fingerprint and any(
                j.state not in FINAL_STATES and j.state != QUEUED for j in jobs):
            raise ValueError(f"tube snapshot was taken with a different network config "
                             f"({data.get('network')!r} {data.get('network_fingerprint')}, now {network.fingerprint}) "
                             "and has jobs in the line: restore with the old config, or clear them first")
        a = cls(network, policy or ArbiterPolicy.from_dict(data.get("policy")))
        a._now = float(data["now"]) if data.get("now") is not None else float("-inf")
        a._seq = int(data["seq"])
        a._estop = bool(data["estop"])
        for sid, s in data["stations"].items():
            if sid in a._stations:
                a._stations[sid] = _StationState(bool(s["door_open"]), bool(s["carrier_present"]))
        for d, s in data["diverters"].items():
            if d in a._diverter_pos:
                a._diverter_pos[d] = s.get("position")
                a._diverter_target[d] = s.get("target")
                if s.get("fault"):
                    a._faulted[d] = s["fault"]
        a._jobs = {j.req.id: j for j in sorted(jobs, key=lambda j: j.seq)}
        a._live = {i: j for i, j in a._jobs.items() if j.state not in FINAL_STATES}
        a._holds = dict(data["holds"])
        for r, o in a._holds.items():
            if o not in a._jobs:
                raise ValueError(f"tube snapshot: resource {r} held by unknown job {o!r}")
        return a

    # ================================ internals ===========================================
    def _get(self, job_id: str) -> _Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise InvalidCommand(f"unknown job {job_id!r}") from None

    def _route(self, j: _Job) -> Route:
        return self.network.routes[(j.req.origin, j.req.destination)]

    def _holder(self, resource: str) -> _Job | None:
        o = self._holds.get(resource)
        return self._jobs[o] if o is not None else None

    def _iter(self, *states: str) -> list[_Job]:
        return [j for j in self._live.values() if j.state in states]

    def _cmd(self, j: _Job, purpose: str) -> str:
        j.cmd_n += 1
        cid = f"{j.req.id}/{j.attempt}/{j.cmd_n}"
        j.commands[purpose] = cid
        return cid

    def _set_state(self, j: _Job, state: str, reason: str, out: list[Action]) -> None:
        j.state = state
        j.reason = reason
        if state in FINAL_STATES:
            self._live.pop(j.req.id, None)
        out.append(JobUpdate(j.req.id, state, reason))

    def _release(self, j: _Job, resources: Iterable[str]) -> None:
        for r in resources:
            if self._holds.get(r) == j.req.id:
                del self._holds[r]

    def _release_all(self, j: _Job) -> list[str]:
        held = sorted(r for r, o in self._holds.items() if o == j.req.id)
        self._release(j, held)
        return held

    def _rank(self, j: _Job, now: float) -> tuple[float, float, int]:
        """Ageing: effective priority = class rank + waiting time / ageing_s. Higher goes first;
        ties: older request, then earlier submission."""
        age = max(0.0, now - j.req.created)
        return (PRIORITY_RANK[j.req.priority] + age / self.policy.ageing_s, -j.req.created, -j.seq)

    def _hop_window(self, j: _Job, *, spinup: bool) -> float:
        cp = self._route(j).checkpoints[j.next_cp]
        nominal = (cp.distance_m - j.last_dist) / self.network.blower.speed_m_s
        if spinup:
            nominal += self.network.blower.spinup_s
        return self.network.timing.window(nominal)

    def _blower_on(self, j: _Job, now: float, out: list[Action]) -> None:
        r = self._route(j)
        j.blower_on = True
        out.append(StartBlower(j.req.id, r.direction, r.segments, r.origin, r.destination, self._cmd(j, "start")))
        j.deadline = now + self._hop_window(j, spinup=True)

    def _blower_off(self, j: _Job, reason: str, out: list[Action]) -> None:
        j.blower_on = False
        out.append(StopBlower(j.req.id, reason, self._cmd(j, "stop")))

    def _send_diverters(self, j: _Job, now: float, out: list[Action], settings: list[tuple[str, str]]) -> None:
        for d, p in settings:
            j.pending[d] = p
            self._diverter_target[d] = p
            out.append(SetDiverter(d, p, j.req.id, self._cmd(j, f"div:{d}")))
        slowest = max(self.network.diverters[d].travel_time_s for d, _ in settings)
        j.deadline = now + self.network.timing.window(slowest)

    # ---- time ----------------------------------------------------------------------------
    def _advance(self, now: float, out: list[Action]) -> float:
        """Move the clock to `now` (never backwards) and fire every deadline that has passed."""
        now = float(now)
        now = max(now, self._now)
        self._now = now
        for j in self._iter(ROUTING, IN_TRANSIT, HELD):
            if j.state == ROUTING and j.pending and j.deadline is not None and now > j.deadline and not self._estop:
                self._diverter_timeout(j, out)
            elif j.state == IN_TRANSIT and j.deadline is not None and now > j.deadline:
                self._lose(j, out)
            elif j.state == HELD and j.hold_since is not None and not j.hold_alerted \
                    and now - j.hold_since > self.policy.hold_alert_s:
                j.hold_alerted = True
                out.append(Alert("hold_timeout", f"job {j.req.id} held for over {self.policy.hold_alert_s:.0f} s "
                                 f"({j.reason}): close the door / empty the bin, or recover the carrier with clear_jam",
                                 "error", j.req.id, segment_ids=self._route(j).segments))
        return now

    def _diverter_timeout(self, j: _Job, out: list[Action]) -> None:
        late = sorted(j.pending)
        for d in late:
            self._faulted[d] = f"did not confirm {j.pending[d]!r} for job {j.req.id}"
            out.append(Alert("diverter_timeout", f"diverter {d} did not confirm position {j.pending[d]!r} in time: "
                             "out of service until it reports again or staff clear it", "error", j.req.id,
                             diverter_id=d))
        r = self._route(j)
        self._release(j, r.resources())
        j.pending.clear()
        j.deadline = None
        self._set_state(j, QUEUED, f"diverter {', '.join(late)} did not confirm; waiting for it", out)

    def _lose(self, j: _Job, out: list[Action]) -> None:
        r = self._route(j)
        cp = r.checkpoints[j.next_cp]
        if j.blower_on:
            self._blower_off(j, f"carrier not seen at {cp.ref}", out)
        # keep what the carrier may be in: the span between the last place it was seen and
        # the checkpoint it missed; release what it is known to have passed, and the bin.
        a, b = j.last_coord, cp.coord
        keep = {f"seg:{leg.segment_id}" for i, leg in enumerate(r.legs) if 4 * i < b and 4 * i + 4 > a}
        keep |= {f"div:{d}" for d, _, c in r.diverter_settings if a < c < b}
        if not j.departed:
            keep.add(f"send:{r.origin}")
        mine = [res for res, o in self._holds.items() if o == j.req.id]
        self._release(j, [res for res in mine if res not in keep])
        j.deadline = None
        blocked = tuple(sorted(x[4:] for x in keep if x.startswith("seg:")))
        where = f"between {r.checkpoints[j.next_cp - 1].ref if j.next_cp else r.origin} and {cp.ref}"
        if j.attempt < self.policy.max_attempts:
            self._set_state(j, LOST, f"carrier not seen at {cp.ref} in time (last seen {where})", out)
            out.append(Alert("carrier_lost", f"job {j.req.id}: carrier lost {where}; line blocked on "
                             f"{', '.join(sorted(x.split(':', 1)[1] for x in keep))}. Find it, take it back to "
                             f"{r.origin}, then clear_jam({j.req.id!r}) to resend", "error", j.req.id,
                             segment_ids=blocked))
        else:
            self._set_state(j, FAILED, f"carrier lost again at {cp.ref} (attempt {j.attempt}); no resend left", out)
            out.append(Alert("job_failed", f"job {j.req.id} ({j.req.item}): carrier lost {where} on its last attempt; "
                             f"line blocked on {', '.join(blocked) or '-'} until staff clear_jam", "error", j.req.id,
                             segment_ids=blocked))

    # ---- transit -------------------------------------------------------------------------
    def _passed(self, j: _Job, cp: Checkpoint, now: float, out: list[Action]) -> None:
        r = self._route(j)
        j.next_cp = cp.index + 1
        j.last_coord = cp.coord
        j.last_dist = cp.distance_m
        if not j.departed:
            j.departed = True
            self._release(j, [f"send:{r.origin}"])
            j.assigned = False
        if self.policy.reservation == RESERVATION_RELEASE_BEHIND:
            c = cp.coord
            self._release(j, [f"seg:{leg.segment_id}" for i, leg in enumerate(r.legs) if 4 * i + 4 <= c])
            self._release(j, [f"div:{d}" for d, _, dc in r.diverter_settings if dc < c])
        j.deadline = now + self._hop_window(j, spinup=False) if j.state == IN_TRANSIT else None

    def _arrive(self, j: _Job, now: float, out: list[Action]) -> None:
        r = self._route(j)
        for c in r.checkpoints[j.next_cp:-1]:
            out.append(Alert("photo_eye_missed", f"{c.ref} did not see job {j.req.id}'s carrier (it arrived): "
                             "clean or check the eye", "warning", j.req.id, eye_id=c.ref))
        if j.blower_on:
            self._blower_off(j, f"arrived at {r.destination}", out)
        j.next_cp = len(r.checkpoints)
        j.last_coord = r.checkpoints[-1].coord
        j.deadline = j.hold_since = None
        if not j.departed:
            j.departed = True
            j.assigned = False
        self._release(j, [res for res in r.resources() if not res.startswith("recv:")] + [f"send:{r.origin}"])
        self._set_state(j, ARRIVED, f"in the bin at {r.destination}", out)

    def _hold_reasons(self, j: _Job) -> list[str]:
        r = self._route(j)
        why = []
        if self._estop:
            why.append("emergency stop")
        if self._stations[r.destination].door_open:
            why.append(f"door open at {r.destination}")
        if self._stations[r.origin].door_open and (
                not j.departed or self.policy.origin_door == ORIGIN_DOOR_WHOLE_TRANSIT):
            why.append(f"door open at {r.origin}")
        if self._stations[r.destination].carrier_present:   # not ours: ours arriving makes the job ARRIVED
            why.append(f"bin occupied at {r.destination}")
        why += self._diverters_astray(r, after=j.last_coord)
        return why

    def _diverters_astray(self, r: Route, after: int) -> list[str]:
        """Diverters ahead of the carrier (coord > after) whose last report is not what the route needs."""
        return [f"diverter {d} at {self._diverter_pos[d]!r}, needs {p!r}" for d, p, c in r.diverter_settings
                if c > after and self._diverter_pos[d] != p]

    def _start_blockers(self, j: _Job, *, diverters: bool) -> list[str]:
        """Why the job may not start now (doors, bin, e-stop; and, once routing, the diverters)."""
        r = self._route(j)
        why = []
        if self._estop:
            why.append("emergency stop")
        for sid in (r.origin, r.destination):
            if self._stations[sid].door_open:
                why.append(f"door open at {sid}")
        if self._stations[r.destination].carrier_present:
            why.append(f"bin occupied at {r.destination}")
        return why + (self._diverters_astray(r, after=0) if diverters else [])

    # ---- the scheduler -------------------------------------------------------------------
    def _reconcile(self, now: float, out: list[Action]) -> None:
        # 1. hold / resume what is in the tube
        for j in self._iter(IN_TRANSIT):
            why = self._hold_reasons(j)
            if why:
                self._blower_off(j, "; ".join(why), out)
                j.deadline = None
                j.hold_since = now
                j.hold_alerted = False
                self._set_state(j, HELD, "; ".join(why), out)
        for j in self._iter(HELD):
            if not self._hold_reasons(j):
                j.hold_since = None
                self._set_state(j, IN_TRANSIT, "resumed", out)
                self._blower_on(j, now, out)
        # 2. assign free send chambers, 3. start routes, 4. start blowers on set routes
        self._assign_chambers(out)
        self._start_routes(now, out)
        if self.policy.preposition:
            self._preposition(now, out)
        for j in self._iter(ROUTING):
            if not j.pending and not self._estop:
                astray = [(d, p) for d, p, _ in self._route(j).diverter_settings if self._diverter_pos[d] != p]
                if astray:                 # one moved after confirming: set it again (and time it)
                    self._send_diverters(j, now, out, astray)
            if not j.pending and not self._start_blockers(j, diverters=True):
                self._set_state(j, IN_TRANSIT, "blower on", out)
                self._blower_on(j, now, out)

    def _blocked_resources(self) -> set[str]:
        b = {r for r, o in self._holds.items() if self._jobs[o].state in (LOST, FAILED)}
        b |= {f"div:{d}" for d in self._faulted}
        return b

    def _assign_chambers(self, out: list[Action]) -> None:
        now = self._now
        blocked = self._blocked_resources()
        waiting: dict[str, list[_Job]] = {}
        for j in self._live.values():
            if j.state == QUEUED and not j.assigned:
                waiting.setdefault(j.req.origin, []).append(j)
        for sid, js in sorted(waiting.items()):
            if f"send:{sid}" in self._holds:
                continue
            ok = [j for j in js if not blocked.intersection(self._route(j).resources())]
            if not ok:
                continue
            j = max(ok, key=lambda j: self._rank(j, now))
            self._holds[f"send:{sid}"] = j.req.id
            j.assigned = True
            j.loaded = False
            out.append(LoadCarrier(sid, j.req.id, j.req.item, j.req.destination, self._cmd(j, "load")))

    def _start_routes(self, now: float, out: list[Action]) -> None:
        if self._estop:
            return
        cap = self.network.blower.max_concurrent
        active = sum(1 for j in self._live.values() if j.state in LINE_STATES)
        blocked = self._blocked_resources()
        claimed: set[str] = set()
        ready = [j for j in self._live.values() if j.state == QUEUED and j.loaded]
        for j in sorted(ready, key=lambda j: self._rank(j, now), reverse=True):
            if cap is not None and active >= cap:
                return
            r = self._route(j)
            need = r.resources()
            if blocked.intersection(need) or self._start_blockers(j, diverters=False):
                continue                   # cannot go now: do not claim, let others use the line
            if any(x in self._holds or x in claimed for x in need):
                claimed.update(need)       # first in line for these: nobody ranked lower takes them
                continue
            for x in need:
                self._holds[x] = j.req.id
            self._set_state(j, ROUTING, "route reserved: " + ", ".join(r.segments), out)
            active += 1
            # a diverter that last reported this very position, with no other position asked
            # of it since, is not sent again: waiting for its confirmation was a whole device
            # round trip on the line's critical path (issue 18); one that moves on its own
            # reports it, and the ROUTING check below or the in-transit check sets it again
            move = [(d, p) for d, p, _ in r.diverter_settings
                    if not (self._diverter_pos[d] == p and self._diverter_target[d] == p)]
            if move:
                self._send_diverters(j, now, out, move)

    def _preposition(self, now: float, out: list[Action]) -> None:
        """Turn diverters nobody holds towards the route of the best-ranked job whose carrier is
        being loaded (or waits loaded), so its routing finds them in place. Routing still sends
        and awaits its own SetDiverter, so this only saves travel time; a held diverter (a carrier
        may be in it) is never touched."""
        if self._estop:
            return
        taken: set[str] = set()
        waiting = [j for j in self._live.values() if j.state == QUEUED and j.assigned]
        for j in sorted(waiting, key=lambda j: self._rank(j, now), reverse=True):
            for d, p, _ in self._route(j).diverter_settings:
                if d in taken:
                    continue
                taken.add(d)
                if f"div:{d}" in self._holds or d in self._faulted or self._diverter_target[d] == p:
                    continue
                self._diverter_target[d] = p
                out.append(SetDiverter(d, p, j.req.id, self._cmd(j, f"pre:{d}")))


def _refuse(actions: list[Action], message: str) -> InvalidCommand:
    return InvalidCommand(message, actions)


def _segs(resources: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(r[4:] for r in resources if r.startswith("seg:")))
