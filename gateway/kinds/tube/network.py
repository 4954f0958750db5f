"""Pneumatic tube network: stations, diverters, segments and the blower, loaded from a config
dict, validated, and routed.

Pure data, no I/O: reading the JSON file is the caller's business
(`TubeNetwork.from_dict(json.loads(path.read_text()))`).

Geometry used by the arbiter
----------------------------
A route visits nodes n0 (origin station), n1 ... n(m-1) (diverters), nm (destination station)
through legs 0..m-1; leg i runs through segment i between n(i) and n(i+1), in the segment's own
direction (`forward`, from its `from` node to its `to` node) or against it.

Each segment has one photo-eye at its `to` end. A carrier travelling forward passes that eye as
it leaves the segment; travelling backwards it passes it as it enters. Positions along a route
are encoded as small integers ("coords") so that "behind" and "between" are exact:

    node i                  -> 4*i
    eye of leg i, forward   -> 4*i + 3   (just before node i+1)
    eye of leg i, backwards -> 4*i + 1   (just after node i)
    arrival in the bin      -> 4*m

A carrier seen at coord c has left everything strictly behind c.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

STATION_KINDS = ("stockroom", "floor")
BLOW = "blow"   # pressure: the carrier moves away from the blower
SUCK = "suck"   # vacuum: the carrier moves towards the blower


class NetworkConfigError(ValueError):
    """The tube network config is invalid. `field` names the offending entry, e.g. `segments[3].to`."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}")


class NoRoute(ValueError):
    """No path between two stations (or an unknown station)."""


@dataclass(frozen=True)
class Station:
    id: str
    zone: str
    kind: str          # "stockroom" | "floor"
    name: str = ""


@dataclass(frozen=True)
class Diverter:
    """A rotating switch. Each named position connects two of its segments."""
    id: str
    positions: Mapping[str, tuple[str, str]]
    travel_time_s: float

    def position_for(self, seg_a: str, seg_b: str) -> str | None:
        for name, pair in self.positions.items():
            if {seg_a, seg_b} == set(pair):
                return name
        return None


@dataclass(frozen=True)
class TubeSegment:
    id: str
    from_node: str
    to_node: str
    length_m: float
    eye: str            # photo-eye at the `to` end

    def other_end(self, node: str) -> str:
        return self.to_node if node == self.from_node else self.from_node


@dataclass(frozen=True)
class Blower:
    speed_m_s: float
    at: str                         # node the blower sits at (sets blow/suck direction)
    spinup_s: float = 1.0           # start command -> carrier moving
    max_concurrent: int | None = None   # routes under air at once; None: limited by segments only


@dataclass(frozen=True)
class Timing:
    """Photo-eye window for a hop of nominal time t: deadline = t * window_factor + window_margin_s."""
    window_factor: float = 1.5
    window_margin_s: float = 2.0

    def window(self, nominal_s: float) -> float:
        return nominal_s * self.window_factor + self.window_margin_s


@dataclass(frozen=True)
class Leg:
    segment_id: str
    forward: bool
    eye: str
    length_m: float
    start_m: float      # distance along the route where this leg starts


@dataclass(frozen=True)
class Checkpoint:
    index: int
    kind: str           # "eye" | "arrival"
    ref: str            # photo-eye id, or the destination station id for "arrival"
    coord: int
    distance_m: float   # distance along the route


@dataclass(frozen=True)
class Route:
    origin: str
    destination: str
    nodes: tuple[str, ...]
    legs: tuple[Leg, ...]
    diverter_settings: tuple[tuple[str, str, int], ...]   # (diverter id, position, coord)
    checkpoints: tuple[Checkpoint, ...]
    length_m: float
    direction: str              # BLOW | SUCK
    setup_s: float              # slowest diverter travel (diverters move in parallel)
    transit_s: float            # blower spin-up + length / speed

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(leg.segment_id for leg in self.legs)

    @property
    def diverters(self) -> tuple[str, ...]:
        return tuple(d for d, _, _ in self.diverter_settings)

    @property
    def expected_s(self) -> float:
        """Nominal time from `routing` to arrival: diverter travel + spin-up + flight."""
        return self.setup_s + self.transit_s

    def resources(self) -> tuple[str, ...]:
        """What a dispatch on this route reserves: segments, diverters and the destination bin."""
        return (tuple(f"seg:{s}" for s in self.segments)
                + tuple(f"div:{d}" for d in self.diverters)
                + (f"recv:{self.destination}",))

    def final_hop_from(self) -> int:
        """Index of the first checkpoint of the final hop (last segment's eye, then arrival)."""
        return max(0, len(self.checkpoints) - 2)


