"""The firmware runtime's side of docs/protocol.md, in real MicroPython against real Mosquitto.

The test plays the gateway with paho-mqtt, so these tests pin the device's behaviour
independently of the gateway implementation.
"""
import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from hil.harness import wait_for
from hil.sim.firmware import build_mpy
from tests.support.scripted_device import ScriptedDevice


class FakeGateway:
    """Records what the device publishes; acks and commands are sent by the test."""

    def __init__(self, port: int, dev: str, auto_ack: bool = True):
        self.dev, self.auto_ack = dev, auto_ack
        self.msgs: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fake-gw-{dev}")
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(f"pe/1/{dev}/#", 1)
        self.c.loop_start()
        time.sleep(0.2)

    def _on(self, client, userdata, m):
        if m.topic.endswith(("/cmd", "/ctl")):
            return
        msg = json.loads(m.payload)
        with self.lock:
            self.msgs.append((m.topic.rsplit("/", 1)[1], msg))
        if self.auto_ack and msg.get("type") not in ("birth", "reply", "online", "offline") and "seq" in msg:
            self.ack(msg["seq"])

    def epoch(self) -> str:
        return self.of("birth")[-1]["body"]["epoch"]

    def ack(self, upto: int, now: int | None = None) -> None:
        body = {"epoch": self.epoch(), "upto": upto, "now": now or int(time.time() * 1000)}
        self.c.publish(f"pe/1/{self.dev}/ctl", json.dumps({"v": 1, "dev": self.dev, "type": "ack", "t": None,
                                                           "body": body}), 1)

    def cmd(self, cid: str, name: str, args: dict, deadline: int | None = None) -> None:
        body = {"name": name, "args": args, "deadline": deadline or int(time.time() * 1000) + 10000}
        self.c.publish(f"pe/1/{self.dev}/cmd", json.dumps({"v": 1, "dev": self.dev, "type": "cmd", "id": cid,
                                                           "t": None, "body": body}), 1)

    def of(self, kind: str) -> list[dict]:
        with self.lock:
            return [m for (k, m) in self.msgs if k == kind]

    def replies(self, cid: str) -> list[dict]:
        return [m for m in self.of("reply") if m.get("id") == cid]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def rig(tmp_path, broker):
    made = []

    def make(dev, auto_ack=True):
        gw = FakeGateway(broker.port, dev, auto_ack)
        d = ScriptedDevice(tmp_path, broker.port, dev)
        made.append((gw, d))
        return gw, d
    yield make
    for gw, d in made:
        if d.proc and d.proc.poll() is None:
            d.kill()
        gw.close()


def test_birth_carries_identity_session_and_journal_window(rig):
    gw, dev = rig("rt-birth")
    dev.start()
    birth = wait_for(lambda: gw.of("birth"), 10, what="birth")[0]
    b = birth["body"]
    assert birth["v"] == 1 and birth["dev"] == "rt-birth" and birth["type"] == "birth"
    assert b["kind"] == "sample-pad" and b["fw"] and len(b["cfg"]) == 8 and len(b["epoch"]) == 8
    assert b["session"] == 1 and b["boot"] == 1 and b["first"] == 1 and b["next"] == 1
    assert {"act", "emit", "ping", "rebirth"} <= set(b["caps"])
    online = wait_for(lambda: gw.of("status"), 5, what="status online")[0]
    assert online["type"] == "online" and online["body"]["session"] == 1


def test_unacked_events_are_replayed_in_order_after_reboot_and_acked_ones_are_not(rig):
    gw, dev = rig("rt-replay", auto_ack=False)
    dev.start()
    wait_for(lambda: gw.of("birth"), 10, what="birth")
    gw.cmd("c1", "emit", {"n": 5})
    wait_for(lambda: len(gw.of("evt")) >= 5, 10, what="5 events")
    assert [e["seq"] for e in gw.of("evt")] == [1, 2, 3, 4, 5]
    gw.ack(2)
    time.sleep(0.5)
    dev.kill()  # power cut with 3, 4, 5 unacknowledged
    dev.start()
    births = wait_for(lambda: gw.of("birth")[1:], 10, what="second birth")
    assert births[0]["body"]["first"] == 3 and births[0]["body"]["next"] == 6
    assert births[0]["body"]["epoch"] == gw.of("birth")[0]["body"]["epoch"]
    assert births[0]["body"]["session"] == 2 and births[0]["body"]["boot"] == 2
    wait_for(lambda: len(gw.of("evt")) >= 8, 10, what="replayed events")
    time.sleep(0.5)
    assert [e["seq"] for e in gw.of("evt")] == [1, 2, 3, 4, 5, 3, 4, 5]
    assert [e["body"]["i"] for e in gw.of("evt")[5:]] == [2, 3, 4]


