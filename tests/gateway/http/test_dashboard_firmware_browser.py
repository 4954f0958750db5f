"""The dashboard's firmware panel in headless Chromium (docs/ota.md, docs/dashboard.md): each
device's running version, and the rollout's progress canary -> percentage -> all, halted and
why. Behind it: the gateway process, a real Mosquitto and two sample pads on the real firmware
at the heap goal (96k). The canary's key in the gateway's coap-keys.json is not the one in its
config (as after a re-provisioned device whose key file was not copied): it refuses the offer
as `bad-signature` and the rollout halts at the canary. Screenshot:
var/artifacts/dashboard-firmware.png."""
from __future__ import annotations

import json
import os
import secrets

import httpx

from hil.harness import GatewayProcess, wait_for
from hil.sim.store import VirtualStore
from tests.support.browser import shot
from tools.firmware import build

PADS = ("fw-dash-1", "fw-dash-2")


def test_the_dashboard_shows_versions_and_a_rollout_halted_at_the_canary(browser, broker, tmp_path):
    store = VirtualStore(tmp_path / "store", broker_port=broker.port, keepalive=5)
    keys = {}
    for dev in PADS:
        store.add_pad(dev)
        fw = store.devices[dev]
        fw.heap = "96k"
        fw.config["coap"] = {"host": "127.0.0.1", "port": 5683, "key": secrets.token_hex(32)}
        fw.config_path.write_text(json.dumps(fw.config))
        keys[dev] = fw.config["coap"]["key"]
    keys[PADS[0]] = secrets.token_hex(32)  # the gateway signs the canary's offer with a wrong key
    (tmp_path / "coap-keys.json").write_text(json.dumps(keys))
    gw = GatewayProcess(tmp_path / "gw", broker.port,
                        extra_args=["--coap-keys", str(tmp_path / "coap-keys.json")]).start()
    page = None
    try:
        store.start()
        wait_for(lambda: {d["id"]: d["fw"] for d in gw.get("/devices")} == dict.fromkeys(PADS, "0.1.0"),
                 30, what="the pads online on 0.1.0")
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"{gw.url}/dashboard#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
        page.locator("#live.on").wait_for(timeout=20_000)
        assert "No rollout yet" in page.locator("#firmware").inner_text()
        for dev in PADS:  # each device's version in the devices table
            assert "0.1.0" in page.locator(f'#devices [data-device="{dev}"]').inner_text()

        r = httpx.post(gw.url + "/firmware", content=build("9.2.0"),
                       headers={"Content-Type": "application/zip"}, timeout=30)
        assert r.status_code == 201, r.text
        r = httpx.post(gw.url + "/firmware/rollouts", json={"version": "9.2.0", "percent": 50}, timeout=30)
        assert r.status_code == 201, r.text
        ro = r.json()
        panel = page.locator(f'[data-rollout="{ro["id"]}"]')
        panel.wait_for(timeout=20_000)  # polled every 5 s, and on every ota.* event
        halted = page.locator(f'[data-rollout="{ro["id"]}"][data-status="halted"]')
        halted.wait_for(timeout=40_000)
        why = halted.locator(".halted-why").inner_text()
        assert why.startswith("Halted: ") and PADS[0] in why and "bad-signature" in why, why
        assert halted.locator(".stage.halted").get_attribute("data-stage") == "canary"
        assert "50 %" in halted.locator('.stage[data-stage="percent"]').inner_text()
        canary = halted.locator(f'[data-rollout-device="{PADS[0]}"]')
        assert canary.get_attribute("data-state") == "failed" and "0.1.0" in canary.inner_text()
        assert halted.locator(f'[data-rollout-device="{PADS[1]}"]').get_attribute("data-state") == "waiting"
        # the API says the same
        api = gw.get(f"/firmware/rollouts/{ro['id']}")
        assert api["status"] == "halted" and api["stage"] == "canary" and api["reason"] in why
        path = shot(page, "dashboard-firmware")
        assert path.stat().st_size > 10_000
    finally:
        if page is not None:
            page.close()
        store.stop()
        gw.stop()