def _req(d: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise NetworkConfigError(f"{where}.{key}", "missing")
    v = d[key]
    if kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise NetworkConfigError(f"{where}.{key}", f"expected a number, got {v!r}")
        return float(v)
    if not isinstance(v, kind) or (kind is str and not v):
        raise NetworkConfigError(f"{where}.{key}", f"expected a non-empty {getattr(kind, '__name__', kind)}, got {v!r}")
    return v


@dataclass(frozen=True)
class TubeNetwork:
    name: str
    stations: Mapping[str, Station]
    diverters: Mapping[str, Diverter]
    segments: Mapping[str, TubeSegment]
    blower: Blower
    timing: Timing
    routes: Mapping[tuple[str, str], Route] = field(repr=False)
    eye_segment: Mapping[str, str] = field(repr=False)
    fingerprint: str = ""

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str) -> TubeNetwork:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TubeNetwork:
        if not isinstance(data, Mapping):
            raise NetworkConfigError("<root>", "expected an object")
        for key in ("stations", "segments", "blower"):
            if key not in data:
                raise NetworkConfigError(key, "missing")
        ids: dict[str, str] = {}       # every id (node, segment, eye) -> where it was declared

        def claim(ident: str, where: str) -> None:
            if ident in ids:
                raise NetworkConfigError(where, f"duplicate id {ident!r} (already used by {ids[ident]})")
            ids[ident] = where

        def entries(key: str, items: Any, non_empty: bool = False
                    ) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
            """(where, id, object) for each object of the list at `key`, its id claimed."""
            if not isinstance(items, list) or (non_empty and not items):
                raise NetworkConfigError(key, f"expected a {'non-empty ' if non_empty else ''}list")
            for i, obj in enumerate(items):
                w = f"{key}[{i}]"
                if not isinstance(obj, Mapping):
                    raise NetworkConfigError(w, "expected an object")
                ident = _req(obj, "id", w, str)
                claim(ident, f"{w}.id")
                yield w, ident, obj

        stations: dict[str, Station] = {}
        for w, sid, s in entries("stations", data["stations"], non_empty=True):
            kind = _req(s, "kind", w, str)
            if kind not in STATION_KINDS:
                raise NetworkConfigError(f"{w}.kind", f"{kind!r} is not one of {', '.join(STATION_KINDS)}")
            stations[sid] = Station(sid, _req(s, "zone", w, str), kind, str(s.get("name", "")))
        if not any(s.kind == "stockroom" for s in stations.values()):
            raise NetworkConfigError("stations", "needs at least one station of kind 'stockroom'")

        div_raw: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for w, did, d in entries("diverters", data.get("diverters", [])):
            div_raw[did] = (w, d)

        nodes = set(stations) | set(div_raw)
        segments: dict[str, TubeSegment] = {}
        eye_segment: dict[str, str] = {}
        for w, gid, s in entries("segments", data["segments"]):
            ends = []
            for end in ("from", "to"):
                node = _req(s, end, w, str)
                if node not in nodes:
                    raise NetworkConfigError(f"{w}.{end}", f"unknown node {node!r} "
                                             f"(stations and diverters: {', '.join(sorted(nodes))})")
                ends.append(node)
            if ends[0] == ends[1]:
                raise NetworkConfigError(f"{w}.to", f"segment {gid!r} starts and ends at {ends[0]!r}")
            length = _req(s, "length_m", w, float)
            if length <= 0:
                raise NetworkConfigError(f"{w}.length_m", f"must be > 0, got {length}")
            eye = _req(s, "eye", w, str)
            claim(eye, f"{w}.eye")
            segments[gid] = TubeSegment(gid, ends[0], ends[1], length, eye)
            eye_segment[eye] = gid

        attached: dict[str, list[str]] = {n: [] for n in nodes}
        for seg in segments.values():
            attached[seg.from_node].append(seg.id)
            attached[seg.to_node].append(seg.id)
        for i, (sid, st) in enumerate(stations.items()):
            if not attached[sid]:
                raise NetworkConfigError(f"stations[{i}]", f"station {sid!r} is disconnected: "
                                         "no segment has it as `from` or `to`")
            if len(attached[sid]) > 1:
                raise NetworkConfigError(f"stations[{i}]", f"station {sid!r} has {len(attached[sid])} segments "
                                         f"({', '.join(attached[sid])}); a station ends exactly one tube — "
                                         "put a diverter in front of it")

        diverters: dict[str, Diverter] = {}
        for did, (w, d) in div_raw.items():
            travel = _req(d, "travel_time_s", w, float)
            if travel <= 0:
                raise NetworkConfigError(f"{w}.travel_time_s", f"must be > 0, got {travel}")
            pos = _req(d, "positions", w, dict)
            if not pos:
                raise NetworkConfigError(f"{w}.positions", "needs at least one position")
            positions: dict[str, tuple[str, str]] = {}
            seen_pairs: dict[frozenset[str], str] = {}
            for pname, pair in pos.items():
                pw = f"{w}.positions.{pname}"
                if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
                    raise NetworkConfigError(pw, f"expected two segment ids, got {pair!r}")
                for x in pair:
                    if x not in segments:
                        raise NetworkConfigError(pw, f"unknown segment {x!r}")
                    if x not in attached[did]:
                        raise NetworkConfigError(pw, f"segment {x!r} does not end at diverter {did!r} "
                                                 f"(its segments: {', '.join(attached[did]) or 'none'})")
                if pair[0] == pair[1]:
                    raise NetworkConfigError(pw, f"connects {pair[0]!r} to itself")
                connection = frozenset(pair)
                if connection in seen_pairs:
                    raise NetworkConfigError(pw, f"same connection as position {seen_pairs[connection]!r}")
                seen_pairs[connection] = pname
                positions[pname] = (pair[0], pair[1])
            used = {x for pair in positions.values() for x in pair}
            for x in attached[did]:
                if x not in used:
                    raise NetworkConfigError(f"{w}.positions", f"segment {x!r} ends at diverter {did!r} "
                                             "but no position connects it")
            diverters[did] = Diverter(did, positions, travel)

        b = data["blower"]
        if not isinstance(b, Mapping):
            raise NetworkConfigError("blower", "expected an object")
        speed = _req(b, "speed_m_s", "blower", float)
        if not 0 < speed <= 20:
            raise NetworkConfigError("blower.speed_m_s", f"must be in (0, 20] m/s, got {speed}")
        at = b.get("at") or next(s.id for s in stations.values() if s.kind == "stockroom")
        if at not in nodes:
            raise NetworkConfigError("blower.at", f"unknown node {at!r}")
        spinup = float(b.get("spinup_s", 1.0))
        if spinup < 0:
            raise NetworkConfigError("blower.spinup_s", f"must be >= 0, got {spinup}")
        mc = b.get("max_concurrent")
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 1):
            raise NetworkConfigError("blower.max_concurrent", f"expected a positive integer or null, got {mc!r}")
        blower = Blower(speed, at, spinup, mc)

        t = data.get("timing", {}) or {}
        timing = Timing(float(t.get("window_factor", 1.5)), float(t.get("window_margin_s", 2.0)))
        if timing.window_factor < 1:
            raise NetworkConfigError("timing.window_factor", f"must be >= 1, got {timing.window_factor}")
        if timing.window_margin_s < 0:
            raise NetworkConfigError("timing.window_margin_s", f"must be >= 0, got {timing.window_margin_s}")

        name = str(data.get("name", "tube"))
        routes = _all_routes(stations, diverters, segments, blower)
        stock = [s for s in stations.values() if s.kind == "stockroom"]
        for i, (sid, st) in enumerate(stations.items()):
            for other in stock:
                if other.id == sid:
                    continue
                for a, z in ((sid, other.id), (other.id, sid)):
                    if (a, z) not in routes:
                        raise NetworkConfigError(
                            f"stations[{i}]", f"station {sid!r} is disconnected: no route {a!r} -> {z!r} "
                            "(check segment ends and the diverters' positions)")
        canonical = json.dumps(_canonical(name, stations, diverters, segments, blower, timing), sort_keys=True)
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return cls(name, stations, diverters, segments, blower, timing, routes, eye_segment, fingerprint)

    # ---- queries -------------------------------------------------------------------------
    def route(self, origin: str, destination: str) -> Route:
        for sid in (origin, destination):
            if sid not in self.stations:
                raise NoRoute(f"unknown station {sid!r} (stations: {', '.join(sorted(self.stations))})")
        if origin == destination:
            raise NoRoute(f"origin and destination are both {origin!r}")
        try:
            return self.routes[(origin, destination)]
        except KeyError:
            raise NoRoute(f"no route {origin!r} -> {destination!r} in network {self.name!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return _canonical(self.name, self.stations, self.diverters, self.segments, self.blower, self.timing)


def _canonical(name: str, stations: Mapping[str, Station], diverters: Mapping[str, Diverter],
               segments: Mapping[str, TubeSegment], blower: Blower, timing: Timing) -> dict[str, Any]:
    return {
        "name": name,
        "stations": [{"id": s.id, "zone": s.zone, "kind": s.kind, **({"name": s.name} if s.name else {})}
                     for s in stations.values()],
        "diverters": [{"id": d.id, "travel_time_s": d.travel_time_s,
                       "positions": {k: list(v) for k, v in d.positions.items()}} for d in diverters.values()],
        "segments": [{"id": g.id, "from": g.from_node, "to": g.to_node, "length_m": g.length_m, "eye": g.eye}
                     for g in segments.values()],
        "blower": {"speed_m_s": blower.speed_m_s, "at": blower.at, "spinup_s": blower.spinup_s,
                   "max_concurrent": blower.max_concurrent},
        "timing": {"window_factor": timing.window_factor, "window_margin_s": timing.window_margin_s},
    }


def _all_routes(stations: Mapping[str, Station], diverters: Mapping[str, Diverter],
                segments: Mapping[str, TubeSegment], blower: Blower) -> dict[tuple[str, str], Route]:
    # distance of each node from the blower (for blow/suck)
    adj: dict[str, list[TubeSegment]] = {}
    for seg in segments.values():
        adj.setdefault(seg.from_node, []).append(seg)
        adj.setdefault(seg.to_node, []).append(seg)
    dist = {blower.at: 0.0}
    heap = [(0.0, blower.at)]
    while heap:
        d, n = heapq.heappop(heap)
        if d > dist.get(n, math.inf):
            continue
        for seg in adj.get(n, []):
            m = seg.other_end(n)
            if d + seg.length_m < dist.get(m, math.inf):
                dist[m] = d + seg.length_m
                heapq.heappush(heap, (dist[m], m))

    routes: dict[tuple[str, str], Route] = {}
    for origin in stations:
        for (dest, path) in _paths_from(origin, stations, diverters, segments, adj).items():
            routes[(origin, dest)] = _build_route(origin, dest, path, diverters, segments, blower, dist)
    return routes


def _paths_from(origin: str, stations: Mapping[str, Station], diverters: Mapping[str, Diverter],
                segments: Mapping[str, TubeSegment], adj: Mapping[str, list[TubeSegment]]) -> dict[str, list[str]]:
    """Shortest path (by length) from a station to every reachable station, as segment lists.
    State = (node, segment we arrived by); a diverter can be crossed only along one of its positions."""
    (first,) = adj[origin]
    start: tuple[float, str, str, tuple[str, ...]] = (first.length_m, first.id, first.other_end(origin), (first.id,))
    heap = [start]
    best: dict[tuple[str, str], float] = {}
    found: dict[str, list[str]] = {}
    while heap:
        d, via, node, path = heapq.heappop(heap)
        if best.get((node, via), math.inf) <= d:
            continue
        best[(node, via)] = d
        if node in stations:
            if node != origin and node not in found:
                found[node] = list(path)
            continue
        div = diverters[node]
        for seg in sorted(adj[node], key=lambda s: s.id):
            if seg.id == via or div.position_for(via, seg.id) is None or seg.id in path:
                continue
            heapq.heappush(heap, (d + seg.length_m, seg.id, seg.other_end(node), path + (seg.id,)))
    return found


def _build_route(origin: str, dest: str, path: list[str], diverters: Mapping[str, Diverter],
                 segments: Mapping[str, TubeSegment], blower: Blower, dist: Mapping[str, float]) -> Route:
    nodes = [origin]
    legs: list[Leg] = []
    pos = 0.0
    for seg_id in path:
        seg = segments[seg_id]
        here = nodes[-1]
        forward = seg.from_node == here
        legs.append(Leg(seg_id, forward, seg.eye, seg.length_m, pos))
        pos += seg.length_m
        nodes.append(seg.other_end(here))
    settings: list[tuple[str, str, int]] = []
    for i in range(1, len(nodes) - 1):
        d = diverters[nodes[i]]
        position = d.position_for(path[i - 1], path[i])
        assert position is not None, "_paths_from crosses a diverter only along one of its positions"
        settings.append((d.id, position, 4 * i))
    cps: list[Checkpoint] = []
    for i, leg in enumerate(legs):
        if leg.forward:
            cps.append(Checkpoint(len(cps), "eye", leg.eye, 4 * i + 3, leg.start_m + leg.length_m))
        else:
            cps.append(Checkpoint(len(cps), "eye", leg.eye, 4 * i + 1, leg.start_m))
    cps.append(Checkpoint(len(cps), "arrival", dest, 4 * len(legs), pos))
    direction = BLOW if dist.get(dest, 0.0) >= dist.get(origin, 0.0) else SUCK
    setup = max((diverters[d].travel_time_s for d, _, _ in settings), default=0.0)
    return Route(origin, dest, tuple(nodes), tuple(legs), tuple(settings), tuple(cps), pos, direction,
                 setup, blower.spinup_s + pos / blower.speed_m_s)
