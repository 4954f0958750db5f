"""Staged rollouts end to end (docs/ota.md): the gateway process, a real Mosquitto, and sample
pads on the real firmware in the virtual store. The gateway keeps the bundle (POST /firmware),
answers the chunk requests on pe/1/{dev}/ota, offers the canary first, then the others, and
halts when the canary's new firmware does not survive its boot (the pad rolls back by itself).

The pads run at 96k of heap, the goal, as in the device-side tests (tests/firmware/test_fw_ota.py):
a download goes on past a MemoryError wherever it meets one (docs/ota.md, "Heap while
downloading"); before, one outside the spots that retried ("allocating 272 bytes": the Getter's
attributes) halted a rollout in 1 run of 2."""
from __future__ import annotations

import json
import secrets
import threading

import httpx
import pytest

from hil.harness import GatewayProcess, wait_for
from hil.sim.store import VirtualStore
from tools.firmware import build

HEAP = "96k"
COAP_HEAP = "120k"  # not 96k: docs/ota.md, "What is left" (the CoAP pad's download needs ~108 KB)
PADS = ("ro-pad-1", "ro-pad-2", "ro-pad-3")


@pytest.fixture(scope="module")
def bundles():
    return {"good": build("9.1.0"),
            "crash": build("9.1.1-crash", patch={"edge/apps/pad.py": "raise RuntimeError('boom at import')\n"})}


class Reboots:
    """A board resets itself (hal.reset, a crash): the sim process exits and the board boots
    again. This thread starts every pad whose process ended, until `stop()`."""

    def __init__(self, store: VirtualStore) -> None:
        self.store = store
        self.exits: dict[str, list[int]] = {d: [] for d in store.devices}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="reboots")
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for dev, fw in self.store.devices.items():
                if fw.proc is not None and fw.proc.poll() is not None:
                    self.exits[dev].append(fw.proc.returncode)
                    fw.start()

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)


@pytest.fixture
def fleet(tmp_path, broker):
    """Three pads with their keys (in their configs and the gateway's coap-keys.json, as
    `phygital provision device` gives them), the gateway, and the reboot thread."""
    store = VirtualStore(tmp_path / "store", broker_port=broker.port, keepalive=5)
    keys = {}
    for dev in PADS:
        store.add_pad(dev)
        fw = store.devices[dev]
        fw.heap = HEAP
        keys[dev] = secrets.token_hex(32)
        fw.config["coap"] = {"host": "127.0.0.1", "port": 5683, "key": keys[dev]}
        fw.config_path.write_text(json.dumps(fw.config))
    (tmp_path / "coap-keys.json").write_text(json.dumps(keys))
    gw = GatewayProcess(tmp_path / "gw", broker.port,
                        extra_args=["--coap-keys", str(tmp_path / "coap-keys.json")]).start()
    store.start()
    wait_for(lambda: {d["id"]: d["fw"] for d in gw.get("/devices")} == dict.fromkeys(PADS, "0.1.0"),
             30, what="the three pads online on 0.1.0")
    reboots = Reboots(store)
    yield store, gw, reboots
    reboots.stop()
    store.stop()
    gw.stop()


def _heap_resets(store: VirtualStore, dev: str) -> int:
    """Resets a pad took for a fresh heap mid-download (docs/ota.md, "Heap while downloading":
    a download stalled on a fragmented heap resets once and goes on from flash)."""
    return store.devices[dev].log_path.read_text().count("ota: no heap: a reset")


def _consoles(store: VirtualStore, n: int = 25) -> str:
    """The pads' last console lines but tracebacks' frames, for an assertion's message: CI
    keeps no device logs, and a rollout halted for heap is only explained by them."""
    out = []
    for dev, fw in store.devices.items():
        lines = [x for x in fw.log_path.read_text().splitlines() if not x.startswith("  File ")]
        out.append(f"--- {dev}\n" + "\n".join(lines[-n:]))
    return "\n".join(out)


