"""A discrete-event stand-in for the tube hardware and the staff, driving a `TubeArbiter`.

Pure and deterministic (no clock, no threads): used by the property tests and the throughput
bench, and a reference for what the I/O layer must do with each action. It plays:

- diverters: move for `travel_time_s` (or confirm after `confirm_s` if already in place);
- the blower and carriers: a carrier moves at the blower speed after the spin-up, passes
  photo-eyes at their distances, drops into the destination bin; StopBlower freezes it;
- staff: load a carrier `load_s` after LoadCarrier and press send; take a carrier out of a
  bin `unload_s` after it arrives; optionally clear jams `clear_jams_after_s` after an alert;
- devices' at-most-once command handling: an action whose command_id was applied is ignored;
- station firmware safety (decision 5): a door opening stops the air for carriers it protects
  (destination; origin until the carrier has left), and a start is refused while it is open;
- a gateway outage: while down, device events are journaled and replayed on `gateway_up()`.

It records violations of the physical invariants: two carriers in one segment, a carrier
dropped into an occupied bin, and the gateway commanding air while a protected door is open
(which the firmware refuses; with the gateway up and no events in flight that is an arbiter bug).
"""
from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.kinds.tube.core import (
    FAILED,
    FINAL_STATES,
    HELD,
    LOST,
    ORIGIN_DOOR_WHOLE_TRANSIT,
    Alert,
    DispatchRequest,
    InvalidCommand,
    JobUpdate,
    LoadCarrier,
    SetDiverter,
    StartBlower,
    StopBlower,
    TubeArbiter,
)
from gateway.kinds.tube.network import Route


@dataclass
class SimCarrier:
    job_id: str
    route: Route
    dist: float = 0.0                 # metres along the route when last stopped
    moving_since: float | None = None  # time motion (re)started, after spin-up
    gen: int = 0                      # invalidates scheduled checkpoint events
    next_idx: int = 0                 # next checkpoint not yet physically passed
    stuck_at: float | None = None     # carrier jams here (fault injection)


