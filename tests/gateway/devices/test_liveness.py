"""Devices the last will does not cover (issue 16, item 4): a device that sends a birth but
set no will, then goes silent, must not stay `online` forever. The gateway asks a silent
device for a rebirth and marks it offline when it does not answer (gateway/devices/liveness.py)."""
import contextlib
import json
import secrets

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.devices.ingest import apply_batch
from gateway.devices.liveness import mark_silent, plan
from gateway.storage.store import Store, connect, migrate
from hil.fakes import FakeDevice, MqttProbe
from hil.harness import GatewayProcess, wait_for
from tests.support.envelopes import NOW, birth, evt

IDLE, ANSWER = 10_000, 3_000


def devs(*rows):
    return [{"id": d, "online": on, "last_seen": seen} for d, on, seen in rows]


# -- the pure rule ----------------------------------------------------------------------------

def test_a_silent_device_is_asked_then_marked_offline_if_it_does_not_answer():
    probes, silenced = {}, {}
    p = plan(devs(("pad-1", True, NOW)), NOW + IDLE - 1, probes, silenced, IDLE, ANSWER)
    assert (p.probe, p.offline) == ([], [])                    # not silent long enough
    p = plan(devs(("pad-1", True, NOW)), NOW + IDLE, probes, silenced, IDLE, ANSWER)
    assert (p.probe, p.offline) == (["pad-1"], [])             # asked once ...
    p = plan(devs(("pad-1", True, NOW)), NOW + IDLE + ANSWER - 1, probes, silenced, IDLE, ANSWER)
    assert (p.probe, p.offline) == ([], [])                    # ... not again while it may answer
    p = plan(devs(("pad-1", True, NOW)), NOW + IDLE + ANSWER, probes, silenced, IDLE, ANSWER)
    assert (p.probe, p.offline) == ([], [("pad-1", NOW)])      # no answer: offline


def test_an_answer_resets_the_clock_and_other_transports_are_left_alone():
    probes, silenced = {}, {}
    plan(devs(("pad-1", True, NOW)), NOW + IDLE, probes, silenced, IDLE, ANSWER)
    answered = NOW + IDLE + 100                                # its birth came
    p = plan(devs(("pad-1", True, answered)), NOW + IDLE + ANSWER, probes, silenced, IDLE, ANSWER)
    assert (p.probe, p.offline, probes) == ([], [], {})
    p = plan(devs(("pad-1", True, answered)), answered + IDLE, probes, silenced, IDLE, ANSWER)
    assert p.probe == ["pad-1"]                                # idle again: asked again
    p = plan(devs(("coap-1", True, NOW)), NOW + 10 * IDLE, {}, {}, IDLE, ANSWER,
             skip=lambda d: d == "coap-1")
    assert (p.probe, p.offline) == ([], [])                    # the CoAP edge's own rule
    p = plan(devs(("pad-2", False, NOW)), NOW + 10 * IDLE, {}, {}, IDLE, ANSWER)
    assert (p.probe, p.offline, p.revive) == ([], [], [])      # offline already: nothing to ask


def test_a_device_marked_silent_that_talks_again_is_asked_for_a_birth_once():
    probes, silenced = {}, {"pad-1": NOW}
    p = plan(devs(("pad-1", False, NOW)), NOW + IDLE, probes, silenced, IDLE, ANSWER)
    assert p.revive == []
    p = plan(devs(("pad-1", False, NOW + 5)), NOW + IDLE, probes, silenced, IDLE, ANSWER)
    assert p.revive == ["pad-1"]
    p = plan(devs(("pad-1", False, NOW + 5)), NOW + IDLE + 1, probes, silenced, IDLE, ANSWER)
    assert p.revive == []                                      # once per new sign of life
    plan(devs(("pad-1", True, NOW + 9)), NOW + IDLE + 2, probes, silenced, IDLE, ANSWER)
    assert silenced == {}                                      # its birth: back to normal


def test_mark_silent_loses_to_a_birth_that_raced_it(tmp_path):
    conn = connect(tmp_path / "gw.db")
    migrate(conn)
    store = Store(conn)
    apply_batch(store, [birth()], NOW)
    apply_batch(store, [evt(1)], NOW + 50)                     # heard from after the check
    assert mark_silent(store, "pad-1", NOW) is False
    assert store.get_device("pad-1")["online"] is True
    store.take_outbox()
    assert mark_silent(store, "pad-1", NOW + 50) is True
    assert store.get_device("pad-1")["online"] is False
    items = [i.data for i in store.take_outbox() if i.kind == "device"]
    assert [(i["change"], i["reason"], i["id"]) for i in items] == [("offline", "silent", "pad-1")]
    conn.close()


# -- a gateway process, a real broker, paho devices ------------------------------------------