def test_command_id_applies_once_and_repeats_answer_from_store(rig):
    gw, dev = rig("rt-cmd")
    dev.start()
    wait_for(lambda: gw.of("birth"), 10, what="birth")
    gw.cmd("c-1", "act", {"tag": "one"})
    wait_for(lambda: any(r["body"]["status"] == "done" for r in gw.replies("c-1")), 10, what="done")
    gw.cmd("c-1", "act", {"tag": "one"})  # QoS 1 duplicate, or a gateway retry
    wait_for(lambda: len(gw.replies("c-1")) >= 3, 10, what="answer to the repeat")
    statuses = [r["body"]["status"] for r in gw.replies("c-1")]
    assert statuses == ["accepted", "done", "done"]
    assert gw.replies("c-1")[-1]["body"]["result"] == {"tag": "one"}
    dev.kill()
    dev.start()  # after a reboot the id is still remembered
    wait_for(lambda: len(gw.of("birth")) >= 2, 10, what="second birth")
    gw.cmd("c-1", "act", {"tag": "one"})
    wait_for(lambda: len(gw.replies("c-1")) >= 4, 10, what="answer after reboot")
    assert gw.replies("c-1")[-1]["body"]["status"] == "done"
    assert dev.actuations() == ["one"]


def test_command_interrupted_by_power_cut_is_failed_not_repeated(rig):
    gw, dev = rig("rt-int")
    dev.start()
    wait_for(lambda: gw.of("birth"), 10, what="birth")
    gw.cmd("c-long", "act", {"tag": "long", "ms": 5000})
    wait_for(lambda: gw.replies("c-long"), 10, what="accepted")
    assert gw.replies("c-long")[0]["body"]["status"] == "accepted"
    dev.kill()
    dev.start()
    wait_for(lambda: len(gw.of("birth")) >= 2, 10, what="second birth")
    gw.cmd("c-long", "act", {"tag": "long", "ms": 5000})
    wait_for(lambda: len(gw.replies("c-long")) >= 2, 10, what="answer after reboot")
    last = gw.replies("c-long")[-1]["body"]
    assert (last["status"], last["reason"]) == ("failed", "interrupted")
    assert dev.actuations() == ["long"]


def test_expired_unknown_and_rejected_commands(rig):
    gw, dev = rig("rt-rej")
    dev.start()
    wait_for(lambda: gw.of("birth"), 10, what="birth")
    gw.cmd("c-emit", "emit", {"n": 1})  # gets an event acked: the device learns the time
    wait_for(lambda: gw.of("evt"), 10, what="event")
    time.sleep(0.3)
    gw.cmd("c-old", "act", {"tag": "late"}, deadline=int(time.time() * 1000) - 1000)
    gw.cmd("c-what", "fly", {})
    gw.cmd("c-many", "emit", {"n": 99})
    for cid in ("c-old", "c-what", "c-many"):
        wait_for(lambda cid=cid: [r for r in gw.replies(cid) if r["body"]["status"] == "rejected"], 10,
                 what=f"{cid} rejected; replies so far: {gw.of('reply')}")
    reasons = {cid: gw.replies(cid)[-1]["body"]["reason"] for cid in ("c-old", "c-what", "c-many")}
    assert reasons == {"c-old": "expired", "c-what": "unknown-command", "c-many": "too-many"}
    assert dev.actuations() == []


def test_rebirth_request_and_garbage_do_not_break_the_device(rig, broker):
    gw, dev = rig("rt-ctl")
    dev.start()
    wait_for(lambda: gw.of("birth"), 10, what="birth")
    for payload in (b"\xff\xfe", b"[]", b'{"v":2}', b"x" * 6000, json.dumps({"v": 1, "dev": "other"}).encode()):
        gw.c.publish("pe/1/rt-ctl/cmd", payload, 1)
        gw.c.publish("pe/1/rt-ctl/ctl", payload, 1)
    gw.c.publish("pe/1/rt-ctl/ctl", json.dumps({"v": 1, "dev": "rt-ctl", "type": "rebirth", "body": {}}), 1)
    wait_for(lambda: len(gw.of("birth")) >= 2, 10, what="rebirth answered")
    gw.cmd("c-ping", "ping", {})
    wait_for(lambda: [r for r in gw.replies("c-ping") if r["body"]["status"] == "done"], 10, what="ping done")
    assert dev.proc.poll() is None