class TubeWorld:
    def __init__(self, arbiter: TubeArbiter, *, load_s: float = 8.0, unload_s: float = 5.0,
                 confirm_s: float = 0.1, auto_staff: bool = True, clear_jams_after_s: float | None = None,
                 door_on_load: bool = False, observe: Callable[[TubeWorld], None] | None = None,
                 track_holds: bool = True):
        self.arbiter = arbiter
        self.net = arbiter.network
        self.load_s, self.unload_s, self.confirm_s = load_s, unload_s, confirm_s
        self.auto_staff = auto_staff
        self.clear_jams_after_s = clear_jams_after_s
        self.door_on_load = door_on_load
        self.observe = observe   # called after every batch of actions is applied
        self.track_holds = track_holds
        self.now = 0.0
        self._q: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._n = 0
        self.doors = {s: False for s in self.net.stations}
        self.bins: dict[str, str | None] = {s: None for s in self.net.stations}
        self.diverters: dict[str, str | None] = {d: None for d in self.net.diverters}
        self._div_gen: Counter[str] = Counter()
        self._div_motion: dict[str, tuple[str, float]] = {}   # diverter -> (target, eta)
        self.stuck_diverters: set[str] = set()
        self.carriers: dict[str, SimCarrier] = {}
        self.blower_cmd_on: set[str] = set()
        self.applied: set[str] = set()
        self.lose: dict[tuple[str, int], str] = {}   # (job id, attempt) -> segment where its carrier jams
        self.estop = False
        self.gateway_is_up = True
        self._replaying = False
        self._journal: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []   # (arbiter method, args, kw)
        # records
        self.actions: list[tuple[float, Any]] = []
        self.updates: list[tuple[float, JobUpdate]] = []
        self.alerts: list[tuple[float, Alert]] = []
        self.state: dict[str, str] = {}
        self.attempts: Counter[str] = Counter()
        self.arrivals: Counter[str] = Counter()
        self.violations: list[str] = []
        self.hold_intervals: dict[str, list[tuple[float, float]]] = {}   # resource -> (from, to)
        self._hold_start: dict[str, float] = {}

    # ---- scheduling ------------------------------------------------------------------------
    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self._n += 1
        heapq.heappush(self._q, (max(t, self.now), self._n, fn, args))

    def run_until(self, t_end: float) -> None:
        while True:
            nd = self.arbiter.next_deadline() if self.gateway_is_up else None
            tick_t = nd + max(1e-6, abs(nd) * 1e-12) if nd is not None else math.inf
            ev_t = self._q[0][0] if self._q else math.inf
            t = min(tick_t, ev_t)
            if t > t_end:
                self._advance_clock(max(self.now, t_end) if t_end != math.inf else self.now)
                return
            if tick_t < ev_t:
                self._advance_clock(tick_t)
                self._call("tick")
            else:
                t, _, fn, args = heapq.heappop(self._q)
                self._advance_clock(t)
                fn(*args)

    def run(self, max_t: float = 1e7) -> None:
        """Run until nothing is scheduled and no deadline is pending (or max_t)."""
        self.run_until(max_t)

    def _advance_clock(self, t: float) -> None:
        self.now = max(self.now, t)

    # ---- talking to the arbiter --------------------------------------------------------------
    def _call(self, method: str, *args: Any, **kw: Any) -> None:
        if not self.gateway_is_up:
            if method != "tick":
                self._journal.append((method, args, kw))
            return
        fn = getattr(self.arbiter, method)
        if method in ("on_station",):
            actions = fn(*args, now=self.now, **kw)
        else:
            actions = fn(*args, self.now, **kw)
        self.apply(actions)

    def apply(self, actions: list[Any]) -> None:
        for a in actions:
            self.actions.append((self.now, a))
            if isinstance(a, JobUpdate):
                self._on_update(a)
            elif isinstance(a, Alert):
                self.alerts.append((self.now, a))
                self._on_alert(a)
            elif getattr(a, "command_id", None) in self.applied:
                continue                        # the device already applied this command id
            else:
                self.applied.add(a.command_id)
                if isinstance(a, SetDiverter):
                    self._set_diverter(a)
                elif isinstance(a, StartBlower):
                    self._start(a)
                elif isinstance(a, StopBlower):
                    self._stop(a.job_id)
                elif isinstance(a, LoadCarrier):
                    self._load(a)
        if self.track_holds and self.gateway_is_up:
            held = self.arbiter.reservations()
            for r in [r for r in self._hold_start if r not in held]:
                self.hold_intervals.setdefault(r, []).append((self._hold_start.pop(r), self.now))
            for r in held:
                self._hold_start.setdefault(r, self.now)
        self._check_invariants()
        if self.observe:
            self.observe(self)

    def _on_update(self, u: JobUpdate) -> None:
        prev = self.state.get(u.job_id)
        if prev in FINAL_STATES:
            self.violations.append(f"{self.now:.2f} job {u.job_id} updated to {u.state} after final {prev}")
        self.state[u.job_id] = u.state
        self.updates.append((self.now, u))

    def _on_alert(self, a: Alert) -> None:
        if self.clear_jams_after_s is None:
            return
        if a.kind in ("carrier_lost", "job_failed", "hold_timeout") and a.job_id:
            self.at(self.now + self.clear_jams_after_s, self._staff_clear, a.job_id)
        elif a.kind == "diverter_timeout" and a.diverter_id:
            self.at(self.now + self.clear_jams_after_s, self._staff_fix_diverter, a.diverter_id)

    # ---- the world's inputs (tests and bench call these) -------------------------------------
    def submit(self, req: DispatchRequest, at: float | None = None) -> None:
        self.at(self.now if at is None else at, self._submit, req)

    def _submit(self, req: DispatchRequest) -> None:
        self._call("submit", req)

    def set_door(self, station: str, open_: bool, at: float | None = None) -> None:
        self.at(self.now if at is None else at, self._door, station, open_)

    def _door(self, station: str, open_: bool) -> None:
        if self.doors[station] == open_:
            return
        self.doors[station] = open_
        if open_:                     # station firmware stops the air it protects
            for job, c in list(self.carriers.items()):
                if self._protects(station, c):
                    self._freeze(job)
        self._call("on_station", station, door_open=open_)

    def _protects(self, station: str, c: SimCarrier) -> bool:
        r = c.route
        strict = self.arbiter.policy.origin_door == ORIGIN_DOOR_WHOLE_TRANSIT
        return station == r.destination or (station == r.origin and (c.next_idx == 0 or strict))

    def set_estop(self, active: bool, at: float | None = None) -> None:
        self.at(self.now if at is None else at, self._estop, active)

    def _estop(self, active: bool) -> None:
        if active == self.estop:
            return
        self.estop = active
        if active:            # the hardware stops by itself; the arbiter is told afterwards
            for job in list(self.carriers):
                self._freeze(job)
        self._call("on_estop", active)

    def cancel(self, job_id: str, at: float | None = None) -> None:
        self.at(self.now if at is None else at, self._cancel, job_id)

    def _cancel(self, job_id: str) -> None:
        try:
            self._call("cancel", job_id)
        except InvalidCommand as e:
            self.apply(e.actions)

    def _staff_clear(self, job_id: str) -> None:
        if not self.gateway_is_up:
            self.at(self.now + 1.0, self._staff_clear, job_id)
            return
        if self.arbiter.job(job_id).state not in (LOST, FAILED, HELD):
            return
        if self.state.get(job_id) == FAILED and job_id not in self.arbiter.blocked().values():
            return
        c = self.carriers.pop(job_id, None)    # staff pull the carrier out and take it back
        if c is not None:
            self.blower_cmd_on.discard(job_id)
        try:
            self._call("clear_jam", job_id)
        except InvalidCommand as e:
            self.apply(e.actions)

    def _staff_fix_diverter(self, d: str) -> None:
        if not self.gateway_is_up:
            self.at(self.now + 1.0, self._staff_fix_diverter, d)
            return
        self.stuck_diverters.discard(d)
        try:
            self._call("clear_jam", d)
        except InvalidCommand as e:
            self.apply(e.actions)

    def gateway_down(self) -> None:
        self.gateway_is_up = False

    def gateway_up(self, arbiter: TubeArbiter) -> None:
        """A restarted gateway: resume, then replay what the devices journaled meanwhile."""
        self.arbiter = arbiter
        self.gateway_is_up = True
        self._replaying = True
        self.apply(arbiter.resume(self.now))
        journal, self._journal = self._journal, []
        for i, (method, args, kw) in enumerate(journal):
            self._replaying = i < len(journal) - 1
            try:
                self._call(method, *args, **kw)
            except InvalidCommand as e:       # e.g. a cancel that no longer applies
                self.apply(e.actions)
        self._replaying = False

    # ---- devices ----------------------------------------------------------------------------
    def _set_diverter(self, a: SetDiverter) -> None:
        d = a.diverter_id
        self._div_gen[d] += 1
        gen = self._div_gen[d]
        if d in self.stuck_diverters:
            return
        moving = self._div_motion.get(d)
        if moving is not None and moving[0] == a.position:
            eta = moving[1]                          # already on its way there
        elif moving is None and self.diverters[d] == a.position:
            eta = self.now + self.confirm_s          # already there: limit switch confirms
        else:
            eta = self.now + self.net.diverters[d].travel_time_s
            self.diverters[d] = None                 # between positions
        self._div_motion[d] = (a.position, eta)
        self.at(eta, self._diverter_done, d, a.position, gen)

    def _diverter_done(self, d: str, pos: str, gen: int) -> None:
        if gen != self._div_gen[d]:
            return
        self._div_motion.pop(d, None)
        self.diverters[d] = pos
        self._call("on_diverter_confirmed", d, pos)

    def _load(self, a: LoadCarrier) -> None:
        if not self.auto_staff:
            return
        if self.door_on_load:
            self.set_door(a.station_id, True)
            self.set_door(a.station_id, False, self.now + self.load_s)
        self.at(self.now + self.load_s, self._loaded, a.station_id, a.job_id, a.destination)

    def _loaded(self, station: str, job_id: str, destination: str) -> None:
        route = self.net.routes[(station, destination)]
        self.attempts[job_id] += 1
        c = SimCarrier(job_id, route)
        lose = self.lose.get((job_id, self.attempts[job_id]))
        if lose is not None:
            leg = next(l for l in route.legs if l.segment_id == lose)
            c.stuck_at = leg.start_m + leg.length_m / 2
        self.carriers[job_id] = c
        self._call("on_station", station, send_ready=job_id)

    def _speed(self) -> float:
        return self.net.blower.speed_m_s

    def _start(self, a: StartBlower) -> None:
        self.blower_cmd_on.add(a.job_id)
        c = self.carriers.get(a.job_id)
        if c is None or self.estop:
            return
        doors = [s for s in (c.route.origin, c.route.destination) if self.doors[s] and self._protects(s, c)]
        if doors:                     # station firmware refuses
            if self.gateway_is_up and not self._replaying:
                self.violations.append(f"{self.now:.2f} gateway started the blower for {a.job_id} "
                                       f"with the door open at {', '.join(doors)}")
            return
        self._freeze(a.job_id)
        c.gen += 1
        t0 = self.now + self.net.blower.spinup_s
        c.moving_since = t0
        for cp in c.route.checkpoints[c.next_idx:]:
            if c.stuck_at is not None and cp.distance_m > c.stuck_at:
                break
            t = t0 + max(0.0, cp.distance_m - c.dist) / self._speed()
            self.at(t, self._checkpoint, a.job_id, c.gen, cp.index)

    def _stop(self, job_id: str) -> None:
        self.blower_cmd_on.discard(job_id)
        self._freeze(job_id)

    def _freeze(self, job_id: str) -> None:
        c = self.carriers.get(job_id)
        if c is None or c.moving_since is None:
            return
        c.dist = self.position(c)
        c.moving_since = None
        c.gen += 1

    def position(self, c: SimCarrier) -> float:
        d = c.dist
        if c.moving_since is not None and self.now > c.moving_since:
            d += (self.now - c.moving_since) * self._speed()
        cap = c.route.length_m if c.stuck_at is None else c.stuck_at
        return min(d, cap)

    def _checkpoint(self, job_id: str, gen: int, idx: int) -> None:
        c = self.carriers.get(job_id)
        if c is None or c.gen != gen:
            return
        cp = c.route.checkpoints[idx]
        before = c.route.checkpoints[c.next_idx - 1].coord if c.next_idx else 0
        for d, p, coord in c.route.diverter_settings:
            if before < coord < cp.coord and self.diverters[d] != p:
                self.violations.append(f"{self.now:.2f} job {job_id}'s carrier went through {d} "
                                       f"at {self.diverters[d]!r}, needs {p!r}")
        c.next_idx = idx + 1
        if cp.kind == "eye":
            self._call("on_photo_eye", cp.ref)
            return
        # arrival
        del self.carriers[job_id]
        self.arrivals[job_id] += 1
        if self.bins[cp.ref] is not None:
            self.violations.append(f"{self.now:.2f} job {job_id} dropped into {cp.ref}'s occupied bin")
        self.bins[cp.ref] = job_id
        self._call("on_station", cp.ref, carrier_present=True)
        if self.auto_staff:
            self.at(self.now + self.unload_s, self._unload, cp.ref, job_id)

    def _unload(self, station: str, job_id: str) -> None:
        if self.bins[station] != job_id:
            return
        self.bins[station] = None
        self._call("on_station", station, carrier_present=False)

    # ---- invariants ----------------------------------------------------------------------------
    def occupancy(self) -> dict[str, list[str]]:
        """segment -> carriers physically in it (a carrier still in its send chamber is not)."""
        occ: dict[str, list[str]] = {}
        for job, c in self.carriers.items():
            d = self.position(c)
            moving = c.moving_since is not None and self.now >= c.moving_since
            if d <= 0 and not moving:
                continue
            legs = c.route.legs
            leg = next((l for l in legs if l.start_m <= d < l.start_m + l.length_m), legs[-1])
            occ.setdefault(leg.segment_id, []).append(job)
        return occ

    def _check_invariants(self) -> None:
        for seg, jobs in self.occupancy().items():
            if len(jobs) > 1:
                self.violations.append(f"{self.now:.2f} carriers {jobs} together in segment {seg}")
        if not self.gateway_is_up or self._replaying:
            return
        for job in self.blower_cmd_on:
            c = self.carriers.get(job)
            if c is None:
                continue
            for s in (c.route.origin, c.route.destination):
                if self.doors[s] and self._protects(s, c):
                    self.violations.append(f"{self.now:.2f} blower commanded on for {job} with {s}'s door open")

    # ---- summaries -----------------------------------------------------------------------------
    def times(self, state: str) -> dict[str, float]:
        """job id -> first time it reached `state`."""
        out: dict[str, float] = {}
        for t, u in self.updates:
            if u.state == state and u.job_id not in out:
                out[u.job_id] = t
        return out