@pytest.fixture
def gw(broker, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[devices]\nsilent_s = 1.0\nanswer_s = 1.0\n")
    g = GatewayProcess(tmp_path / "gw", broker.port, extra_args=["--config", str(cfg)]).start()
    yield g
    g.stop()


class WillLessDevice:
    """Written from the docs, but forgets the last will: connects, births, says online, then
    answers nothing (hung firmware with its TCP connection up, or `drop()`: gone)."""

    def __init__(self, port):
        self.dev = f"nowill-{secrets.token_hex(3)}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.dev,
                                  clean_session=True)
        self.client.connect("127.0.0.1", port, keepalive=5)  # no will_set
        self.client.loop_start()
        env = {"v": 1, "dev": self.dev, "t": None}
        self._pub("birth", {**env, "type": "birth", "body": {
            "kind": "sample-pad", "fw": "x", "caps": [], "cfg": "0", "session": 1, "boot": 1,
            "epoch": "e-nowill", "first": 1, "next": 1}})
        self._pub("status", {**env, "type": "online", "body": {"session": 1}}, retain=True)

    def _pub(self, channel, obj, retain=False):
        self.client.publish(f"pe/1/{self.dev}/{channel}", json.dumps(obj), qos=1,
                            retain=retain).wait_for_publish(5)

    def drop(self):
        """Power cut: the socket goes, no DISCONNECT, and there is no will to publish."""
        self.client.loop_stop()
        self.client.socket().close()

    def close(self):
        self.client.loop_stop()
        with contextlib.suppress(OSError, ValueError):  # already dropped
            self.client.disconnect()


def _device(gw, dev):
    r = gw.http.get(f"/devices/{dev}")
    return r.json() if r.status_code == 200 else None


@pytest.mark.parametrize("how", ["hung", "dropped"])
def test_a_device_without_a_will_that_goes_silent_is_marked_offline(gw, broker, how):
    probe = MqttProbe(broker.port, ("pe/1/+/ctl",))
    d = WillLessDevice(broker.port)
    healthy = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port).connect()  # has a will, idle
    try:
        wait_for(lambda: (_device(gw, d.dev) or {}).get("online") is True, 10, what="online")
        if how == "dropped":
            d.drop()
        wait_for(lambda: _device(gw, d.dev)["online"] is False, 15,
                 what="a will-less silent device marked offline")
        # it was asked first: a rebirth on its ctl topic
        assert {"rebirth"} <= {m["type"] for m in probe.json_on(f"pe/1/{d.dev}/ctl")}
        wait_for(lambda: any(a["key"] == f"offline:{d.dev}" for a in _alerts(gw)), 10,
                 what="offline alert")
        # an idle device that answers its rebirth stays online all along
        assert _device(gw, healthy.dev)["online"] is True
        assert {"rebirth"} <= {m["type"] for m in probe.json_on(f"pe/1/{healthy.dev}/ctl")}
    finally:
        d.close()
        healthy.close()
        probe.close()


def _alerts(gw, **params):
    got = gw.http.get("/alerts", params=params).json()
    return got["alerts"] if isinstance(got, dict) else got


def test_a_device_marked_silent_that_comes_back_is_online_again(gw, broker):
    d = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port)
    d.connect()
    wait_for(lambda: (_device(gw, d.dev) or {}).get("online") is True, 10, what="online")
    d.ignore_rebirth = True  # hangs: answers no rebirth (its connection stays up)
    wait_for(lambda: _device(gw, d.dev)["online"] is False, 15, what="marked offline")
    d.ignore_rebirth = False
    d.emit("tag.placed", {"uid": "04"})  # alive after all: the gateway asks for a birth
    wait_for(lambda: _device(gw, d.dev)["online"] is True, 15, what="online again")
    d.close()


def test_our_firmware_answers_the_liveness_request_and_stays_online(gw, broker, tmp_path):
    from tests.support.scripted_device import ScriptedDevice

    dev = f"fw-{secrets.token_hex(3)}"
    probe = MqttProbe(broker.port, (f"pe/1/{dev}/ctl",))
    d = ScriptedDevice(tmp_path, broker.port, dev).start()
    try:
        wait_for(lambda: (_device(gw, dev) or {}).get("online") is True, 30, what="online")
        # idle: asked three times (each ask is more than answer_s after the previous answer's
        # window opened), and online throughout because it answers each with a birth
        wait_for(lambda: sum(m["type"] == "rebirth" for m in probe.json_on(f"pe/1/{dev}/ctl"))
                 >= 3, 30, what="three liveness requests")
        assert _device(gw, dev)["online"] is True
        assert [a for a in _alerts(gw, state="all") if a["key"] == f"offline:{dev}"] == []
    finally:
        d.kill()
        probe.close()
