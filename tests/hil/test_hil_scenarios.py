"""HIL scenarios for the sample pad. The same code runs on every rig:

    pytest tests/hil/test_hil_scenarios.py                                  # virtual rig (CI)
    pytest tests/hil/test_hil_scenarios.py --rig pi:boards/rigs/bench-1.json   # the bench

Scenarios say what the world does (a tag placed, power cut) and what must follow (LED, protocol
messages). They talk to the device through the broker as the gateway would (`StubGateway`:
acks events, sends commands), so they test the device, not the gateway.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from hil.rig import Rig


class StubGateway:
    """The gateway's side of docs/protocol.md, minimal: ack events, send commands, keep replies."""

    def __init__(self, host: str, port: int):
        import paho.mqtt.client as mqtt

        self.events: dict[str, list[dict]] = {}
        self.replies: list[dict] = []
        self.epochs: dict[str, str] = {}
        self._cond = threading.Condition()
        self._ready = threading.Event()
        c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"stub-gw-{id(self):x}")
        c.on_connect = lambda cl, *a: (cl.subscribe([("pe/1/+/evt", 1), ("pe/1/+/reply", 1), ("pe/1/+/birth", 1)]),
                                       self._ready.set())
        c.on_message = self._on_message
        c.connect(host, port, 30)
        c.loop_start()
        assert self._ready.wait(5), "stub gateway could not connect to the rig's broker"
        self.client = c

    def _on_message(self, client, userdata, msg) -> None:
        m = json.loads(msg.payload)
        dev, kind = msg.topic.split("/")[2:4]
        with self._cond:
            if kind == "birth":
                self.epochs[dev] = m["body"]["epoch"]
            elif kind == "evt":
                evs = self.events.setdefault(dev, [])
                if all(e["seq"] != m["seq"] for e in evs):
                    evs.append(m)
                evs.sort(key=lambda e: e["seq"])
                upto = 0
                for e in evs:  # cumulative: highest seq with no gap below (seq starts at 1 here)
                    if e["seq"] != upto + 1:
                        break
                    upto = e["seq"]
                if dev in self.epochs and upto:
                    ack = {"v": 1, "dev": dev, "type": "ack", "t": int(time.time() * 1000),
                           "body": {"epoch": self.epochs[dev], "upto": upto, "now": int(time.time() * 1000)}}
                    client.publish(f"pe/1/{dev}/ctl", json.dumps(ack), qos=1)
            elif kind == "reply":
                self.replies.append(m)
            self._cond.notify_all()

    def command(self, dev: str, cid: str, name: str, args: dict, timeout: float = 10.0) -> dict:
        now = int(time.time() * 1000)
        msg = {"v": 1, "dev": dev, "type": "cmd", "id": cid, "t": now,
               "body": {"name": name, "args": args, "deadline": now + int(timeout * 1000)}}
        start = len(self.replies)
        self.client.publish(f"pe/1/{dev}/cmd", json.dumps(msg), qos=1)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for r in self.replies[start:]:
                    if r["id"] == cid and r["body"]["status"] != "accepted":
                        return r
                left = deadline - time.monotonic()
                assert left > 0, f"no final reply to {cid} from {dev} in {timeout}s"
                self._cond.wait(left)

    def wait_events(self, dev: str, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events.get(dev, [])) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"{dev}: {len(self.events.get(dev, []))} events, expected {n}"
                self._cond.wait(left)
            return list(self.events[dev])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway(rig_broker):
    gw = StubGateway(*rig_broker)
    yield gw
    gw.close()


def _expected_sample(spec) -> str | None:
    if spec.sample:
        return spec.sample
    if spec.uri:
        return spec.uri.rstrip("/").rsplit("/", 1)[-1]
    return None


