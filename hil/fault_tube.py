"""The tube line of the fault suite (hil/faults.py): two stations and a line controller on the
real firmware, the virtual tube line between them (hil/sim/tube.py), staff who load and empty
carriers, and the two tube invariants, computed from evidence the arbiter does not write:

* **one carrier per segment**: the line model's own record of how many carriers each segment
  held at once (`TubeLineModel.max_occupancy` / `crowded`), AND the gateway's persisted
  dispatch records (`tube_jobs`): the spans each dispatch spent in the tube, against the
  segments of its route, must not overlap on a shared segment.
* **no capsule lost**: every dispatch the world requested ends delivered, or cancelled / failed
  with a reason, in `tube_jobs`; the line holds no carrier in a tube, and each delivery matches
  one physical arrival at that destination (`TubeLineModel.arrivals`).

The checkers are pure functions (`one_carrier_per_segment`, `no_capsule_lost`) so a unit test
can feed them a recorded violation (tests/hil/test_faults.py).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway.kinds.tube.network import TubeNetwork
from hil.harness import wait_for
from hil.rig import VirtualRigBackend

STATIONS = {"stockroom": "tube-f-stock", "floor": "tube-f-floor"}
LINE = "tube-f-line"
# stockroom ──T1 6 m── DV1 ──T2 4.5 m── floor (the line controller drives DV1; a short line
# with the quick timings of boards/tube/virtual-fast.json)
NETWORK = {
    "name": "faults-line",
    "stations": [{"id": "stockroom", "zone": "back", "kind": "stockroom", "name": "Stockroom"},
                 {"id": "floor", "zone": "floor-1", "kind": "floor", "name": "Floor till"}],
    "diverters": [{"id": "DV1", "travel_time_s": 0.4, "positions": {"through": ["T1", "T2"]}}],
    "segments": [{"id": "T1", "from": "DV1", "to": "stockroom", "length_m": 6.0, "eye": "PE-T1"},
                 {"id": "T2", "from": "DV1", "to": "floor", "length_m": 4.5, "eye": "PE-T2"}],
    "blower": {"speed_m_s": 7.5, "at": "stockroom", "spinup_s": 0.3, "max_concurrent": None},
    "timing": {"window_factor": 1.5, "window_margin_s": 3.0},
    "devices": {"stockroom": STATIONS["stockroom"], "floor": STATIONS["floor"], "DV1": LINE,
                "PE-T1": STATIONS["stockroom"], "PE-T2": STATIONS["floor"]},
}
WIRING = {
    "rig": "faults-tube",
    "devices": {
        STATIONS["stockroom"]: {"kind": "tube-station", "app": {"station": "stockroom", "eyes": ["PE-T1"]}},
        STATIONS["floor"]: {"kind": "tube-station", "app": {"station": "floor", "eyes": ["PE-T2"]}},
        # DV1 is a two-position unit (the firmware needs a rotation); this line uses `through`
        # only, its `park` position leads to no tube of this network
        LINE: {"kind": "tube-line", "app": {
            "diverters": [{"id": "DV1", "positions": ["through", "park"], "travel_ms": 400}],
            "eyes": []}},
    },
}
FINAL = ("delivered", "cancelled", "failed")
IN_TUBE = ("in_transit", "held")   # states in which a dispatch's carrier is in the tube
T = 60                             # generous waits: 2 shared cores, many firmware processes


@dataclass
class TubeLine:
    """The tube part of the fault rig: start after the gateway, with `--tube-network
    self.network` in the gateway's arguments (see `gateway_args`)."""
    workdir: Path
    broker_port: int
    keepalive: int
    provisioned: Path | None = None                  # devices' credentials (VirtualStore)
    dispatched: list = field(default_factory=list)   # idempotency keys the world requested
    _arrivals_seen: dict = field(default_factory=dict)  # key -> arrivals its destination showed before

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.network = self.workdir / "network.json"
        self.network.write_text(json.dumps(NETWORK))
        wiring = self.workdir / "wiring.json"
        wiring.write_text(json.dumps(WIRING | {"tube": str(self.network)}))
        self.rig = VirtualRigBackend(self.workdir / "rig", ("127.0.0.1", self.broker_port),
                                     wiring=wiring, keepalive=self.keepalive)
        self.rig.store.provisioned = self.provisioned
        self.model = self.rig.tube_line()  # before power-on: it sets the idle world

    def gateway_args(self) -> list[str]:
        return ["--tube-network", str(self.network)]

    def devices(self) -> list[str]:
        return [*STATIONS.values(), LINE]

    @staticmethod
    def station(station: str) -> str:
        return STATIONS[station]

    def firmware(self, dev: str):
        return self.rig.store.devices[dev]

    def start(self) -> TubeLine:
        for dev in self.devices():
            self.rig.start(dev, timeout=40)
        return self

    def close(self) -> None:
        self.rig.close()

    # -- the world ----------------------------------------------------------------------------

    def _display(self, station: str) -> str:
        raw = self.rig.sim(STATIONS[station]).uart_from_fw.get("display", b"")
        return bytes(raw).decode(errors="replace")

    def display(self, station: str) -> str:
        """The station display's current (last) line."""
        return self._display(station).rstrip("\n").rsplit("\n", 1)[-1]

    def arrivals_shown(self, station: str) -> int:
        return self._display(station).count("Carrier arrived")

    def begin(self, gw, key: str, origin: str, dest: str) -> None:
        """A dispatch through the API; staff load the carrier when the station asks for it and
        press send. Returns once the carrier has left the chamber."""
        item = f"F-{key}"
        self._arrivals_seen[key] = self.arrivals_shown(dest)
        r = httpx.post(gw.url + "/tube/dispatches", json={
            "from": origin, "to": dest, "priority": "customer", "item": item,
            "idempotency_key": key}, timeout=30)
        assert r.status_code == 201, r.text
        self.dispatched.append(key)
        self.load_and_send(gw, key, origin)

    def load_and_send(self, gw, key: str, origin: str) -> None:
        item = f"F-{key}"
        dev = STATIONS[origin]
        wait_for(lambda: self.display(origin).startswith(f"Load {item} "), T,
                 what=f"{origin} showing {item}")
        loaded = len(gw.events(dev, "carrier.loaded"))
        self.rig.open_door(dev)
        self.rig.load_carrier(dev)
        self.rig.close_door(dev)
        # send is accepted once the station has seen the chamber full (as staff wait for it)
        wait_for(lambda: len(gw.events(dev, "carrier.loaded")) > loaded, T,
                 what=f"{origin} chamber loaded")
        self.rig.press_send(dev)
        wait_for(lambda: not self.model.held_at("chamber", origin), T,
                 what=f"carrier of {key} left {origin}")

    def finish(self, gw, key: str, dest: str) -> dict:
        """Wait for the carrier in `dest`'s bin, staff take it out; the dispatch's final record."""
        wait_for(lambda: self.model.held_at("bin", dest), T, what=f"carrier of {key} in {dest}'s bin")
        # staff take it once the station has seen it (its display says so), not within its
        # input debounce
        wait_for(lambda: self.arrivals_shown(dest) > self._arrivals_seen[key], T,
                 what=f"{dest} showing the arrival of {key}")
        self.rig.take_carrier(STATIONS[dest])
        return wait_for(lambda: (j := self.job(gw.url, key))["state"] in FINAL and j, T,
                        what=f"dispatch {key} final")

    def recover_lost(self, gw, key: str, origin: str) -> int:
        """Staff locate a lost capsule, pull it out of the tube, clear the jam (the dispatch is
        resent once) and send it again; returns how many carriers they pulled out."""
        pulled = self.model.retrieve_stuck(stopped=True)
        r = httpx.post(f"{gw.url}/tube/jams/{key}/clear", timeout=30)
        assert r.status_code == 200, r.text
        self.load_and_send(gw, key, origin)
        return pulled

    @staticmethod
    def job(url: str, key: str) -> dict:
        r = httpx.get(f"{url}/tube/dispatches/{key}", timeout=10)
        r.raise_for_status()
        return r.json()


