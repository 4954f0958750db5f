"""Another size by tube, end to end (issue 5): a customer asks for another size on the mirror
(headless Chromium), the size is only in the stockroom, so the gateway dispatches it by tube;
the real tube firmware (four stations, the line controller) and the real fitting-room firmware
run on one virtual rig (boards/rigs/tube-virtual.json + the fitting room of
boards/rigs/virtual.json), staff load and send the carrier, take it out at the fitting-rooms
station and hang it in the room; the mirror shows each step."""
from __future__ import annotations

import json
import os

import httpx

from gateway.kinds.fitting_room.demo import DEMO_STOCK
from hil.harness import wait_for
from hil.rig import ROOT
from tests.support.fitting import SHIRT_L, SHIRT_M, requests, wait_gtins
from tests.support.tube import NETWORK, WIRING, T, tube_store

ROOM = "room-1"


def _wiring(tmp_path):
    """The tube rig plus the virtual rig's fitting room (its tags included)."""
    tube = json.loads(WIRING.read_text())
    room = json.loads((ROOT / "boards" / "rigs" / "virtual.json").read_text())["devices"][ROOM]
    tube["tube"] = str(NETWORK)
    tube["devices"][ROOM] = room
    path = tmp_path / "tube-fitting.json"
    path.write_text(json.dumps(tube))
    return path


def test_size_from_the_mirror_comes_by_tube(tmp_path, broker, browser):
    with tube_store(tmp_path, broker, wiring=_wiring(tmp_path),
                    extra_args=["--stock", str(DEMO_STOCK), "--fitting-tube-station", "fitting-rooms"]) as line:
        gw, rig = line.gw, line.rig
        rig.set_input(ROOM, "occupancy", 1)
        rig.add_tag(ROOM, "shirt-m")
        wait_gtins(gw, ROOM, [SHIRT_M])
        page = browser.new_page(viewport={"width": 900, "height": 1000})
        try:
            page.goto(f"{gw.url}/mirror/{ROOM}#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")  # gateway/http/web/auth.js
            garment = page.locator(f'[data-testid="garment"][data-gtin="{SHIRT_M}"]')
            garment.wait_for(timeout=T * 1000)
            garment.locator(f'[data-testid="variant"][data-gtin="{SHIRT_L}"] [data-testid="ask-size"]').click()
            state = page.locator('[data-testid="request"][data-kind="size"] .state')
            state.wait_for(timeout=T * 1000)
            # the request is stored (as staff's) before the dispatcher acts on it, and shows the
            # tube only once the dispatch is recorded: wait for that, not for the request alone
            q = wait_for(lambda: next((r for r in requests(gw, ROOM, "size")
                                       if r.get("dispatch") or r.get("fallback")), None),
                         T, what="size request with its dispatcher's answer")
            assert q["gtin"] == SHIRT_L and q["where"] == "stockroom" and q["via"] == "tube"
            job = q["dispatch"]["job"]
            rec = line.job(job)
            assert (rec["from"], rec["to"], rec["priority"]) == ("stockroom", "fitting-rooms", "customer")
            wait_for(lambda: "waiting for the tube" in state.inner_text(), T, what="mirror: queued")

            line.send("stockroom", rec["item"])  # staff load it in the stockroom and press send
            line.wait_state(job, "arrived")
            wait_for(lambda: "arrived at the tube station" in state.inner_text(), T,
                     what="mirror: arrived")
            assert state.get_attribute("data-via") == "tube"
            line.take("fitting-rooms")  # an associate takes it out and brings it to the room
            line.wait_state(job, "delivered")
            rig.add_tag(ROOM, "shirt-l")
            page.locator('[data-testid="request"][data-kind="size"][data-state="done"]').wait_for(
                timeout=T * 1000)
            assert state.inner_text() == "done"
        finally:
            page.close()
        done = next(r for r in requests(gw, ROOM, "size") if r["id"] == q["id"])
        assert (done["state"], done["reason"], done["dispatch"]["state"]) == ("done", "delivered", "delivered")
        history = [h[0] for h in done["history"]]
        assert history == ["open", "on_the_way", "done"], history
        assert [a[1:] for a in line.model.arrivals] == [("stockroom", "fitting-rooms")]
        assert len(httpx.get(gw.url + "/tube/dispatches", timeout=10).json()) == 1