@pytest.mark.rig_kinds("sample-pad")
def test_led_follows_the_tag_and_events_carry_its_identity(rig: Rig, gateway):
    pad = rig.device_of_kind("sample-pad")
    pad.start()
    name = next(iter(rig.wiring.device(pad.dev).tags))
    spec = pad.tag_spec(name)
    pad.place_tag(name)
    pad.expect_output("led", 1, timeout=2)
    placed = pad.wait_message("tag.placed", kind="evt", timeout=3)
    assert placed["body"]["uid"] == spec.uid_hex
    assert placed["body"]["tech"] == spec.tech
    assert placed["body"]["sample"] == _expected_sample(spec)

    t_removed = rig.trace.now()
    pad.remove_tag()
    pad.expect_output("led", 0, timeout=2)
    held = rig.trace.now() - t_removed
    removed = pad.wait_message("tag.removed", kind="evt", timeout=3)
    assert removed["body"]["uid"] == spec.uid_hex
    # removal is debounced (remove_after_ms, 300 by default): not instant, not slow
    assert 0.2 <= held <= 1.5, f"LED went off {held:.3f}s after the tag left"
    events = gateway.wait_events(pad.dev, 2)
    assert [e["type"] for e in events] == ["tag.placed", "tag.removed"]
    assert [e["seq"] for e in events] == [events[0]["seq"], events[0]["seq"] + 1]


@pytest.mark.rig_kinds("sample-pad")
def test_every_tag_of_the_rig_reads_as_its_sample(rig: Rig, gateway):
    pad = rig.device_of_kind("sample-pad")
    pad.start()
    tags = rig.wiring.device(pad.dev).tags
    assert tags, "the wiring file lists no tags at this pad"
    for name, tl in tags.items():
        pad.place_tag(name)
        msg = pad.wait_message("tag.placed", kind="evt", timeout=3,
                               where=lambda m, u=tl.spec.uid_hex: m["body"]["uid"] == u)
        assert msg["body"]["sample"] == _expected_sample(tl.spec), name
        assert msg["body"]["tech"] == tl.spec.tech, name
        pad.expect_output("led", 1, timeout=2)
        pad.remove_tag()
        pad.wait_message("tag.removed", kind="evt", timeout=3,
                         where=lambda m, u=tl.spec.uid_hex: m["body"]["uid"] == u)
        pad.expect_output("led", 0, timeout=2)
    events = gateway.wait_events(pad.dev, 2 * len(tags))
    assert [e["type"] for e in events] == ["tag.placed", "tag.removed"] * len(tags)


@pytest.mark.rig_kinds("sample-pad")
def test_a_command_id_delivered_twice_blinks_once(rig: Rig, gateway):
    pad = rig.device_of_kind("sample-pad")
    pad.start()
    t0 = rig.trace.now()
    first = gateway.command(pad.dev, "c-blink-1", "blink", {"times": 2})
    assert first["body"]["status"] == "done" and first["body"]["result"] == {"times": 2}
    again = gateway.command(pad.dev, "c-blink-1", "blink", {"times": 2})  # redelivery (QoS 1, retry)
    assert again["body"] == first["body"]
    time.sleep(0.3)
    assert pad.rises("led", since=t0) == 2, rig.trace.tail()
    bad = gateway.command(pad.dev, "c-blink-2", "blink", {"times": 99})
    assert bad["body"]["status"] == "rejected" and bad["body"]["reason"] == "bad-args"
    assert pad.rises("led", since=t0) == 2


@pytest.mark.rig_kinds("sample-pad")
def test_tag_changes_while_powered_off_arrive_in_order_after_power_on(rig: Rig, gateway):
    pad = rig.device_of_kind("sample-pad")
    pad.start()
    names = list(rig.wiring.device(pad.dev).tags)[:2]
    pad.place_tag(names[0])
    pad.expect_output("led", 1, timeout=2)
    gateway.wait_events(pad.dev, 1)
    pad.remove_tag()
    pad.expect_output("led", 0, timeout=2)  # the LED goes off once the removal is journaled
    pad.power_cut()
    pad.place_tag(names[1])  # lands while the board is off
    pad.power_on()
    pad.wait_console(r"online session", timeout=15, start=0)
    events = gateway.wait_events(pad.dev, 3, timeout=15)
    assert [e["type"] for e in events] == ["tag.placed", "tag.removed", "tag.placed"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[2]["body"]["uid"] == pad.tag_spec(names[1]).uid_hex
