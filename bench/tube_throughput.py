"""Tube dispatch throughput under saturated demand, against the line's physical capacity.

    .venv/bin/python bench/tube_throughput.py            # 1500 dispatches per scenario (~10 s)
    .venv/bin/python bench/tube_throughput.py --quick    # CI smoke: 150 per scenario
    .venv/bin/python bench/tube_throughput.py --load 8 --unload 5 --return-share 0.2 --backlog 12

The real arbiter (gateway/kinds/tube/core.py) drives the discrete-event world (hil/sim/tube_world.py):
diverters take their travel time, carriers fly at the blower speed after its spin-up, staff
load a carrier `--load` s after the station asks and empty a bin `--unload` s after arrival.
Demand is saturated: a backlog of `--backlog` requests is always waiting (topped up whenever one
enters the line). Figures are measured between the 10th and 90th percentile deliveries.

Columns
  disp/h        deliveries per hour in the measured window
  line busy     share of the window with at least one dispatch in the line (routing, in transit, held)
  busiest seg   the tube segment reserved for the largest share of the window (under the
                arbiter's rules: from route start until the carrier has passed / arrived)
  capacity/h    physical capacity: 3600 / the busiest resource's unavoidable work per dispatch,
                for the delivered mix: staff loading (load s per send) and unloading (unload s per
                receive) at each station; every segment of a route is occupied for that route's
                transit (spin-up + length/speed) because one air column drives one carrier; with
                one blower, the sum of transits. Diverter travel is not counted: it is overhead.
  ratio         disp/h / capacity/h
  pipelined/h   the same bound if carriers only occupied the segment they are in (ideal
                segment-by-segment reservation with per-segment air): what whole-route costs at most
  wait p50      request -> route start, median, customer / replenishment
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.kinds.tube.core import (
    DELIVERED,
    LINE_STATES,
    QUEUED,
    ROUTING,
    ArbiterPolicy,
    DispatchRequest,
    TubeArbiter,
    TubeNetwork,
)
from hil.sim.tube_world import TubeWorld

DEFAULT_NETWORK = ROOT / "boards" / "tube" / "store-demo.json"


@dataclass(frozen=True)
class Scenario:
    label: str
    reservation: str
    one_blower: bool
    load_s: float
    unload_s: float
    preposition: bool = True


@dataclass
class Result:
    scenario: Scenario
    delivered: int
    per_hour: float
    line_busy: float
    busiest: tuple[str, float]
    capacity: float
    binding: str
    pipelined: float
    serial: float
    wait_customer: float
    wait_replenishment: float
    saturated: bool
    lost: int


class Demand:
    """Request mix: `return_share` go floor -> stockroom (replenishment priority, e.g. items a
    customer did not take); the rest stockroom -> floor, `customer_share` of them for a waiting
    customer. Stations are drawn uniformly."""

    def __init__(self, net: TubeNetwork, seed: int, customer_share: float, return_share: float):
        self.rng = random.Random(seed)
        self.floors = sorted(s.id for s in net.stations.values() if s.kind == "floor")
        self.stock = sorted(s.id for s in net.stations.values() if s.kind == "stockroom")
        self.customer_share, self.return_share = customer_share, return_share
        self.n = 0

    def next(self, now: float) -> DispatchRequest:
        self.n += 1
        r = self.rng
        if r.random() < self.return_share:
            o, d, p = r.choice(self.floors), r.choice(self.stock), "replenishment"
        else:
            o, d = r.choice(self.stock), r.choice(self.floors)
            p = "customer" if r.random() < self.customer_share else "replenishment"
        return DispatchRequest(f"D{self.n:05d}", o, d, p, f"SKU-{self.n}", now)


def _union_within(intervals: list[tuple[float, float]], a: float, b: float) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted((max(s, a), min(e, b)) for s, e in intervals if e > a and s < b):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def run(cfg: dict, sc: Scenario, args) -> Result:
    cfg = json.loads(json.dumps(cfg))
    cfg["blower"]["max_concurrent"] = 1 if sc.one_blower else None
    net = TubeNetwork.from_dict(cfg)
    arb = TubeArbiter(net, ArbiterPolicy(reservation=sc.reservation, preposition=sc.preposition))
    demand = Demand(net, args.seed, args.customer_share, args.return_share)
    waiting: set[str] = set()

    def top_up(world: TubeWorld) -> None:
        for _, u in world.updates[top_up.seen:]:
            if u.state != QUEUED:
                waiting.discard(u.job_id)
        top_up.seen = len(world.updates)
        while len(waiting) < args.backlog and demand.n < args.jobs:
            req = demand.next(world.now)
            waiting.add(req.id)
            world.submit(req)
    top_up.seen = 0

    world = TubeWorld(arb, load_s=sc.load_s, unload_s=sc.unload_s, observe=top_up)
    for _ in range(args.backlog):
        req = demand.next(0.0)
        waiting.add(req.id)
        world.submit(req, at=0.0)
    world.run()

    delivered_at = world.times(DELIVERED)
    times = sorted(delivered_at.values())
    n = len(times)
    ia, ib = int(0.1 * n), int(0.9 * n) - 1
    a, b = times[ia], times[ib]
    per_hour = (ib - ia) / (b - a) * 3600 if b > a else float("nan")

    # line busy: union of every dispatch's time in the line
    entered: dict[str, float] = {}
    line: list[tuple[float, float]] = []
    for t, u in world.updates:
        if u.state in LINE_STATES and u.job_id not in entered:
            entered[u.job_id] = t
        elif u.state not in LINE_STATES and u.job_id in entered:
            line.append((entered.pop(u.job_id), t))
    line_busy = _union_within(line, a, b) / (b - a)
    util = {r: _union_within(iv, a, b) / (b - a) for r, iv in world.hold_intervals.items()}
    busiest = max(((r, u) for r, u in util.items() if r.startswith("seg:")), key=lambda kv: kv[1])

    # bounds from the delivered mix
    reqs = {j.request.id: j.request for j in arb.jobs() if j.state == DELIVERED}
    capacity, binding, pipelined, serial = bounds(net, list(reqs.values()), sc.load_s, sc.unload_s,
                                                  sc.one_blower)

    # waits, and whether the backlog ever ran dry inside the window
    routed = world.times(ROUTING)
    waits = {"customer": [], "replenishment": []}
    for jid, r in reqs.items():
        if a <= delivered_at[jid] <= b:
            waits[r.priority].append(routed[jid] - r.created)
    created = sorted(r.created for r in reqs.values())
    saturated = created[-1] >= b or demand.n < args.jobs
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    lost = sum(1 for _, u in world.updates if u.state == "lost")
    return Result(sc, n, per_hour, line_busy, busiest, capacity, binding, pipelined,
                  3600 / statistics.mean(serial), med(waits["customer"]), med(waits["replenishment"]),
                  saturated, lost)


def bounds(net: TubeNetwork, reqs: list[DispatchRequest], load_s: float, unload_s: float,
           one_blower: bool = False) -> tuple[float, str, float, list[float]]:
    """(capacity/h, binding resource, pipelined/h, serial s per dispatch) for a delivered mix
    (see "Columns" above)."""
    work: dict[str, float] = {}
    pipe: dict[str, float] = {}
    serial = []
    speed = net.blower.speed_m_s
    for r in reqs:
        route = net.route(r.origin, r.destination)
        for w in (work, pipe):
            w[f"send:{r.origin}"] = w.get(f"send:{r.origin}", 0.0) + load_s
            w[f"recv:{r.destination}"] = w.get(f"recv:{r.destination}", 0.0) + unload_s
        for leg in route.legs:
            work[f"seg:{leg.segment_id}"] = work.get(f"seg:{leg.segment_id}", 0.0) + route.transit_s
            pipe[f"seg:{leg.segment_id}"] = pipe.get(f"seg:{leg.segment_id}", 0.0) + leg.length_m / speed
        if one_blower:
            work["blower"] = work.get("blower", 0.0) + route.transit_s
            pipe["blower"] = pipe.get("blower", 0.0) + route.transit_s
        serial.append(load_s + route.setup_s + route.transit_s + unload_s)
    binding, heaviest = max(work.items(), key=lambda kv: kv[1])
    return 3600 * len(reqs) / heaviest, binding, 3600 * len(reqs) / max(pipe.values()), serial


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", type=Path, default=DEFAULT_NETWORK)
    p.add_argument("--jobs", type=int, default=1500, help="dispatches per scenario")
    p.add_argument("--quick", action="store_true", help="CI smoke run: 150 dispatches per scenario")
    p.add_argument("--load", type=float, default=8.0, help="s for staff to load a carrier and press send")
    p.add_argument("--unload", type=float, default=5.0, help="s for staff to take a carrier out of a bin")
    p.add_argument("--customer-share", type=float, default=0.6)
    p.add_argument("--return-share", type=float, default=0.2)
    p.add_argument("--backlog", type=int, default=12, help="requests always waiting (saturated demand)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs = 150

    cfg = json.loads(args.network.read_text())
    L, U = args.load, args.unload
    scenarios = [
        Scenario("whole route, air per route", "route", False, L, U),
        Scenario("release behind, air per route", "release_behind", False, L, U),
        Scenario("whole route, no diverter pre-positioning", "route", False, L, U, preposition=False),
        Scenario("whole route, one blower", "route", True, L, U),
        Scenario("whole route, pre-loaded (load 0 s)", "route", False, 0.0, U),
        Scenario("release behind, pre-loaded (load 0 s)", "release_behind", False, 0.0, U),
    ]
    net = TubeNetwork.from_dict(cfg)
    print(f"Tube throughput: network {net.name!r} ({len(net.stations)} stations, {len(net.diverters)} diverters, "
          f"{len(net.segments)} segments), blower {net.blower.speed_m_s} m/s + {net.blower.spinup_s} s spin-up")
    print(f"{args.jobs} dispatches per scenario, backlog {args.backlog}, load {L:g} s, unload {U:g} s, "
          f"mix: {args.return_share:.0%} floor->stockroom, rest stockroom->floor ({args.customer_share:.0%} customer), "
          f"seed {args.seed}")
    print()
    hdr = (f"{'scenario':<40} {'disp/h':>7} {'line busy':>9}  {'busiest seg':<14} {'capacity/h':>10}  "
           f"{'binding':<16} {'ratio':>5} {'pipelined/h':>11}  {'wait p50 C/R s':>14}")
    print(hdr)
    print("-" * len(hdr))
    results = []
    t0 = time.perf_counter()
    for sc in scenarios:
        r = run(cfg, sc, args)
        results.append(r)
        flag = "" if r.saturated else "  (backlog ran dry)"
        flag += f"  ({r.lost} lost!)" if r.lost else ""
        print(f"{sc.label:<40} {r.per_hour:>7.0f} {r.line_busy:>9.0%}  "
              f"{r.busiest[0][4:] + ' ' + format(r.busiest[1], '.0%'):<14} {r.capacity:>10.0f}  {r.binding:<16} "
              f"{r.per_hour / r.capacity:>5.2f} {r.pipelined:>11.0f}  "
              f"{r.wait_customer:>6.0f} / {r.wait_replenishment:<6.0f}{flag}")
    print("-" * len(hdr))
    by = {r.scenario.label: r for r in results}

    def cost(whole, behind):
        w, b = by[whole].per_hour, by[behind].per_hour
        return f"{(b - w) / b:+.1%}" if b else "n/a"
    print(f"whole-route vs release-behind: {cost(scenarios[0].label, scenarios[1].label)} throughput lost with "
          f"{L:g} s loading, {cost(scenarios[4].label, scenarios[5].label)} with pre-loaded carriers")
    print(f"diverter pre-positioning: {cost(scenarios[2].label, scenarios[0].label)} throughput gained "
          f"with {L:g} s loading")
    print(f"naive serial (load + diverters + transit + unload, one at a time): "
          f"{results[0].serial:.0f}/h with {L:g} s loading")
    print(f"({time.perf_counter() - t0:.1f} s; rerun: .venv/bin/python bench/tube_throughput.py"
          f"{' --quick' if args.quick else ''})")
    if args.json:
        args.json.write_text(json.dumps([{**r.__dict__, "scenario": r.scenario.__dict__} for r in results], indent=2))
    bad = [r for r in results if r.lost or not r.delivered]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
