"""Walking skeleton end to end: real Mosquitto + gateway + firmware in `micropython` + virtual rig."""
import time

import httpx
import pytest

from hil.fakes import SseReader
from hil.harness import GatewayProcess, wait_for
from hil.sim.store import VirtualStore
from tests.support.e2e import sample_tag, seqs, settle, wait_events

SAMPLES = {"S-1001": {"title": "Oak plank, natural", "image": "/img/oak.jpg"},
           "S-1002": {"title": "Linen, sand", "image": "/img/linen.jpg"}}


@pytest.fixture
def gateway(tmp_path, broker):
    gw = GatewayProcess(tmp_path / "gw", broker.port, SAMPLES).start()
    yield gw
    gw.stop()


@pytest.fixture
def store(tmp_path, broker):
    vs = VirtualStore(tmp_path / "store", broker_port=broker.port, keepalive=5)
    yield vs
    vs.stop()


def test_place_and_remove_tag_gives_one_persisted_event_and_one_stream_message_each(gateway, store):
    pad = store.add_pad("pad-e1")
    store.start()
    wait_for(lambda: any(d["id"] == "pad-e1" and d["online"] for d in gateway.get("/devices")), 15,
             what="pad-e1 online in the registry")
    with SseReader(gateway.url) as stream:
        pad.place(sample_tag(1, "S-1001"))
        placed = wait_events(gateway, "pad-e1", 1, "tag.placed")
        assert pad.sim.wait_output("led", 1, 2), "LED shows the tag is seen"
        settle()
        placed = gateway.events("pad-e1", "tag.placed")
        assert len(placed) == 1
        assert placed[0]["body"]["sample"] == "S-1001"
        assert placed[0]["body"]["uid"] == "04102030405001"
        assert placed[0]["body"]["tech"] == "ntag213"
        wait_for(lambda: stream.device_events("pad-e1", "tag.placed"), 5, what="stream message for tag.placed")

        pad.remove()
        wait_events(gateway, "pad-e1", 1, "tag.removed")
        assert pad.sim.wait_output("led", 0, 2)
        settle()
        assert len(gateway.events("pad-e1", "tag.removed")) == 1
        assert len(gateway.events("pad-e1", "tag.placed")) == 1
        wait_for(lambda: stream.device_events("pad-e1", "tag.removed"), 5, what="stream message for tag.removed")
        assert len(stream.device_events("pad-e1", "tag.placed")) == 1
        assert len(stream.device_events("pad-e1", "tag.removed")) == 1
        # the kiosk gets the sample's content with the event
        msg = stream.device_events("pad-e1", "tag.placed")[0]
        assert msg.get("content", {}).get("title") == "Oak plank, natural"


def test_broker_outage_loses_nothing_and_keeps_order(tmp_path, own_broker):
    gw = GatewayProcess(tmp_path / "gw", own_broker.port, SAMPLES).start()
    store = VirtualStore(tmp_path / "store", broker_port=own_broker.port, keepalive=2)
    try:
        pad = store.add_pad("pad-o1")
        store.start()
        store.wait_online()
        pad.place(sample_tag(1, "S-1001"))
        wait_events(gw, "pad-o1", 1)

        own_broker.stop()
        # tags change while the broker is away: the pad journals them
        for i in range(3):
            pad.remove()
            time.sleep(0.5)
            pad.place(sample_tag(2 + i, "S-1002"))
            time.sleep(0.3)
        pad.remove()
        time.sleep(0.5)
        own_broker.start()

        events = wait_events(gw, "pad-o1", 8, timeout=40)
        settle(1.5)
        events = gw.events("pad-o1")
        types = [e["type"] for e in events]
        assert seqs(events) == list(range(1, 9)), seqs(events)
        assert types == ["tag.placed", "tag.removed"] * 4
        assert [e["body"]["uid"][-2:] for e in events if e["type"] == "tag.placed"] == ["01", "02", "03", "04"]
    finally:
        store.stop()
        gw.stop()


def test_device_killed_and_restarted_loses_and_duplicates_nothing(gateway, store):
    pad = store.add_pad("pad-k1")
    store.start()
    store.wait_online()
    fw = store.devices["pad-k1"]
    pad.place(sample_tag(1, "S-1001"))
    wait_events(gateway, "pad-k1", 1)
    pad.remove()
    # power cut right after the removal was journaled (the LED goes off just after), most
    # likely before the gateway's ack reached the pad
    assert pad.sim.wait_output("led", 0, 3)
    fw.kill()
    pad.place(sample_tag(2, "S-1002"))  # happens while the board is off
    fw.start()
    fw.wait_line(r"online session", 15, start=0)
    events = wait_events(gateway, "pad-k1", 3, timeout=20)
    settle(1.5)
    events = gateway.events("pad-k1")
    assert seqs(events) == [1, 2, 3]
    assert [e["type"] for e in events] == ["tag.placed", "tag.removed", "tag.placed"]
    assert events[2]["body"]["uid"].endswith("02")
    dev = next(d for d in gateway.get("/devices") if d["id"] == "pad-k1")
    assert dev["online"]


def test_blink_twice_with_same_idempotency_key_actuates_once(gateway, store):
    pad = store.add_pad("pad-c1")
    store.start()
    store.wait_online()
    wait_for(lambda: any(d["id"] == "pad-c1" and d["online"] for d in gateway.get("/devices")), 10,
             what="pad-c1 online")
    body = {"name": "blink", "args": {"times": 2}, "idempotency_key": "kiosk-7-req-1", "timeout_s": 10}
    r1 = httpx.post(gateway.url + "/devices/pad-c1/commands", json=body, timeout=15)
    assert r1.status_code == 200, r1.text
    first = r1.json()
    assert first["status"] == "done"
    r2 = httpx.post(gateway.url + "/devices/pad-c1/commands", json=body, timeout=15)
    assert r2.status_code == 200, r2.text
    second = r2.json()
    assert second["id"] == first["id"] and second["status"] == "done"
    assert second.get("result") == first.get("result") == {"times": 2}
    settle(1.0)
    rises = [v for (_, v) in pad.sim.output_history("led")].count(1)
    assert rises == 2, f"LED went on {rises} times; one blink command of 2 means 2"

    # a new key is a new command: it actuates again
    r3 = httpx.post(gateway.url + "/devices/pad-c1/commands", json=dict(body, idempotency_key="kiosk-7-req-2"),
                    timeout=15)
    assert r3.json()["id"] != first["id"] and r3.json()["status"] == "done"
    settle(0.5)
    assert [v for (_, v) in pad.sim.output_history("led")].count(1) == 4


def test_command_with_bad_args_is_rejected_by_the_device_with_reason(gateway, store):
    store.add_pad("pad-c2")
    store.start()
    store.wait_online()
    wait_for(lambda: any(d["id"] == "pad-c2" and d["online"] for d in gateway.get("/devices")), 10,
             what="pad-c2 online")
    r = httpx.post(gateway.url + "/devices/pad-c2/commands",
                   json={"name": "blink", "args": {"times": 99}, "idempotency_key": "k1"}, timeout=15)
    assert r.json()["status"] == "rejected" and r.json()["reason"] == "bad-args"
    r = httpx.post(gateway.url + "/devices/pad-c2/commands",
                   json={"name": "self-destruct", "args": {}, "idempotency_key": "k2"}, timeout=15)
    assert r.json()["status"] == "rejected" and r.json()["reason"] == "unknown-command"
