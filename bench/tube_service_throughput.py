"""Tube dispatch throughput through the whole stack, against the line's physical capacity.

    .venv/bin/python bench/tube_service_throughput.py                 # 120 s run
    .venv/bin/python bench/tube_service_throughput.py --seconds 40    # quick look

The same measure as bench/tube_throughput.py (saturated demand, deliveries/h between the 10th
and 90th percentile deliveries, capacity from the delivered mix with the same formula), but
through the real parts: the gateway process and its tube service (SQLite, commands, events),
a real Mosquitto, the real station and line-controller firmware in `micropython` (96 KB heaps)
and the virtual tube line (hil/sim/tube.py) on boards/tube/virtual-fast.json. Staff are bots:
`--load` s after a station shows "Load ..." they open the door, load a carrier, close it and
press send; `--unload` s after a carrier drops into a bin they take it out. Demand: a backlog of
`--backlog` requests not yet in the line, posted through the API (bench/tube_throughput.py's mix).

What the ratio adds to the pure bench's: the time the I/O layer takes (event -> persisted ->
applied -> command -> device), which the pure bench does not see.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx
from tube_throughput import Demand, bounds

from gateway.kinds.tube.core import DispatchRequest, TubeNetwork
from hil.harness import GatewayProcess, Mosquitto, wait_for
from hil.rig import VirtualRigBackend

NETWORK = ROOT / "boards" / "tube" / "virtual-fast.json"
WIRING = ROOT / "boards" / "rigs" / "tube-virtual.json"


class Staff:
    """One bot per station: loads what the display asks for, empties the bin."""

    def __init__(self, rig: VirtualRigBackend, devices: dict[str, str], load_s: float, unload_s: float):
        self.rig, self.devices, self.load_s, self.unload_s = rig, devices, load_s, unload_s
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._station, args=(s,), daemon=True) for s in devices]

    def start(self) -> Staff:
        for t in self.threads:
            t.start()
        return self

    def _display(self, dev: str) -> str:
        text = bytes(self.rig.sim(dev).uart_from_fw.get("display", b"")).decode(errors="replace")
        return text.rstrip("\n").rsplit("\n", 1)[-1]

    def _station(self, station: str) -> None:
        dev = self.devices[station]
        sim = self.rig.sim(dev)
        while not self.stop.is_set():
            if sim.inputs.get("bin"):
                time.sleep(self.unload_s)
                self.rig.take_carrier(dev)
            elif self._display(dev).startswith("Load ") and not sim.inputs.get("chamber"):
                time.sleep(self.load_s)
                self.rig.open_door(dev)
                self.rig.load_carrier(dev)
                self.rig.close_door(dev)
                time.sleep(0.1)
                self.rig.press_send(dev)
                sim.wait_for(lambda d: not self._display(dev).startswith("Load "), 5)
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="how long demand is kept saturated")
    p.add_argument("--load", type=float, default=1.0, help="s for staff to load a carrier and press send")
    p.add_argument("--unload", type=float, default=1.0, help="s for staff to take a carrier out of a bin")
    p.add_argument("--backlog", type=int, default=6, help="requests always waiting")
    p.add_argument("--customer-share", type=float, default=0.6)
    p.add_argument("--return-share", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None, help="keep logs, database and flash here")
    p.add_argument("--gateway-root", type=Path, default=None,
                   help="run `python -m gateway` from this directory (e.g. main, to compare)")
    args = p.parse_args(argv)
    from ingest import load_line, machine
    print(f"machine: {machine()}", flush=True)
    print(load_line() + (f"; gateway from {args.gateway_root}" if args.gateway_root else ""),
          flush=True)

    cfg = json.loads(NETWORK.read_text())
    net = TubeNetwork.from_dict(cfg)
    stations = {s: cfg["devices"][s] for s in net.stations}
    demand = Demand(net, args.seed, args.customer_share, args.return_share)
    with tempfile.TemporaryDirectory(prefix="tube-bench-") as tmp:
        tmp = args.workdir or Path(tmp)
        broker = Mosquitto(tmp / "mosquitto").start()
        gw = GatewayProcess(tmp / "gw", broker.port, extra_args=["--tube-network", str(NETWORK),
                                                                 "--log-level", "WARNING"],
                            root=args.gateway_root).start()
        rig = VirtualRigBackend(tmp / "rig", ("127.0.0.1", broker.port), wiring=WIRING)
        staff = None
        try:
            model = rig.tube_line()
            for dev in rig.devices():
                rig.start(dev, timeout=60)
            wait_for(lambda: {d["id"] for d in gw.get("/devices") if d["online"]} >= set(rig.devices()),
                     30, what="tube devices online")
            staff = Staff(rig, stations, args.load, args.unload).start()
            posted: dict[str, DispatchRequest] = {}
            t_end = time.monotonic() + args.seconds
            while time.monotonic() < t_end:
                jobs = gw.get("/tube/dispatches")
                waiting = [j for j in jobs if j["state"] == "queued" and "routing" not in
                           [h[1] for h in j["history"]]]
                for _ in range(args.backlog - len(waiting)):
                    req = demand.next(0.0)
                    r = httpx.post(gw.url + "/tube/dispatches", json={
                        "from": req.origin, "to": req.destination, "priority": req.priority,
                        "item": req.item, "idempotency_key": req.id}, timeout=30)
                    r.raise_for_status()
                    posted[req.id] = req
                time.sleep(0.5)
            jobs = {j["job"]: j for j in gw.get("/tube/dispatches")}
        finally:
            if staff is not None:
                staff.stop.set()
            rig.close()
            gw.stop()
            broker.stop()

    delivered = {k: j for k, j in jobs.items() if j["state"] == "delivered"}
    times = sorted(next(t for t, s, _ in j["history"] if s == "delivered") for j in delivered.values())
    n = len(times)
    if n < 10:
        from collections import Counter
        print(f"only {n} dispatches delivered: run longer (--seconds); states: "
              f"{dict(Counter(j['state'] for j in jobs.values()))}; violations: {model.violations[:3]}")
        return 1
    ia, ib = int(0.1 * n), int(0.9 * n) - 1
    per_hour = (ib - ia) / (times[ib] - times[ia]) * 3600
    reqs = [posted[k] for k in delivered]
    capacity, binding, pipelined, serial = bounds(net, reqs, args.load, args.unload)
    lost = sum(1 for j in jobs.values() if any(s == "lost" for _, s, _ in j["history"]))
    waits = [next(t for t, s, _ in j["history"] if s == "routing") - j["created"] for j in delivered.values()]
    print(f"Tube throughput through the gateway service: network {net.name!r}, {args.seconds:g} s of saturated "
          f"demand (backlog {args.backlog}), load {args.load:g} s, unload {args.unload:g} s, seed {args.seed}")
    print(f"  delivered {n} ({len(jobs)} posted, {lost} lost), {per_hour:.0f} disp/h; "
          f"capacity {capacity:.0f}/h (binding {binding}); ratio {per_hour / capacity:.2f}; "
          f"pipelined {pipelined:.0f}/h; naive serial {3600 / statistics.mean(serial):.0f}/h; "
          f"wait p50 {statistics.median(waits):.1f} s")
    print(f"  line model: {len(model.arrivals)} arrivals, {len(model.violations)} violations")
    print(load_line())
    return 1 if model.violations or lost else 0


if __name__ == "__main__":
    sys.exit(main())