RUNTIME_FULL = r'''
import asyncio, json, sys
from edge.runtime import Runtime

class Hal:
    def reset_cause(self): return "power"

class Client:  # a transport that records replies; the runtime sets `full` on it
    def __init__(self, *a, **k):
        self.replies = []
    def is_connected(self): return False
    async def publish(self, topic, payload, qos=0, retain=False):
        self.replies.append((payload["id"], payload["body"]["status"]))

class App:
    caps = []
    def __init__(self, rt, hal, cfg):
        self.go = asyncio.Event()
        self.commands = {"slow": self.slow}
    async def slow(self, args):
        await self.go.wait()
        return {}

async def main():
    cfg = {"device_id": "fw-1", "kind": "sample-pad", "data_dir": sys.argv[1] if len(sys.argv) > 1 else "%(dir)s",
           "journal_max": 10, "mqtt": {"host": "h"}, "app": {}}
    rt = Runtime(cfg, Hal(), App, mqtt_class=Client)
    c = rt.client
    def cmd(cid):
        rt._on_message("pe/1/fw-1/cmd", json.dumps({"v": 1, "dev": "fw-1", "type": "cmd", "id": cid,
                                                   "body": {"name": "slow", "args": {}}}))
    print("idle", c.full())
    cmd("a")
    await asyncio.sleep_ms(50)
    print("one", c.full())
    cmd("b")
    await asyncio.sleep_ms(50)
    print("two", c.full())
    rt.app.go.set()
    await asyncio.sleep_ms(100)
    print("done", c.full(), sorted(c.replies))
    def no_heap(*a):
        raise MemoryError
    rt.cmds.get = no_heap  # a command task that dies on a full heap still gives its room back
    cmd("c")
    cmd("d")
    await asyncio.sleep_ms(100)
    print("after MemoryError", c.full(), rt._running)
    create = asyncio.create_task
    def no_task(coro):
        raise MemoryError
    asyncio.create_task = no_task  # no heap for the command's task: the count must not stay
    cmd("e")
    asyncio.create_task = create
    print("no task", c.full(), rt.stats["bad_msgs"])

asyncio.run(main())
'''


def test_the_runtime_tells_the_transport_when_it_handles_as_many_commands_as_it_may(tmp_path):
    """The count the CoAP poller reads (`client.full()`: CMD_MAX = 1 command task alive, issue
    16): it rises with each command task and falls when the task ends, also when a task dies
    on a MemoryError (before, nothing counted: every poll response was followed by the next
    poll at once, and a burst of commands handled together ran the 96 KB heap out)."""
    from tests.support.micropython import run_micropython
    r = run_micropython(RUNTIME_FULL % {"dir": tmp_path / "flash"}, env={
        "MICROPYPATH": f"{build_mpy()}:.frozen"})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[:4] == ["idle False", "one True", "two True",
                         "done False [('a', 'accepted'), ('a', 'done'), ('b', 'accepted'), ('b', 'done')]"], r.stdout
    assert lines[4] == "after MemoryError False {}", r.stdout
    assert lines[-1] == "no task False 3", r.stdout  # c, d (MemoryError) and e counted as dropped


RUNTIME_REBIRTH = r'''
import asyncio, json, sys
import edge.runtime as er
from edge.runtime import Runtime

class Hal:
    def reset_cause(self): return "power"

class Client:  # the birth's first publish fails (a lost exchange, a MemoryError), then works
    def __init__(self, *a, **k):
        self.births = 0
        self.fail = 1
    def is_connected(self): return True
    async def publish(self, topic, payload, qos=0, retain=False):
        if topic.endswith("/birth"):
            self.births += 1
            if self.fail:
                self.fail -= 1
                raise OSError(110)

class App:
    caps = []
    def __init__(self, rt, hal, cfg):
        self.commands = {}

async def main():
    cfg = {"device_id": "fw-1", "kind": "sample-pad", "data_dir": "%(dir)s", "cfg_hash": "0",
           "journal_max": 10, "mqtt": {"host": "h"}, "app": {}}
    rt = Runtime(cfg, Hal(), App, mqtt_class=Client)
    asyncio.create_task(rt._sender())
    await asyncio.sleep_ms(50)
    rt._on_message("pe/1/fw-1/ctl", b'{"v":1,"dev":"fw-1","type":"rebirth","t":1,"body":{}}')
    for _ in range(60):
        if rt.client.births >= 2:
            break
        await asyncio.sleep_ms(50)
    print("births", rt.client.births, "due", rt._birth_due)
    class NoHeap:
        def loads(self, s):
            raise MemoryError
    er.json = NoHeap()  # no heap to parse a message: the transport must hear it was not taken
    print("taken", rt._on_message("pe/1/fw-1/ctl", b'{"v":1,"dev":"fw-1","type":"ack","t":1,"body":{}}'))

asyncio.run(main())
'''


def test_a_birth_that_could_not_be_published_after_a_rebirth_is_tried_again(tmp_path):
    """Issue 16 (`ack-cumulative`): `_birth_due` was cleared before the birth's publish, so a
    rebirth whose birth met a lost exchange or a MemoryError was never answered. And a message
    the runtime had no heap to parse returns False, which the CoAP transport takes as "ask for
    it again" (docs/protocol.md, "Delivery of cmd and ctl messages")."""
    from tests.support.micropython import run_micropython
    r = run_micropython(RUNTIME_REBIRTH % {"dir": tmp_path / "flash"}, env={
        "MICROPYPATH": f"{build_mpy()}:.frozen"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "births 2 due False" in r.stdout, r.stdout
    assert "taken False" in r.stdout, r.stdout
