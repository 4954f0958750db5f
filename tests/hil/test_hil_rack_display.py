"""Rack display end to end on the virtual rig: the real gateway (subprocess), a real Mosquitto,
the real firmware in MicroPython with its SSD1306 driver, and the emulated panel the test reads
(hil/drivers/rack_display.py). Likes go in through `POST /likes` as the online shop sends them;
what must follow is read off the panel's pixels. The final picture of each scenario is saved as
a PNG in artifacts/traces/ (with the rig's VCD/PNG/JSON trace).

The rig is `boards/rigs/rack-virtual.json` (device `rack-1`)."""
from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from hil.harness import GatewayProcess
from hil.pytest_plugin import write_artifacts
from hil.rig import ROOT, VirtualRigBackend

WIRING = ROOT / "boards" / "rigs" / "rack-virtual.json"


@pytest.fixture
def gw(broker, tmp_path):
    g = GatewayProcess(tmp_path / "gw", broker.port).start()
    yield g
    g.stop()


@pytest.fixture
def rack(request, broker, tmp_path, gw):
    r = VirtualRigBackend(tmp_path / "rig", ("127.0.0.1", broker.port), wiring=WIRING)
    r.trace.title = request.node.nodeid
    r.tap_broker()
    d = r.device("rack-1")
    yield d
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    out = ROOT / "artifacts" / "traces"
    try:
        d.screen_png(out / f"{stem}.rack-1.screen.png")
        write_artifacts(r, out, stem)
    finally:
        r.close()


def _likes(gw: GatewayProcess, *events: dict) -> dict:
    r = httpx.post(f"{gw.url}/likes", json={"events": list(events)}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _map(gw: GatewayProcess, products: list[str]) -> dict:
    r = httpx.put(f"{gw.url}/racks/rack-1", json={"label": "DENIM", "products": products}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_likes_posted_reach_the_screen_and_duplicates_count_once(gw, rack):
    rack.start()
    _map(gw, ["P-1", "P-2"])
    assert rack.wait_screen("0") == ["DENIM", "0", ""]
    assert _likes(gw, {"id": "e1", "product": "P-1"}, {"id": "e2", "product": "P-2"},
                  {"id": "e3", "product": "P-3"}) == {"accepted": 3, "duplicates": 0}
    rack.wait_screen("2")
    # the shop's retry of the same events, plus one new
    assert _likes(gw, {"id": "e1", "product": "P-1"}, {"id": "e2", "product": "P-2"},
                  {"id": "e4", "product": "P-2"}) == {"accepted": 1, "duplicates": 2}
    assert rack.wait_screen("3") == ["DENIM", "3", ""]
    view = gw.get("/racks/rack-1")
    assert view["likes"] == 3 and view["shown_rev"] == view["rev"]


def test_an_offline_display_shows_last_known_then_catches_up(gw, rack):
    rack.start()
    _map(gw, ["P-1"])
    _likes(gw, {"id": "o1", "product": "P-1"})
    rack.wait_screen("1")
    rack.power_cut()  # the display goes away; likes keep coming
    _likes(gw, *({"id": f"o{i}", "product": "P-1"} for i in range(2, 5)))
    gw.stop()  # ... and it comes back while nobody can tell it the news
    rack.power_on()
    assert rack.wait_screen("1", "LAST KNOWN", timeout=30) == ["DENIM", "1", "LAST KNOWN"]
    gw.start()  # the gateway finds its birth and sends the current state
    assert rack.wait_screen("4", timeout=30) == ["DENIM", "4", ""]
    _likes(gw, {"id": "o5", "product": "P-1"})
    assert rack.wait_screen("5") == ["DENIM", "5", ""]


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_a_burst_of_500_likes_is_coalesced(gw, rack):
    rack.start()
    _map(gw, ["P-1"])
    rack.wait_screen("0")
    panel = rack._panel()
    frames0, shows0 = panel.frames, len(rack.messages(kind="cmd"))
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:  # the shop posts 500 likes one by one, 8 at a time
        list(pool.map(lambda i: _likes(gw, {"id": f"b{i}", "product": "P-1"}), range(500)))
    assert rack.wait_screen("500", timeout=30) == ["DENIM", "500", ""]
    elapsed = time.monotonic() - t0
    redraws = panel.frames - frames0
    shows = [m for m in rack.messages(kind="cmd")[shows0:] if m["body"]["name"] == "show"]
    # coalesced: at most one show per 250 ms (and one redraw per refresh), latest wins; not
    # one per like (the bound is a rate over the time the burst took, whatever the machine)
    assert 1 <= len(shows) <= 2 + elapsed / 0.25 and len(shows) < 500, (len(shows), elapsed)
    assert 1 <= redraws <= 2 + elapsed / 0.25 + len(shows), (redraws, elapsed)
    assert shows[-1]["body"]["args"]["likes"] == 500
    # the shop replays the last 50: all duplicates, nothing changes
    assert _likes(gw, *({"id": f"b{i}", "product": "P-1"} for i in range(450, 500))) == \
        {"accepted": 0, "duplicates": 50}
    assert gw.get("/racks/rack-1")["likes"] == 500
