"""The fitting room in tests (docs/fitting-rooms.md): the demo stock's GTINs, the gateway with
that stock (`fitting_gw`) and the rig's room online at it (`room`), reading the room's garments
and the staff requests through the API."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hil.harness import GatewayProcess, wait_for

STOCK = Path(__file__).resolve().parents[2] / "gateway" / "demo" / "stock.json"
SHIRT_M, SHIRT_L, SHIRT_WHITE, CHINO = "09506000134352", "09506000134369", "09506000134376", "09506000134383"


@pytest.fixture
def fitting_gw(tmp_path, rig_broker):
    """A gateway process on the rig's broker with the demo stock and the back-and-forth alert
    after 3 swaps (tests that also use the conftest's `gw` name override it with this one)."""
    g = GatewayProcess(tmp_path / "gw", rig_broker[1],
                       extra_args=["--stock", str(STOCK), "--fitting-swaps", "3",
                                   "--fitting-swap-window", "600"]).start()
    yield g
    g.stop()


@pytest.fixture
def room(rig, fitting_gw):
    """The rig's fitting room, started and online at `fitting_gw`."""
    gw = fitting_gw
    r = rig.device_of_kind("fitting-room")
    r.start()
    wait_for(lambda: any(d["id"] == r.dev and d["online"] for d in gw.get("/devices")), 20,
             what=f"{r.dev} online at the gateway")
    return r


def view(gw, dev):
    r = httpx.get(f"{gw.url}/fitting/rooms/{dev}", timeout=10)
    return r.json() if r.status_code == 200 else None


def gtins_in(gw, dev):
    v = view(gw, dev)
    return sorted(g["gtin"] or g["uid"] for g in v["garments"]) if v else None


def wait_gtins(gw, dev, want, timeout=20):
    return wait_for(lambda: gtins_in(gw, dev) == sorted(want), timeout,
                    what=f"{dev} garments {sorted(want)} (have {gtins_in(gw, dev)})")


def requests(gw, dev, kind=None):
    return [q for q in gw.get("/fitting/requests", room=dev) if kind is None or q["kind"] == kind]
