"""Heap scenarios of the tube apps for bench/fw_heap.py (`--app tube-station`, `--app tube-line`).

Each plays one board's job against the real gateway: commands through the API, inputs driven on
the virtual rig, events waited for until persisted. Returns input -> event persisted latencies (ms).
"""
from __future__ import annotations

import time
from pathlib import Path

import httpx

from hil.harness import GatewayProcess, wait_for
from hil.sim.firmware import FirmwareProcess
from hil.sim.store import VirtualStore

ROOT = Path(__file__).resolve().parents[1]
NETWORK = ROOT / "boards" / "tube" / "virtual-fast.json"
LINE_APP = {"diverters": [{"id": "DV1", "positions": ["womens", "through", "cross"], "travel_ms": 400},
                          {"id": "DV2", "positions": ["fitting", "mens", "cross"], "travel_ms": 400}],
            "eyes": ["PE-T2"]}


def add(store: VirtualStore, dev: str, kind: str) -> FirmwareProcess:
    app = {"station": "stockroom", "eyes": ["PE-T1"]} if kind == "tube-station" else LINE_APP
    store.rig.device(dev)
    fw = FirmwareProcess(store._config(dev, kind, app), store.workdir, store.heap)
    store.devices[dev] = fw
    return fw


def _cmd(gw: GatewayProcess, dev: str, name: str, args: dict, want: str = "done") -> dict:
    r = httpx.post(f"{gw.url}/devices/{dev}/commands", timeout=30, json={
        "name": name, "args": args, "idempotency_key": f"bench-{time.time_ns()}", "timeout_s": 15})
    body = r.json()
    if body.get("status") != want:
        raise RuntimeError(f"{name} {args}: {body.get('status')} {body.get('reason')}")
    return body


def _event(gw: GatewayProcess, dev: str, etype: str, n: int, t0: float, out: list[float]) -> None:
    wait_for(lambda: len(gw.events(dev, etype)) >= n, 20, what=f"{etype} persisted")
    out.append((time.monotonic() - t0) * 1000)


def station_scenario(store: VirtualStore, gw: GatewayProcess, dev: str) -> list[float]:
    """load shown, carrier loaded, send pressed, air on as origin (gate), carrier sent, an eye,
    air off, an arrival and its removal, air on as destination cut by the door."""
    sim, fw, lat = store.rig.device(dev), store.devices[dev], []
    fw.wait_line(r"online session", 20)
    _cmd(gw, dev, "load", {"job": "J1", "item": "SKU-1", "to": "fitting-rooms"})
    t0 = time.monotonic()
    sim.set_input("chamber", 1)
    _event(gw, dev, "carrier.loaded", 1, t0, lat)
    sim.set_input("send", 1)
    time.sleep(0.15)
    sim.set_input("send", 0)
    _event(gw, dev, "send.pressed", 1, t0, [])
    air = {"on": True, "dir": "blow", "role": "origin", "job": "J1", "seq": 1}
    if _cmd(gw, dev, "air", air)["result"]["gate"] != 1:
        raise RuntimeError("gate did not open")
    t0 = time.monotonic()
    sim.set_input("chamber", 0)
    sim.set_input("PE-T1", 1)
    _event(gw, dev, "carrier.sent", 1, t0, lat)
    sim.set_input("PE-T1", 0)
    _event(gw, dev, "eye", 1, t0, [])
    _cmd(gw, dev, "air", {"on": False, "job": "J1", "seq": 2})
    t0 = time.monotonic()
    sim.set_input("bin", 1)
    _event(gw, dev, "carrier.arrived", 1, t0, lat)
    sim.set_input("bin", 0)
    _event(gw, dev, "carrier.removed", 1, t0, [])
    _cmd(gw, dev, "air", {"on": True, "dir": "suck", "role": "destination", "job": "J2", "seq": 3})
    t0 = time.monotonic()
    sim.set_input("door", 1)
    _event(gw, dev, "air.cut", 1, t0, lat)
    if sim.output("air") != 0:
        raise RuntimeError("air still on with the door open")
    if not fw.alive():
        raise RuntimeError("firmware died")
    return lat


def line_scenario(store: VirtualStore, gw: GatewayProcess, dev: str) -> list[float]:
    """Three diverter moves confirmed by their limit switches (the virtual line turns them), and
    an eye pulse. Latency: command -> done."""
    from hil.sim.tube import TubeLineModel

    nodes = {"stockroom": "nx-1", "floor-womens": "nx-2", "floor-mens": "nx-3", "fitting-rooms": "nx-4",
             "DV1": dev, "DV2": dev, "PE-T2": dev}
    model = TubeLineModel(store.rig, NETWORK, nodes).start()
    fw, lat = store.devices[dev], []
    try:
        fw.wait_line(r"online session", 20)
        for seq, (d, p) in enumerate((("DV1", "cross"), ("DV2", "mens"), ("DV1", "womens")), 1):
            t0 = time.monotonic()
            if _cmd(gw, dev, "set_diverter", {"diverter": d, "position": p, "seq": seq})["result"]["position"] != p:
                raise RuntimeError(f"{d} not at {p}")
            lat.append((time.monotonic() - t0) * 1000)
        sim = store.rig.device(dev)
        t0 = time.monotonic()
        sim.set_input("PE-T2", 1)
        _event(gw, dev, "eye", 1, t0, lat)
        sim.set_input("PE-T2", 0)
        if not fw.alive():
            raise RuntimeError("firmware died")
        return lat
    finally:
        model.stop()
