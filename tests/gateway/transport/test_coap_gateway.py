"""The gateway's CoAP resources, exercised by an independent peer: Debian's `coap-client`
(libcoap3-bin)."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from hil.harness import wait_for
from tests.support.coap_harness import CoapGateway
from tests.support.coap_peer import CLIENT, birth, coap, envelope

pytestmark = pytest.mark.skipif(CLIENT is None, reason="coap-client not installed "
                                "(apt-get install libcoap3-bin)")


@pytest.fixture(scope="module")
def cgw(broker, tmp_path_factory):
    # these tests are about the resources: unauthenticated devices explicitly allowed
    # (authentication: tests/gateway/transport/test_coap_auth.py)
    g = CoapGateway(tmp_path_factory.mktemp("coap-gw"), broker.port, heartbeat_s=1.0,
                    allow_unauthenticated=True).start()
    yield g
    g.stop()


def test_birth_and_events_are_acknowledged_in_the_response(cgw):
    code, body = coap(cgw, "post", "/pe/1/cc-a/birth?s=1&hb=60", birth("cc-a"))
    assert code == "2.04"
    ack = json.loads(body)
    assert ack["type"] == "ack" and ack["dev"] == "cc-a"
    assert ack["body"]["epoch"] == "e0c0a001" and ack["body"]["upto"] == 0
    assert cgw.device("cc-a")["online"] is True

    for seq in (1, 2):
        code, body = coap(cgw, "post", "/pe/1/cc-a/evt?s=1",
                          envelope("cc-a", "tag.placed", {"uid": "04a1"}, seq=seq))
        assert code == "2.04"
        assert json.loads(body)["body"]["upto"] == seq
    # the same seq again (a device that missed the ack): acknowledged again, stored once
    code, body = coap(cgw, "post", "/pe/1/cc-a/evt?s=1",
                      envelope("cc-a", "tag.placed", {"uid": "04a1"}, seq=2))
    assert code == "2.04" and json.loads(body)["body"]["upto"] == 2
    assert [e["seq"] for e in cgw.events("cc-a")] == [1, 2]


def test_event_from_a_device_without_birth_is_answered_with_a_rebirth_request(cgw):
    code, body = coap(cgw, "post", "/pe/1/cc-nobirth/evt?s=3",
                      envelope("cc-nobirth", "tag.placed", {}, seq=1))
    assert code == "2.04"
    assert json.loads(body)["type"] == "rebirth"
    assert cgw.events("cc-nobirth") == []


@pytest.mark.parametrize("path,method,payload,want", [
    ("/pe/1/cc-b/evt", "post", "not json", "4.00"),                           # malformed
    ("/pe/1/cc-b/evt", "post", envelope("cc-x", "tag.placed", {}, seq=1), "4.00"),  # topic
    ("/pe/1/cc-b/evt", "post", json.dumps({"v": 2, "dev": "cc-b"}), "4.00"),   # version
    ("/pe/1/cc-b/evt", "post", envelope("cc-b", "tag.placed", {}), "4.00"),    # no seq
    ("/pe/1/cc-b/evt", "post", envelope("cc-b", "t", {"x": "y" * 5000}, seq=1), "4.13"),
    ("/pe/1/cc-b/birth", "post", envelope("cc-b", "birth", {"kind": "x"}), "4.00"),
    ("/pe/1/cc-b/reply", "post", envelope("cc-b", "reply", {"status": "maybe"}, id="c1"),
     "4.00"),
    ("/pe/1/cc-b/nope", "post", "{}", "4.04"),
    ("/pe/1/Bad_Id/evt", "post", "{}", "4.04"),
    ("/pe/1/cc-b", "post", "{}", "4.04"),
    ("/pe/1/cc-b/evt", "get", None, "4.05"),
    ("/pe/1/cc-b/cmd", "post", "{}", "4.05"),
], ids=["malformed", "topic-mismatch", "bad-version", "no-seq", "oversized", "bad-birth",
        "bad-reply", "unknown-channel", "bad-device-id", "short-path", "get-evt", "post-cmd"])
def test_bad_input_gets_a_4xx_and_the_gateway_keeps_going(cgw, path, method, payload, want):
    code, _ = coap(cgw, method, path, payload)
    assert code == want
    assert coap(cgw, "post", "/pe/1/cc-ok/hb")[0] == "2.04"  # still serving


def test_a_huge_blockwise_upload_is_cut_off_at_the_gateway(cgw):
    """aiocoap would assemble any Block1 transfer in memory; the edge stops it early."""
    before = cgw.get("/stats")["rejections"].get("oversized", 0)
    code, _ = coap(cgw, "post", "/pe/1/cc-big/evt", "x" * 60_000, extra=("-b", "1024"))
    assert code == "4.13"
    assert cgw.get("/stats")["rejections"].get("oversized", 0) == before  # never assembled
    assert coap(cgw, "post", "/pe/1/cc-ok/hb")[0] == "2.04"


def test_rejections_are_counted_like_mqtt_ones(cgw):
    before = cgw.get("/stats")["rejections"]
    coap(cgw, "post", "/pe/1/cc-c/evt", "{{{")
    coap(cgw, "post", "/pe/1/cc-c/evt", envelope("cc-c", "x", {"pad": "z" * 4200}, seq=1))
    after = wait_for(lambda: (s := cgw.get("/stats")["rejections"]).get("oversized", 0) >
                     before.get("oversized", 0) and s, 5, what="counted")
    assert after.get("malformed", 0) == before.get("malformed", 0) + 1


def test_out_of_range_numbers_get_4_00_bad_field_like_over_mqtt(cgw):
    """The CoAP edge decodes with the shared validator: seq or t in [2^63, 2^64) (which used
    to end in `internal-error` at the SQLite insert) and past the documented bounds."""
    assert coap(cgw, "post", "/pe/1/cc-big/birth?s=1", birth("cc-big", epoch="e0c0a0b1"))[0] \
        == "2.04"
    before = cgw.get("/stats")["rejections"]
    cases = [{"seq": 2**63}, {"seq": 2**64 - 1}, {"seq": 2**53}, {"seq": 1, "t": 2**63},
             {"seq": 1, "t": 2**64 - 1}]
    for extra in cases:
        payload = json.dumps({"v": 1, "dev": "cc-big", "type": "x", "t": None, "body": {},
                              **extra})
        code, body = coap(cgw, "post", "/pe/1/cc-big/evt?s=1", payload, keep_body=True)
        assert code == "4.00" and body.startswith(b"bad-field: "), (extra, code, body)
    after = wait_for(lambda: (s := cgw.get("/stats")["rejections"]).get("bad-field", 0) >=
                     before.get("bad-field", 0) + len(cases) and s, 5, what="counted")
    assert after.get("bad-field", 0) == before.get("bad-field", 0) + len(cases)
    assert after.get("internal-error", 0) == before.get("internal-error", 0)
    assert cgw.events("cc-big") == []
    code, body = coap(cgw, "post", "/pe/1/gateway/evt", "{}", keep_body=True)
    assert code == "4.04" and body.startswith(b"bad-device-id: "), (code, body)


def test_command_by_long_poll_then_reply(cgw):
    dev = "cc-cmd"
    assert coap(cgw, "post", f"/pe/1/{dev}/birth?s=1&hb=30", birth(dev, "e0c0a002"))[0] == "2.04"
    assert coap(cgw, "get", f"/pe/1/{dev}/cmd?s=1&hold=0") == ("2.05", b"")  # nothing yet
    poll = subprocess.Popen([CLIENT, "-m", "get", "-B", "20",
                             f"coap://127.0.0.1:{cgw.coap_port}/pe/1/{dev}/cmd?s=1&hb=30&hold=10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)  # the poll is parked at the gateway
    t0 = time.monotonic()
    cmd = cgw.command(dev, "blink", {"times": 2}, "cc-key-1", wait=False)
    out, _ = poll.communicate(timeout=20)
    assert time.monotonic() - t0 < 3, "the parked poll was answered at once"
    got = json.loads(out.strip().splitlines()[-1])
    assert got["type"] == "cmd" and got["id"] == cmd["id"]
    assert got["body"]["name"] == "blink" and got["body"]["args"] == {"times": 2}
    assert cgw.get(f"/commands/{cmd['id']}")["status"] == "sent"
    reply = envelope(dev, "reply", {"status": "done", "reason": None, "result": {"times": 2}},
                     id=cmd["id"])
    assert coap(cgw, "post", f"/pe/1/{dev}/reply?s=1", reply)[0] == "2.04"
    final = wait_for(lambda: (c := cgw.get(f"/commands/{cmd['id']}"))["final"] and c, 5,
                     what="final")
    assert final["status"] == "done" and final["result"] == {"times": 2}


def test_silence_marks_offline_and_the_next_request_online_again(cgw):
    dev = "cc-live"
    assert coap(cgw, "post", f"/pe/1/{dev}/birth?s=4&hb=1", birth(dev, "e0c0a003", 4))[0] \
        == "2.04"
    assert cgw.device(dev)["online"] is True
    t0 = time.monotonic()
    cgw.wait_online(dev, False, timeout=10)
    assert 2.5 < time.monotonic() - t0 < 6  # 3 missed heartbeats of 1 s (+ sweep period)
    assert coap(cgw, "post", f"/pe/1/{dev}/hb?s=4&hb=1")[0] == "2.04"
    cgw.wait_online(dev, True, timeout=5)
    assert cgw.device(dev)["session"] == 4


def test_a_late_silence_of_an_old_session_does_not_mark_a_new_session_offline(cgw):
    dev = "cc-sess"
    coap(cgw, "post", f"/pe/1/{dev}/birth?s=1&hb=1", birth(dev, "e0c0a004", 1))
    cgw.wait_online(dev, False, timeout=10)
    # the edge reports offline for session 1; the device comes back with session 2
    coap(cgw, "post", f"/pe/1/{dev}/birth?s=2&hb=60", birth(dev, "e0c0a004", 2))
    assert cgw.device(dev)["online"] is True and cgw.device(dev)["session"] == 2
    # an old-session offline (a stale will) arriving now is ignored by the ingest rule
    cgw.call(cgw.edge.handler, f"pe/1/{dev}/status",
             envelope(dev, "offline", {"session": 1}).encode())
    time.sleep(0.3)
    assert cgw.device(dev)["online"] is True


def test_a_second_gateway_on_the_same_port_refuses_to_start(cgw):
    """aiocoap binds with SO_REUSEPORT; without the check two gateways would share devices."""
    import asyncio

    from gateway.transport.coap import CoapEdge

    async def second() -> None:
        async def handler(topic: str, payload: bytes) -> None: ...
        await CoapEdge("127.0.0.1", cgw.coap_port, handler).start()

    with pytest.raises(OSError, match="another gateway"):
        asyncio.run(second())
