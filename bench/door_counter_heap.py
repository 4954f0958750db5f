"""Heap scenario of the door counter for bench/fw_heap.py (`--app door-counter`).

Plays the doorway on the virtual rig against the real gateway: people walking in and out, one
back to back, someone stopping in the beams, a bag swinging, a beam stuck and cleared, the
`status` and `reset` commands; waits until the gateway has the counts. Returns crossing ->
footfall persisted latencies (ms: mostly the 2 s period the counts wait for)."""
from __future__ import annotations

import time

import httpx

from hil.harness import GatewayProcess, wait_for
from hil.sim.store import VirtualStore

PREFIX = "door"
WHAT = "walk->persisted"
APP = {"poll_ms": 5, "period_s": 2, "stuck_s": 2}


def add(store: VirtualStore, dev: str) -> None:
    store.add("door-counter", dev, **APP)


def _cmd(gw: GatewayProcess, dev: str, name: str, args: dict) -> dict:
    r = httpx.post(f"{gw.url}/devices/{dev}/commands", timeout=30, json={
        "name": name, "args": args, "idempotency_key": f"bench-{time.time_ns()}", "timeout_s": 15})
    body = r.json()
    if body.get("status") != "done":
        raise RuntimeError(f"{name}: {body.get('status')} {body.get('reason')}")
    return body["result"]


def _totals(gw: GatewayProcess, dev: str) -> tuple[int, int]:
    ff = [e["body"] for e in gw.events(dev, "footfall")]
    return sum(b["in"] for b in ff), sum(b["out"] for b in ff)


def scenario(store: VirtualStore, gw: GatewayProcess, dev: str) -> list[float]:
    door, fw, lat = store.handles["door-counter"][dev], store.devices[dev], []
    fw.wait_line(r"online session", 20)
    for want, act in (((1, 0), door.walk_in), ((3, 0), lambda: door.back_to_back(2)),
                      ((3, 1), door.walk_out), ((4, 1), lambda: door.stop_in_beam(0.5)),
                      ((4, 1), door.turn_back)):
        act()
        door.bag_swing(2)
        t0 = time.monotonic()
        wait_for(lambda want=want: _totals(gw, dev) == want, 20, what=f"counts {want}")
        lat.append((time.monotonic() - t0) * 1000)
    if _cmd(gw, dev, "status", {})["occupancy"] != 3:
        raise RuntimeError("occupancy is not 3")
    _cmd(gw, dev, "reset", {"occupancy": 0})
    door.block_beam("A")
    wait_for(lambda: gw.events(dev, "beam.stuck"), 20, what="beam.stuck")
    door.block_beam("A", False)
    wait_for(lambda: gw.events(dev, "beam.cleared"), 20, what="beam.cleared")
    if not fw.alive():
        raise RuntimeError("firmware died")
    return lat
