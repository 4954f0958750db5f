"""Virtual pneumatic tube line: the physics behind the tube firmware's pins (docs/tube.md).

`TubeLineModel` watches the emulated boards of a tube network (`kind: tube-station` and
`kind: tube-line`, hil/sim/rig.py) and plays the hardware between them, from the same network
file the gateway loads (lengths, blower speed and spin-up, diverter travel times):

* **diverters**: a motor output (`<id>.run`, `<id>.dir`) turns the switch at one position per
  `travel_time_s`; the limit switch of a position (`<id>.<position>`) reads 1 while the switch
  is within a quarter step of it. `stick_diverter(id)` makes the motor run without moving.
* **carriers**: a carrier put in a station's send chamber (the world sets its `chamber` input,
  `Rig.insert_carrier(dev, "chamber")`) leaves when the station opens its send `gate` and there
  is an air path: the station's `air` output on, every diverter on the way at a position that
  connects the tube, and the `air`
  output of the station at the far end on; after the blower's spin-up it flies at
  `speed_m_s`, blocking each line photo-eye it passes for `pass_ms`, and drops into the far
  station's bin (`bin` input 1) until the world takes it out (`remove_carrier(dev, "bin")`).
  The air path failing (a door opens and the station cuts its air, an e-stop, a diverter
  moving) stops it where it is; it continues when the path is back.
* **faults**: `jam_segment(seg)` makes the next carrier entering that segment stop in it for
  good (never arrives) until `retrieve_stuck()` (staff pull it out).

It records physical violations (two carriers in one segment, a drop into an occupied bin) for
scenarios to assert on, and, step by step, how many carriers each segment held at once
(`max_occupancy`, and `crowded`: every (time, segment, carrier ids) with two or more) — the
line's own evidence, independent of the gateway's arbiter (hil/faults.py checks it).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hil.sim.rig import SimDevice, VirtualRig


@dataclass
class Carrier:
    id: int
    at: str                      # "chamber" | "tube" | "bin" | "stuck"
    station: str                 # chamber/bin: where it is; tube: where it left from
    path: list[tuple[str, float]] = field(default_factory=list)  # (segment, length) in travel order
    eyes: list[tuple[float, str]] = field(default_factory=list)  # (distance, eye id) along the path
    dest: str = ""
    dist: float = 0.0
    air_since: float | None = None
    jam_at: float | None = None  # stops for good at this distance


class TubeLineModel:
    """The tube line between the boards of one network. Start with `start()`, stop with `stop()`."""

    def __init__(self, rig: VirtualRig, network: dict | str | Path, devices: dict[str, str] | None = None,
                 *, pass_ms: int = 120, dt: float = 0.005):
        if not isinstance(network, dict):
            network = json.loads(Path(network).read_text())
        self.rig = rig
        self.net = network
        self.devices = dict(devices or network.get("devices") or {})  # node/eye id -> device id
        self.pass_s = pass_ms / 1000
        self.dt = dt
        self.speed = float(network["blower"]["speed_m_s"])
        self.spinup = float(network["blower"].get("spinup_s", 0.0))
        self.segments = {s["id"]: s for s in network["segments"]}
        self.stations = [s["id"] for s in network["stations"]]
        self.diverters = {d["id"]: d for d in network.get("diverters", [])}
        # diverter id -> (position names in rotation order, current position as a float index)
        self.div_pos: dict[str, float] = {d: 0.0 for d in self.diverters}
        self.stuck_diverters: set[str] = set()
        self.jams: set[str] = set()
        self.carriers: list[Carrier] = []
        self.violations: list[str] = []
        self.arrivals: list[tuple[int, str, str]] = []  # (carrier, from, to)
        self.max_occupancy: dict[str, int] = {seg: 0 for seg in self.segments}
        self.crowded: list[tuple[float, str, tuple[int, ...]]] = []  # (time, segment, carriers)
        self._eye_off: dict[str, float] = {}
        self._n = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for node in self.stations + list(self.diverters):
            if node not in self.devices:
                raise ValueError(f"network devices: no device for {node!r} (add \"{node}\": \"<device id>\")")
        for s in self.stations:  # idle world: doors shut, chambers and bins empty, no e-stop
            sim = self._sim(s)
            for pin in ("door", "chamber", "bin", "send", "estop"):
                sim.set_input(pin, 0)
        for d in self.diverters:
            self._set_limits(d)

    # --- wiring ------------------------------------------------------------------------------
    def _sim(self, node: str) -> SimDevice:
        return self.rig.device(self.devices[node])

    def _eye_sim(self, eye: str) -> SimDevice:
        dev = self.devices.get(eye)
        if dev is None:  # eyes not listed sit on the line controller of the first diverter
            dev = self.devices[next(iter(self.diverters))]
        return self.rig.device(dev)

    def _positions(self, d: str) -> list[str]:
        return list(self.diverters[d]["positions"])

    def _closed_position(self, d: str) -> str | None:
        pos = self.div_pos[d]
        k = round(pos)
        return self._positions(d)[k] if abs(pos - k) <= 0.25 else None

    def _set_limits(self, d: str) -> None:
        sim = self._sim(d)
        closed = self._closed_position(d)
        for p in self._positions(d):
            sim.set_input(f"{d}.{p}", 1 if p == closed else 0)

    # --- world / faults ------------------------------------------------------------------------
    def stick_diverter(self, d: str, stuck: bool = True) -> None:
        with self._lock:
            (self.stuck_diverters.add if stuck else self.stuck_diverters.discard)(d)
        self.rig.trace.note("tube", f"diverter {d} {'stuck' if stuck else 'free again'}")

    def jam_segment(self, seg: str) -> None:
        with self._lock:
            self.jams.add(seg)
        self.rig.trace.note("tube", f"the next carrier into {seg} will stick")

    def retrieve_stuck(self, stopped: bool = False) -> int:
        """Staff pull every stuck carrier out of the tube (with `stopped`, also those standing
        in the tube for want of air, e.g. after a station lost power); returns how many."""
        with self._lock:
            stuck = [c for c in self.carriers if c.at == "stuck"
                     or (stopped and c.at == "tube" and c.air_since is None)]
            for c in stuck:
                self.carriers.remove(c)
            self.jams.clear()
        self.rig.trace.note("tube", f"staff retrieved {len(stuck)} stuck carrier(s)")
        return len(stuck)

    def held_at(self, where: str, station: str) -> int:
        """How many carriers are in `station`'s "chamber" or "bin"."""
        with self._lock:
            return sum(1 for c in self.carriers if c.at == where and c.station == station)

    def in_tube(self) -> list[Carrier]:
        with self._lock:
            return [c for c in self.carriers if c.at in ("tube", "stuck")]

    # --- physics --------------------------------------------------------------------------------
    def _trace_path(self, origin: str) -> tuple[list[tuple[str, float]], list[tuple[float, str]], str] | None:
        """Follow the tube from `origin` through the diverters as they are now: (segments,
        eyes, far station), or None when the path ends at a diverter that does not connect."""
        node = origin
        seg = next(s for s in self.segments.values() if origin in (s["from"], s["to"]))
        path, eyes, dist = [], [], 0.0
        for _ in range(len(self.segments) + 1):
            length = float(seg["length_m"])
            toward_to = seg["from"] == node
            eyes.append((dist + (length if toward_to else 0.0), seg["eye"]))
            path.append((seg["id"], length))
            dist += length
            node = seg["to"] if toward_to else seg["from"]
            if node in self.stations:
                return path, eyes, node
            pos = self._closed_position(node)
            if pos is None:
                return None
            pair = self.diverters[node]["positions"][pos]
            if seg["id"] not in pair:
                return None
            nxt = pair[1] if pair[0] == seg["id"] else pair[0]
            seg = self.segments[nxt]
        return None

    def _air(self, station: str) -> bool:
        return bool(self._sim(station).output("air"))

    def _step(self, now: float, dt: float) -> None:
        for d, spec in self.diverters.items():
            sim = self._sim(d)
            if sim.output(f"{d}.run") and d not in self.stuck_diverters:
                step = dt / float(spec["travel_time_s"])
                last = len(spec["positions"]) - 1
                self.div_pos[d] = min(last, max(0.0, self.div_pos[d] + (step if sim.output(f"{d}.dir") else -step)))
            self._set_limits(d)  # every step: a `reset_world()` cannot leave them wrong
        for eye, t_off in list(self._eye_off.items()):
            if now >= t_off:
                del self._eye_off[eye]
                self._eye_sim(eye).set_input(eye, 0)
        for s in self.stations:  # the world put a carrier in a chamber, or took one out
            sim = self._sim(s)
            here = [c for c in self.carriers if c.at == "chamber" and c.station == s]
            if sim.inputs.get("chamber") and not here:
                self._n += 1
                self.carriers.append(Carrier(self._n, "chamber", s))
            elif not sim.inputs.get("chamber") and here:
                self.carriers.remove(here[0])
            in_bin = [c for c in self.carriers if c.at == "bin" and c.station == s]
            if in_bin and not sim.inputs.get("bin"):
                for c in in_bin:
                    self.carriers.remove(c)
        for c in list(self.carriers):
            if c.at == "chamber":
                self._depart(c, now)
            elif c.at == "tube":
                self._fly(c, now, dt)
        self._record_occupancy(now)

    def _record_occupancy(self, now: float) -> None:
        held: dict[str, list[int]] = {}
        for c in self.carriers:
            if c.at in ("tube", "stuck"):
                held.setdefault(self._segment_at(c, c.dist), []).append(c.id)
        for seg, ids in held.items():
            self.max_occupancy[seg] = max(self.max_occupancy.get(seg, 0), len(ids))
            if len(ids) > 1 and (not self.crowded or self.crowded[-1][1:] != (seg, tuple(ids))):
                self.crowded.append((now, seg, tuple(ids)))

    def _air_path(self, c: Carrier) -> bool:
        if not self._air(c.station):
            return False
        traced = self._trace_path(c.station)
        if traced is None or not self._air(traced[2]):
            return False
        return c.at == "chamber" or [s for s, _ in traced[0]] == [s for s, _ in c.path]

    def _depart(self, c: Carrier, now: float) -> None:
        if not self._sim(c.station).output("gate") or not self._air_path(c):
            c.air_since = None
            return
        if c.air_since is None:
            c.air_since = now
        if now - c.air_since < self.spinup:
            return
        c.path, c.eyes, c.dest = self._trace_path(c.station)
        c.at, c.dist = "tube", 0.0
        self._sim(c.station).set_input("chamber", 0)
        self.rig.trace.note("tube", f"carrier {c.id} leaves {c.station} for {c.dest} "
                            f"via {'-'.join(s for s, _ in c.path)}")
        self._fly(c, now, 0.0)

    def _segment_at(self, c: Carrier, dist: float) -> str:
        acc = 0.0
        for seg, length in c.path:
            acc += length
            if dist < acc:
                return seg
        return c.path[-1][0]

    def _fly(self, c: Carrier, now: float, dt: float) -> None:
        if dt and not self._air_path(c):
            c.air_since = None  # stopped: the blower spins up again when the path is back
            return
        if c.air_since is None:
            c.air_since = now
        if now - c.air_since < self.spinup:
            return
        before = c.dist
        c.dist += self.speed * dt
        seg = self._segment_at(c, min(c.dist, sum(length for _, length in c.path) - 1e-9))
        if c.jam_at is None and seg in self.jams:
            acc = 0.0
            for s, length in c.path:
                if s == seg:
                    c.jam_at = acc + length / 2
                    break
                acc += length
        if c.jam_at is not None and c.dist >= c.jam_at:
            c.dist, c.at = c.jam_at, "stuck"
            self.rig.trace.note("tube", f"carrier {c.id} stuck in {seg}")
        for d_eye, eye in c.eyes:
            if before <= d_eye <= c.dist and not (before == d_eye and dt):
                self._eye_sim(eye).set_input(eye, 1)
                self._eye_off[eye] = now + self.pass_s
        others = [o for o in self.carriers if o is not c and o.at in ("tube", "stuck")
                  and self._segment_at(o, o.dist) == seg]
        if others and c.at == "tube":
            self.violations.append(f"carriers {c.id} and {others[0].id} in segment {seg}")
        if c.at == "tube" and c.dist >= sum(length for _, length in c.path):
            sim = self._sim(c.dest)
            if any(o.at == "bin" and o.station == c.dest for o in self.carriers):
                self.violations.append(f"carrier {c.id} dropped into {c.dest}'s occupied bin")
            self.arrivals.append((c.id, c.station, c.dest))
            c.at, c.station = "bin", c.dest
            sim.set_input("bin", 1)
            self.rig.trace.note("tube", f"carrier {c.id} in {c.dest}'s bin")

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.dt):
            now = time.monotonic()
            with self._lock:
                self._step(now, min(now - last, 0.05))  # a stalled thread does not teleport carriers
            last = now

    def start(self) -> TubeLineModel:
        self._thread = threading.Thread(target=self._run, name="tube-line", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