# -- the invariants (pure: recorded evidence in, verdict out) ---------------------------------------

def in_tube_spans(record: dict) -> list[tuple[float, float]]:
    """When a dispatch's carrier was in the tube, from its persisted history: from entering
    `in_transit` until it arrived, was lost, or the dispatch ended (open span: until now)."""
    spans, start = [], None
    for t, state, _reason in record.get("history") or []:
        if state in IN_TUBE and start is None:
            start = t
        elif state not in IN_TUBE and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, float("inf")))
    return spans


def one_carrier_per_segment(network: dict, max_occupancy: dict[str, int], crowded: list,
                            records: list[dict]) -> tuple[bool, str]:
    """No segment held two carriers: the line's own record, and the gateway's persisted dispatch
    records (spans in the tube overlapping on a shared route segment)."""
    net = TubeNetwork.from_dict(network)
    physical = {seg: n for seg, n in max_occupancy.items() if n > 1}
    spans = []
    for rec in records:
        segs = set(net.route(rec["from"], rec["to"]).segments)
        spans += [(a, b, segs, rec["job"]) for a, b in in_tube_spans(rec)]
    overlaps = [(j1, j2, sorted(s1 & s2)) for i, (a1, b1, s1, j1) in enumerate(spans)
                for a2, b2, s2, j2 in spans[i + 1:] if s1 & s2 and a1 < b2 and a2 < b1]
    ok = not physical and not crowded and not overlaps
    if ok:
        return True, (f"line model: max carriers per segment {max_occupancy}; gateway: "
                      f"{len(spans)} in-tube spans of {len(records)} dispatches, none overlapping")
    return False, (f"line model: segments with >1 carrier {physical}, first crowding "
                   f"{crowded[:3]}; gateway: overlapping in-tube spans {overlaps[:3]}")


def no_capsule_lost(requested: list[str], records: list[dict], arrivals: list[tuple[int, str, str]],
                    in_tube: int) -> tuple[bool, str]:
    """Every requested dispatch is final (delivered, or cancelled/failed with a reason), no
    carrier is left in the tube, and the deliveries match the line's physical arrivals."""
    by_id = {r["job"]: r for r in records}
    missing = [k for k in requested if k not in by_id]
    unfinished = {k: by_id[k]["state"] for k in requested if k in by_id
                  and by_id[k]["state"] not in FINAL}
    no_reason = [k for k in requested if k in by_id and by_id[k]["state"] in ("cancelled", "failed")
                 and not by_id[k].get("reason")]
    delivered = Counter((by_id[k]["from"], by_id[k]["to"]) for k in requested
                        if k in by_id and by_id[k]["state"] == "delivered")
    arrived = Counter((a, b) for _, a, b in arrivals)
    ok = not (missing or unfinished or no_reason or in_tube) and delivered == arrived
    states = Counter(by_id[k]["state"] for k in requested if k in by_id)
    if ok:
        return True, (f"{len(requested)} dispatches {dict(states)}; physical arrivals "
                      f"{dict(arrived)} = deliveries; none left in the tube")
    return False, (f"missing {missing} unfinished {unfinished} failed without reason {no_reason} "
                   f"carriers in the tube {in_tube}; deliveries {dict(delivered)} vs physical "
                   f"arrivals {dict(arrived)}")