def _upload(gw: GatewayProcess, data: bytes) -> dict:
    r = httpx.post(gw.url + "/firmware", content=data, headers={"Content-Type": "application/zip"},
                   timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def _start(gw: GatewayProcess, **body) -> dict:
    r = httpx.post(gw.url + "/firmware/rollouts", json=body, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def _rollout(gw: GatewayProcess, rid: str) -> dict:
    return gw.get(f"/firmware/rollouts/{rid}")


def _settled(gw: GatewayProcess, rid: str):
    r = _rollout(gw, rid)
    return r if r["status"] != "running" else None


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_a_rollout_over_three_pads_goes_canary_then_half_then_all(fleet, bundles):
    store, gw, reboots = fleet
    up = _upload(gw, bundles["good"])
    assert up["version"] == "9.1.0" and up["created"] is True
    ro = _start(gw, version="9.1.0", percent=50, deadline_s=300)
    assert [(d["device"], d["stage"]) for d in ro["devices"]] == [
        ("ro-pad-1", "canary"), ("ro-pad-2", "percent"), ("ro-pad-3", "all")]
    # the canary alone first
    assert [d["state"] for d in ro["devices"]] == ["offered", "waiting", "waiting"]
    wait_for(lambda: _rollout(gw, ro["id"])["stage"] != "canary", 240, interval=1,
             what="the canary back on 9.1.0")
    mid = _rollout(gw, ro["id"])
    canary = mid["devices"][0]
    assert canary["state"] == "installed" and mid["devices"][2]["state"] == "waiting"
    done = wait_for(lambda: _settled(gw, ro["id"]), 480, interval=1, what="the rollout to end")
    assert done["status"] == "done", (done, _consoles(store))
    assert [d["state"] for d in done["devices"]] == ["installed"] * 3
    # each offer came after the stage before it was installed
    offered = [d["offered"] for d in done["devices"]]
    installed = [d["done"] for d in done["devices"]]
    assert installed[0] <= offered[1] and installed[1] <= offered[2]
    assert {d["id"]: d["fw"] for d in gw.get("/devices")} == dict.fromkeys(PADS, "9.1.0")
    for dev in PADS:
        assert [e["body"]["version"] for e in gw.events(dev, "ota.installed")] == ["9.1.0"]
        # one reset, the switch (hal.reset), and one more if the download stalled for heap
        assert reboots.exits[dev] == [3] * (1 + _heap_resets(store, dev))
        print(f"\n{dev} at {HEAP}: {gw.events(dev, 'ota.staged')[0]['body']}")
    # no key and no signature in what the API shows
    text = httpx.get(gw.url + "/firmware", timeout=10).text + json.dumps(done)
    for dev in PADS:
        assert store.devices[dev].config["coap"]["key"] not in text
    assert '"mac"' not in text


def test_a_canary_whose_firmware_crashes_at_boot_halts_the_rollout_there(fleet, bundles):
    store, gw, reboots = fleet
    _upload(gw, bundles["crash"])
    ro = _start(gw, version="9.1.1-crash", canary="ro-pad-2", percent=100, deadline_s=300)
    halted = wait_for(lambda: _settled(gw, ro["id"]), 300, interval=1, what="the rollout to halt")
    assert halted["status"] == "halted"
    assert halted["reason"].startswith("ro-pad-2 rolled back to 0.1.0 after 4 boots of 9.1.1-crash"), \
        (halted, _consoles(store))
    states = {d["device"]: (d["stage"], d["state"], d["offered"]) for d in halted["devices"]}
    assert states == {"ro-pad-2": ("canary", "failed", states["ro-pad-2"][2]),
                      "ro-pad-1": ("percent", "waiting", None), "ro-pad-3": ("percent", "waiting", None)}
    # the canary reset into the new set, crashed 3 times, went back to 0.1.0 by itself
    assert reboots.exits["ro-pad-2"] == [3] * _heap_resets(store, "ro-pad-2") + [3, 4, 4, 4]
    rb = gw.events("ro-pad-2", "ota.rolled_back")
    assert [e["body"] for e in rb] == [{"version": "9.1.1-crash", "boots": 4, "running": "0.1.0"}]
    wait_for(lambda: gw.get("/devices/ro-pad-2")["fw"] == "0.1.0", 30, what="the canary on 0.1.0")
    # the others were never offered it: no command, nothing on their flash, still 0.1.0
    for dev in ("ro-pad-1", "ro-pad-3"):
        assert not (store.devices[dev].workdir / "ota").exists()
        assert gw.events(dev, "ota.staged") == [] and reboots.exits[dev] == []
        assert gw.get(f"/devices/{dev}")["fw"] == "0.1.0"
    # and a halted rollout stays halted: nothing is offered later
    again = httpx.post(gw.url + f"/firmware/rollouts/{ro['id']}/halt", timeout=10)
    assert again.status_code == 200 and again.json()["reason"] == halted["reason"]


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_a_pad_over_coap_takes_an_update_over_coap(tmp_path, broker, bundles):
    """A CoAP device gets the offer on its long poll and fetches every chunk over CoAP (POST
    /pe/1/{dev}/ota, the chunk in the response), under its CoAP session's MACs: the same
    signature and resume rules as over MQTT (docs/ota.md)."""
    gw = GatewayProcess(tmp_path / "gw", broker.port, coap_heartbeat_s=5).start()
    store = VirtualStore(tmp_path / "store", broker_port=gw.coap_port, keepalive=5,
                         transport="coap", coap_keys=gw.coap_keys)
    reboots = None
    try:
        store.add_pad("co-pad")
        # 120k (was 160k): the download needs ~108 KB in use over CoAP, so 96k cannot carry it;
        # at 112k main always refused with no-heap (the qstr pool's growth found no ~7 KB hole)
        # and this firmware passes about 1 run in 4 (~3 KB free): docs/ota.md, "What is left"
        store.devices["co-pad"].heap = COAP_HEAP
        store.start()
        wait_for(lambda: [d["fw"] for d in gw.get("/devices")] == ["0.1.0"], 30,
                 what="the pad online over CoAP on 0.1.0")
        reboots = Reboots(store)
        _upload(gw, bundles["good"])
        ro = _start(gw, version="9.1.0", deadline_s=300)
        done = wait_for(lambda: _settled(gw, ro["id"]), 240, interval=1, what="the rollout to end")
        assert done["status"] == "done", done
        assert [d["fw"] for d in gw.get("/devices")] == ["9.1.0"]
        assert reboots.exits["co-pad"] == [3]  # one reset, the switch
        staged = gw.events("co-pad", "ota.staged")[0]["body"]
        assert staged["chunks"] > 100 and staged["min_free"] > 0, staged
        print(f"\nOTA over CoAP at {COAP_HEAP}: {staged}")
        # every chunk was served (over CoAP: this pad has no MQTT connection)
        assert gw.get("/firmware")["chunks_served"] >= staged["chunks"]
    finally:
        if reboots is not None:
            reboots.stop()
        store.stop()
        gw.stop()
