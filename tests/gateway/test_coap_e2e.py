"""End to end over CoAP: the real firmware runtime (bytecode, MicroPython unix port) on the
CoAP transport, against the real gateway with its CoAP edge. The same checks as the MQTT
skeleton (events once and in order, commands once, outages), plus a lossy link."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from gateway.transport.coap_auth import add_key
from hil.drivers.sample_pad import PadHandle
from hil.harness import GatewayProcess, wait_for
from hil.sim.mfrc522 import MFRC522Emulator
from hil.sim.rig import VirtualRig
from tests.support.coap_harness import CoapDevice, CoapFirmware, CoapGateway, LossyProxy
from tests.support.e2e import sample_tag, seqs


@pytest.fixture
def cgw(broker, tmp_path):
    g = CoapGateway(tmp_path / "gw", broker.port).start()
    yield g
    g.stop()


@pytest.fixture
def devices():
    made: list[CoapDevice] = []
    yield made
    for d in made:
        d.kill()


def wait_events(g: CoapGateway, dev: str, n: int, timeout: float = 20) -> list[dict]:
    return wait_for(lambda: len(ev := g.events(dev)) >= n and ev, timeout,
                    what=f"{n} events of {dev}")


def test_runtime_over_coap_events_commands_offline_and_reboot(cgw, devices, tmp_path):
    d = CoapDevice(tmp_path, cgw.coap_port, "rc-1", keys=cgw.keys_file).start()
    devices.append(d)
    dev = cgw.wait_online("rc-1")
    assert dev["session"] == 1 and dev["boot"] == 1
    assert {"act", "emit", "ping", "rebirth"} <= set(dev["caps"])

    r = cgw.command("rc-1", "emit", {"n": 5}, "k-emit")
    assert (r["status"], r["result"]) == ("done", {"n": 5})
    events = wait_events(cgw, "rc-1", 5)
    assert seqs(events) == [1, 2, 3, 4, 5]
    # every ack rode an event's response: the device's journal is empty
    wait_for(lambda: cgw.device("rc-1")["acked"] == 5, 5, what="acked 5")

    first = cgw.command("rc-1", "act", {"tag": "one"}, "k-act")
    again = cgw.command("rc-1", "act", {"tag": "one"}, "k-act")
    assert first["status"] == "done" and again["id"] == first["id"]
    assert cgw.command("rc-1", "ping", {}, "k-ping")["status"] == "done"
    r = cgw.command("rc-1", "fly", {}, "k-fly")
    assert (r["status"], r["reason"]) == ("rejected", "unknown-command")
    r = cgw.command("rc-1", "emit", {"n": 999}, "k-many")
    assert (r["status"], r["reason"]) == ("rejected", "too-many")
    assert d.actuations() == ["one"]

    # power cut: no last will over CoAP; 3 missed heartbeats (2 s) mark it offline
    d.kill()
    t0 = time.monotonic()
    cgw.wait_online("rc-1", False, timeout=15)
    assert time.monotonic() - t0 < 9
    d.start()
    dev = cgw.wait_online("rc-1", True, timeout=15)
    assert dev["session"] == 2 and dev["boot"] == 2
    assert seqs(cgw.events("rc-1")) == [1, 2, 3, 4, 5]
    # the id is remembered across the reboot: asked again, answered from the device's log
    assert cgw.command("rc-1", "act", {"tag": "one"}, "k-act")["status"] == "done"
    assert d.actuations() == ["one"]


def test_power_cut_mid_burst_replays_the_journal_once_and_in_order(cgw, devices, tmp_path):
    d = CoapDevice(tmp_path, cgw.coap_port, "rc-2", keys=cgw.keys_file).start()
    devices.append(d)
    cgw.wait_online("rc-2")
    cmd = cgw.command("rc-2", "emit", {"n": 40, "gap_ms": 25}, "k-burst", wait=False)
    wait_events(cgw, "rc-2", 8)
    d.kill()  # events are journaled ahead of the gateway's acks
    d.start()
    cgw.wait_online("rc-2", True, timeout=15)
    wait_for(lambda: cgw.device("rc-2")["session"] == 2, 10, what="session 2")
    time.sleep(1.5)
    events = cgw.events("rc-2")
    assert seqs(events) == list(range(1, len(events) + 1)), seqs(events)
    assert [e["body"]["i"] for e in events] == list(range(len(events)))
    assert 8 <= len(events) < 40
    # nothing left behind: the device's journal is fully acknowledged
    wait_for(lambda: cgw.device("rc-2")["acked"] == len(cgw.events("rc-2")), 10, what="acked")
    # started before the power cut: failed/interrupted, never re-run
    final = wait_for(lambda: (c := cgw.get(f"/commands/{cmd['id']}"))["final"] and c, 15,
                     what="emit final")
    assert (final["status"], final["reason"]) == ("failed", "interrupted")


def test_gateway_outage_loses_nothing_and_keeps_order(cgw, devices, tmp_path):
    # events made by the app itself every 300 ms, before, during and after the outage
    d = CoapDevice(tmp_path, cgw.coap_port, "rc-3", app={"tick_ms": 300}, keys=cgw.keys_file,
                   ack_timeout=500).start()
    devices.append(d)
    cgw.wait_online("rc-3")
    wait_events(cgw, "rc-3", 3)
    cgw.stop()
    time.sleep(3)  # the device keeps journaling; its requests retransmit into the void
    cgw.start()  # same port, same database
    assert cgw.edge.handles("rc-3"), "registry restored from the state file"
    n = len(cgw.events("rc-3"))
    time.sleep(1)
    wait_for(lambda: len(cgw.events("rc-3")) >= n + 15, 25, what="journal replayed")
    events = cgw.events("rc-3")
    assert seqs(events) == list(range(1, len(events) + 1))
    assert cgw.device("rc-3")["online"] is True


def test_sample_pad_app_over_coap(cgw, tmp_path):
    """The real sample-pad app (MFRC522 driver on the virtual rig), unchanged, over CoAP."""
    rig = VirtualRig().start()
    sim = rig.device("pad-coap")
    reader = MFRC522Emulator()
    sim.attach_spi("rfid", reader)
    fw = CoapFirmware({"device_id": "pad-coap", "kind": "sample-pad", "board": "sim",
                       "transport": "coap",
                       "mqtt": {"host": "127.0.0.1", "port": cgw.coap_port, "keepalive": 2,
                                "key": add_key(cgw.keys_file, "pad-coap")},
                       "sim": {"host": rig.host, "port": rig.port}, "app": {}},
                      tmp_path / "store", heap="96k")
    pad = PadHandle(fw, sim, reader)
    try:
        fw.start()
        fw.wait_line(r"online session", 15)
        cgw.wait_online("pad-coap")
        pad.place(sample_tag(1, "S-1001"))
        placed = wait_events(cgw, "pad-coap", 1)
        assert placed[0]["type"] == "tag.placed" and placed[0]["body"]["sample"] == "S-1001"
        assert pad.sim.wait_output("led", 1, 2)
        pad.remove()
        events = wait_events(cgw, "pad-coap", 2)
        assert [e["type"] for e in events] == ["tag.placed", "tag.removed"]
        r = cgw.command("pad-coap", "blink", {"times": 2}, "kiosk-1")
        assert (r["status"], r["result"]) == ("done", {"times": 2})
        r = cgw.command("pad-coap", "blink", {"times": 99}, "kiosk-2")
        assert (r["status"], r["reason"]) == ("rejected", "bad-args")
        time.sleep(0.5)
        assert [v for (_, v) in pad.sim.output_history("led")].count(1) == 3  # tag + 2 blinks
        assert len(cgw.events("pad-coap")) == 2
    finally:
        fw.stop()
        rig.stop()


@pytest.fixture
def lossy_gw(broker, tmp_path):
    g = CoapGateway(tmp_path / "gw", broker.port, ack_timeout_s=0.15).start()
    yield g
    g.stop()


def test_lossy_link_every_event_once_in_order_every_command_once(lossy_gw, devices, tmp_path):
    """20% of datagrams dropped each way, 10% duplicated, 20% delayed past later ones.
    Timers are scaled down (ACK_TIMEOUT 150 ms on both sides, the proxy delays by up to
    60 ms) to keep the test short; the logic does not depend on the scale."""
    cgw = lossy_gw
    proxy = LossyProxy(cgw.coap_port, drop=0.2, dup=0.1, reorder=0.2, seed=11)
    d = CoapDevice(tmp_path, proxy.port, "lossy-1", keepalive=2, ack_timeout=150,
                   keys=cgw.keys_file).start()
    devices.append(d)
    try:
        cgw.wait_online("lossy-1", timeout=30)
        results: dict[int, dict] = {}

        def run(i: int, name: str, args: dict) -> None:
            results[i] = cgw.command("lossy-1", name, args, f"lossy-{i}", timeout_s=40)

        jobs = [threading.Thread(target=run, args=(0, "emit", {"n": 20, "gap_ms": 20}))]
        jobs += [threading.Thread(target=run, args=(i, "act", {"tag": f"t{i}"}))
                 for i in range(1, 5)]
        for j in jobs:
            j.start()
            time.sleep(0.1)
        for j in jobs:
            j.join(60)
        assert {i: r["status"] for i, r in results.items()} == {i: "done" for i in range(5)}
        events = wait_for(lambda: len(ev := cgw.events("lossy-1")) >= 20 and ev, 40,
                          what="20 events")
        time.sleep(1)
        events = cgw.events("lossy-1")
        assert seqs(events) == list(range(1, 21))
        assert [e["body"]["i"] for e in events] == list(range(20))
        assert sorted(d.actuations()) == ["t1", "t2", "t3", "t4"]  # each exactly once
        c = proxy.counts
        assert c["dropped"] > 10 and c["duplicated"] > 3 and c["reordered"] > 5, c
        stats = cgw.get("/stats")
        assert stats["events_persisted"] >= 20
    finally:
        proxy.close()


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_wired_gateway_process_serves_coap_devices_across_a_crash(broker, devices, tmp_path):
    g = GatewayProcess(tmp_path / "gw", broker.port, coap_heartbeat_s=2).start()
    try:
        d = CoapDevice(tmp_path, g.coap_port, "wired-1", app={"tick_ms": 400}, keys=g.coap_keys,
                       ack_timeout=500).start()
        devices.append(d)
        g.wait_online("wired-1")
        assert g.command("wired-1", "act", {"tag": "w"}, "w-1")["status"] == "done"
        wait_events(g, "wired-1", 3)
        g.kill()  # SIGKILL: the device keeps journaling and retransmitting
        time.sleep(2)
        g.start()
        n = len(g.events("wired-1"))
        wait_for(lambda: len(g.events("wired-1")) >= n + 5, 25, what="events after restart")
        events = g.events("wired-1")
        assert seqs(events) == list(range(1, len(events) + 1))
        assert g.get("/stats")["coap"]["devices"] >= 1
        d.kill()
        g.wait_online("wired-1", False, timeout=15)  # heartbeat 2 s from --coap-heartbeat
    finally:
        g.stop()


def test_wired_boot_runs_the_sample_pad_over_coap(broker, tmp_path):
    from hil.sim.store import VirtualStore

    g = GatewayProcess(tmp_path / "gw", broker.port, coap_heartbeat_s=2).start()
    store = VirtualStore(tmp_path / "store", broker_port=g.coap_port, keepalive=2,
                         transport="coap", coap_keys=g.coap_keys)
    try:
        pad = store.add_pad("pad-wired")
        store.start()
        store.wait_online()
        pad.place(sample_tag(3, "S-1001"))
        assert wait_events(g, "pad-wired", 1)[0]["type"] == "tag.placed"
        assert g.command("pad-wired", "blink", {"times": 1}, "wb-1")["status"] == "done"
    finally:
        store.stop()
        g.stop()


def test_every_device_app_of_the_store_runs_over_coap(broker, tmp_path):
    """The virtual rig's pad, fitting room and locker bank, all on CoAP (tube stations and
    line controller: tests/hil/test_tube_scenarios.py runs its end-to-end dispatch over CoAP)."""
    from hil.fakes import SseReader
    from hil.rig import VirtualRigBackend

    g = GatewayProcess(tmp_path / "gw", broker.port, coap_heartbeat_s=2).start()
    rig = VirtualRigBackend(tmp_path / "rig", ("127.0.0.1", broker.port),
                            coap=("127.0.0.1", g.coap_port), coap_keys=g.coap_keys,
                            locker_keys=g.locker_keys)
    try:
        with SseReader(g.url) as stream:
            for dev in ("pad-1", "room-1", "lk-1"):
                rig.start(dev, timeout=40)
            for dev in ("pad-1", "room-1", "lk-1"):
                g.wait_online(dev, timeout=30)
            assert g.get("/stats")["coap"]["devices"] == 3
            # sample pad: a tag placed is an event with the sample
            rig.place_tag("pad-1", "S-1001")
            placed = wait_for(lambda: g.events("pad-1", "tag.placed"), 20, what="tag.placed over CoAP")
            assert placed[0]["body"]["sample"] == "S-1001"
            # fitting room: occupied, a garment hung on the hook
            rig.set_input("room-1", "occupancy", 1)
            rig.add_tag("room-1", "shirt-m")
            wait_for(lambda: g.events("room-1", "garment.in"), 30, what="garment.in over CoAP")
            # locker bank: the whole click-and-collect flow, commands and code over CoAP
            lk = "lk-1"
            wait_for(lambda: httpx.get(f"{g.url}/lockers/{lk}", timeout=5).status_code == 200, 30,
                     what="locker bank created from its status")
            r = httpx.post(f"{g.url}/lockers/{lk}/orders", json={"order": "o-1", "size": "S"}, timeout=30)
            assert r.status_code == 201, r.text
            n = r.json()["compartment"]
            r = httpx.post(f"{g.url}/lockers/{lk}/orders/o-1/load", timeout=60)
            assert r.status_code == 200 and r.json()["command"]["status"] == "done", r.text
            rig.place_parcel(lk, n)
            rig.close_door(lk, f"door_{n}")
            ready = wait_for(lambda: [m for m in stream.messages if m.get("type") == "order.ready"
                                      and m.get("order") == "o-1"], 30, what="order.ready")
            wait_for(lambda: (g.get(f"/lockers/{lk}/orders/o-1").get("code_sync") or {}).get("status")
                     == "done", 30, what="the code on the bank over CoAP")
            rig.type_code(lk, ready[0]["code"])
            wait_for(lambda: [e for e in g.events(lk, "door.opened") if e["body"]["why"] != "load"],
                     20, what="the door opened by the code")
            rig.take_parcel(lk, n)
            rig.close_door(lk, f"door_{n}")
            wait_for(lambda: g.get(f"/lockers/{lk}/orders/o-1")["state"] == "collected", 30,
                     what="order collected")
            assert len(g.events(lk, "pickup.collected")) == 1
    finally:
        rig.close()
        g.stop()
