"""The gateway as a process (`python -m gateway`) against a real Mosquitto, with fake devices
speaking docs/protocol.md, observed through the HTTP API, the SSE stream and MQTT."""
import json
import secrets
import threading
import time

import httpx
import pytest

from hil.fakes import FakeDevice, MqttProbe, SseReader
from hil.harness import GatewayProcess, wait_for

PAD_BODY = {"uid": "04a1b2c3d4e5f6", "tech": "ntag213", "sample": "S-1001"}


@pytest.fixture(scope="module")
def samples_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("samples") / "samples.json"
    path.write_text(json.dumps({"samples": [
        {"id": "S-1001", "title": "Linen shirt", "image": "/img/s1001.jpg",
         "url": "https://example.test/s-1001", "description": "Washed linen, blue"}]}))
    return path


@pytest.fixture(scope="module")
def gw(broker, tmp_path_factory, samples_file):
    g = GatewayProcess(tmp_path_factory.mktemp("gw"), broker.port,
                       samples=samples_file)
    g.start()
    yield g
    g.stop()


@pytest.fixture
def devices(gw, broker):
    made = []

    def make(prefix="pad", connect=True, **kw):
        d = FakeDevice(f"{prefix}-{secrets.token_hex(3)}", broker.port, **kw)
        made.append(d)
        if connect:
            d.connect()
            wait_online(gw, d.dev, True)
        return d

    yield make
    for d in made:
        d.close()


@pytest.fixture
def probe(broker):
    p = MqttProbe(broker.port, ("pe/1/+/ctl",))
    yield p
    p.close()


def wait_online(gw, dev, online):
    def check():
        r = gw.http.get(f"/devices/{dev}")
        return r.status_code == 200 and r.json()["online"] is online
    wait_for(check, 10, what=f"{dev} online={online}")


def stats(gw):
    return gw.get("/stats")


def post_command(gw, dev, **body):
    return gw.http.post(f"/devices/{dev}/commands", json=body)


# -- devices and events ---------------------------------------------------------------------

def test_birth_marks_device_online_and_is_announced(gw, devices):
    with SseReader(gw.url) as sse:
        d = devices()
        got = gw.get(f"/devices/{d.dev}")
        assert got["online"] is True and got["kind"] == "sample-pad"
        assert got["caps"] == ["tag", "led", "blink"] and got["epoch"] == d.epoch
        assert got["session"] == d.session
        assert d.dev in [x["id"] for x in gw.get("/devices")]
        wait_for(lambda: sse.of("device", id=d.dev, online=True), 5, what="device on stream")
        assert d.gateway_state == "online"  # retained gateway state reached the device
        assert d.acks and d.acks[0] == {"epoch": d.epoch, "upto": 0, "now": d.acks[0]["now"]}


def test_event_persisted_once_acked_and_streamed_once_with_content(gw, devices):
    with SseReader(gw.url) as sse:
        d = devices()
        before = stats(gw)
        assert d.emit("tag.placed", PAD_BODY) == 1
        d.wait_acked(1)
        assert d.acks[-1]["upto"] == 1 and d.acks[-1]["epoch"] == d.epoch
        # the same event again (QoS 1 redelivery or a device that missed the ack): the same
        # seq, type, t and body (the same seq with other content is a rolled-back journal,
        # docs/protocol.md and tests/gateway/devices/test_epochs.py)
        n_acks = len(d.acks)
        t1 = gw.events(d.dev)[0]["t_device"]
        d.publish("evt", d.envelope("tag.placed", PAD_BODY, seq=1) | {"t": t1})
        wait_for(lambda: len(d.acks) > n_acks, 5, what="re-ack of the duplicate")
        assert d.acks[-1]["upto"] == 1
        d.emit("tag.removed", {"uid": PAD_BODY["uid"], "held_ms": 1200})
        d.wait_acked(2)
        events = gw.events(d.dev)
        assert [(e["seq"], e["type"]) for e in events] == [(1, "tag.placed"), (2, "tag.removed")]
        assert events[0]["content"]["title"] == "Linen shirt"
        wait_for(lambda: len(sse.of("event", device=d.dev)) == 2, 5, what="2 events on stream")
        time.sleep(0.3)
        streamed = sse.of("event", device=d.dev)
        assert [i["data"]["seq"] for i in streamed] == [1, 2]
        assert streamed[0]["data"]["content"]["id"] == "S-1001"
        assert "content" not in streamed[1]["data"]
        ids = [i["id"] for i in sse.items]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    after = stats(gw)
    assert after["events_persisted"] - before["events_persisted"] == 2
    assert after["duplicates"] - before["duplicates"] == 1


def test_gap_holds_the_ack_until_the_missing_seq_arrives(gw, devices):
    d = devices()

    def send(seq):
        n = len(d.acks)
        d.publish("evt", d.envelope("count", {"n": seq}, seq=seq))
        wait_for(lambda: len(d.acks) > n, 5, what=f"an ack after seq {seq}")
        return d.acks[-1]["upto"]

    assert send(1) == 1
    assert send(3) == 1          # 2 is missing: the ack stops below the gap
    assert send(4) == 1
    assert sorted(e["seq"] for e in gw.events(d.dev)) == [1, 3, 4]  # stored all the same
    assert send(2) == 4          # the gap is filled: everything up to 4 is settled
    assert sorted(e["seq"] for e in gw.events(d.dev)) == [1, 2, 3, 4]


def test_new_epoch_after_a_wipe_is_not_a_duplicate(gw, devices):
    d = devices()
    old_epoch = d.epoch
    d.emit("count", {"n": 1})
    d.emit("count", {"n": 2})
    d.wait_acked(2)
    d.crash()
    d.wipe()
    d.connect()
    wait_for(lambda: gw.get(f"/devices/{d.dev}")["epoch"] == d.epoch, 5, what="new epoch")
    d.emit("count", {"n": 3})
    d.wait_acked(1)
    assert d.acks[-1]["epoch"] == d.epoch != old_epoch
    assert [(e["epoch"], e["seq"]) for e in gw.events(d.dev)] == [
        (old_epoch, 1), (old_epoch, 2), (d.epoch, 1)]


def test_journal_overflow_is_recorded(gw, devices):
    d = devices(journal_size=3)
    d.emit("count", {"n": 1})
    d.wait_acked(1)
    d.disconnect()
    wait_online(gw, d.dev, False)
    for n in range(2, 8):          # 2..7 while offline; the ring keeps 5, 6, 7
        d.emit("count", {"n": n})
    assert d.dropped == 3
    d.connect()
    d.wait_acked(7)
    events = gw.events(d.dev)
    over = [e for e in events if e["type"] == "journal.overflow"]
    assert len(over) == 1 and over[0]["body"]["lost"] == 3
    assert (over[0]["body"]["from"], over[0]["body"]["to"]) == (2, 4)
    assert [e["seq"] for e in events if e["type"] == "count"] == [1, 5, 6, 7]


def test_late_will_of_an_old_session_is_ignored(gw, devices):
    d = devices()
    old = d.session
    d.session = old + 1                           # the device reconnected: a newer session
    d.publish("birth", d.birth_message())
    wait_for(lambda: gw.get(f"/devices/{d.dev}")["session"] == old + 1, 5, what="new session")
    d.publish("status", d.envelope("offline", {"session": old}))       # the old will, late
    d.emit("count", {"n": 1})                     # processed after the will (same client, in order)
    d.wait_acked(1)
    assert gw.get(f"/devices/{d.dev}")["online"] is True
    d.publish("status", d.envelope("offline", {"session": old + 1}))
    wait_online(gw, d.dev, False)


def test_will_marks_device_offline(gw, devices):
    d = devices()
    with SseReader(gw.url) as sse:
        d.crash()  # broker sends the will (retained, with the session)
        wait_online(gw, d.dev, False)
        wait_for(lambda: sse.of("device", id=d.dev, change="offline"), 5, what="offline on stream")


# -- commands -------------------------------------------------------------------------------

def test_same_idempotency_key_gives_one_actuation_and_one_outcome(gw, devices):
    d = devices()
    results = []

    def call():
        results.append(post_command(gw, d.dev, name="blink", args={"times": 2},
                                    idempotency_key="order-17-blink", timeout_s=5))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bodies = [r.json() for r in results]
    assert [r.status_code for r in results] == [200, 200], bodies
    assert bodies[0]["id"] == bodies[1]["id"]
    assert [b["status"] for b in bodies] == ["done", "done"]
    assert bodies[0]["result"] == {"times": 2}
    again = post_command(gw, d.dev, name="blink", args={"times": 2},
                         idempotency_key="order-17-blink", timeout_s=5)
    assert again.status_code == 200 and again.json()["id"] == bodies[0]["id"]
    assert sum(d.actuations.values()) == 1 and d.actuations[bodies[0]["id"]] == 1
    conflict = post_command(gw, d.dev, name="blink", args={"times": 9},
                            idempotency_key="order-17-blink")
    assert conflict.status_code == 409 and "order-17-blink" in conflict.json()["detail"]
    assert sum(d.actuations.values()) == 1


def test_command_rejected_by_device_is_reported(gw, devices):
    d = devices()
    r = post_command(gw, d.dev, name="self-destruct", idempotency_key="k1", timeout_s=5)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["reason"]) == ("rejected", "unknown-command")


def test_command_to_offline_device_is_delivered_on_birth(gw, devices, broker):
    d = devices()
    d.disconnect()
    wait_online(gw, d.dev, False)
    r = post_command(gw, d.dev, name="blink", idempotency_key="later", timeout_s=20, wait=False)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert r.headers["location"] == f"/commands/{r.json()['id']}"
    time.sleep(0.6)
    assert gw.get(f"/commands/{r.json()['id']}")["status"] == "queued"
    d.connect()
    wait_for(lambda: gw.get(f"/commands/{r.json()['id']}")["status"] == "done", 5,
             what="delivered on birth")
    assert d.actuations[r.json()["id"]] == 1
    assert gw.get(f"/devices/{d.dev}")["pending_commands"] == []
    # never retained: a device (re)subscribing to its cmd topic gets no stale command
    late = MqttProbe(broker.port, (f"pe/1/{d.dev}/cmd",))
    try:
        time.sleep(0.3)
        assert late.messages == []
    finally:
        late.close()


def test_command_expires_then_late_reply_is_recorded_and_final_kept(gw, devices):
    d = devices()
    d.hold = True  # accepts, never finishes until released
    t0 = time.monotonic()
    r = post_command(gw, d.dev, name="blink", idempotency_key="slow", timeout_s=0.5)
    elapsed = time.monotonic() - t0
    body = r.json()
    assert r.status_code == 200 and body["status"] == "expired" and body["reason"] == "timeout"
    assert body["late"] is False and body["late_outcome"] is None and 2.0 <= elapsed < 5, elapsed
    cid = body["id"]
    with SseReader(gw.url, last_event_id=0) as sse:
        d.release()  # the device finally finishes: a late final answer
        wait_for(lambda: gw.get(f"/commands/{cid}")["late"], 5, what="late outcome")
        # `final` was final: the status the caller was told stays, the late answer is beside it
        c = gw.get(f"/commands/{cid}")
        assert (c["status"], c["reason"], c["final"], c["updated"]) == \
            ("expired", "timeout", True, body["updated"])
        assert (c["late_outcome"]["status"], c["late_outcome"]["reason"]) == ("done", None)
        # a stray non-final reply must not overwrite anything
        d.publish("reply", d.envelope("reply", {"status": "accepted"}, id=cid))
        d.emit("count", {"n": 1})
        d.wait_acked(1)
        assert gw.get(f"/commands/{cid}") == c
        assert d.actuations[cid] == 1
        # the stream: one `expired`, then the late outcome (never a status that changes)
        wait_for(lambda: any(i["data"].get("change") == "late.done" for i in sse.items
                             if i["event"] == "command" and i["data"]["id"] == cid), 5,
                 what="late outcome on the stream")
        wait_for(lambda: any(i["event"] == "alert" and i["data"]["key"] == f"command.late:{cid}"
                             for i in sse.items), 5, what="late outcome alert")
        mine = [i["data"] for i in sse.items if i["event"] == "command" and i["data"]["id"] == cid]
        assert [(m["status"], m.get("change")) for m in mine if m["final"]] == \
            [("expired", None), ("expired", "late.done")]


def test_pending_command_is_resent_every_2s_until_answered(gw, devices):
    d = devices()
    d.ignore_commands = True  # deliveries lost
    r = post_command(gw, d.dev, name="blink", idempotency_key="resend", timeout_s=10, wait=False)
    cid = r.json()["id"]
    assert r.json()["status"] == "sent"
    wait_for(lambda: len(d.cmds) >= 2, 4, what="a resend")
    d.ignore_commands = False
    wait_for(lambda: gw.get(f"/commands/{cid}")["status"] == "done", 4, what="done after resend")
    assert d.actuations[cid] == 1


# -- bad input and API errors ---------------------------------------------------------------

def test_bad_messages_are_counted_by_reason_and_gateway_keeps_serving(gw, devices, probe):
    d = devices()
    ghost = f"ghost-{secrets.token_hex(3)}"
    before = stats(gw)["rejections"]
    ok = {"v": 1, "dev": d.dev, "type": "count", "seq": 1, "t": None, "body": {}}
    here, there = f"pe/1/{d.dev}/evt", f"pe/1/{ghost}/evt"
    probe.publish(here, json.dumps(dict(ok, body={"x": "y" * 5000})))  # oversized
    probe.publish(here, b"{not json")                                  # malformed
    probe.publish(here, json.dumps(dict(ok, v=2)))                     # bad-version
    probe.publish(here, json.dumps(dict(ok, dev="other")))             # topic-mismatch
    probe.publish(here, json.dumps(dict(ok, seq="one")))               # bad-field
    probe.publish(there, json.dumps(dict(ok, dev=ghost)))              # unknown-device
    probe.publish("pe/1/gateway/evt", json.dumps(dict(ok, dev="gateway")))  # bad-device-id
    probe.publish(here, json.dumps(dict(ok, seq=2**63)))                  # bad-field (bounds)
    expected = {"oversized": 1, "malformed": 1, "bad-version": 1, "topic-mismatch": 1,
                "bad-field": 2, "unknown-device": 1, "bad-device-id": 1, "internal-error": 0}

    def delta():
        now = stats(gw)["rejections"]
        return {k: now.get(k, 0) - before.get(k, 0) for k in expected}

    wait_for(lambda: delta() == expected, 5, what=f"rejection counts {expected}")
    wait_for(lambda: any(m.get("type") == "rebirth" for m in probe.json_on(f"pe/1/{ghost}/ctl")),
             5, what="rebirth request to the unknown device")
    assert gw.events(d.dev) == []
    assert gw.get("/health")["status"] == "ok"
    # events from a device without a birth are logged as rejections too (rate-limited)
    wait_for(lambda: "reason=unknown-device" in gw.log.read_text(), 10,
             what="a log line for the unknown device's event")
    d.emit("count", {"n": 1})
    d.wait_acked(1)


def test_api_errors_are_clear_4xx(gw, devices):
    d = devices()

    def err(resp, status, *words):
        assert resp.status_code == status, resp.text
        detail = resp.json()["detail"]
        assert isinstance(detail, str)
        for w in words:
            assert w in detail, detail

    err(gw.http.get("/devices/nobody-here"), 404, "unknown device", "birth")
    err(post_command(gw, "nobody-here", name="blink", idempotency_key="k"), 404, "unknown device")
    err(post_command(gw, d.dev, name="blink"), 422, "idempotency_key")
    err(post_command(gw, d.dev, name="blink", idempotency_key="has space"), 422, "idempotency_key")
    err(post_command(gw, d.dev, name="blink", idempotency_key="k", timeout_s=301), 422, "timeout_s")
    err(post_command(gw, d.dev, name="blink", idempotency_key="k", timeout_s=0.01), 422,
        "timeout_s")
    err(post_command(gw, d.dev, name="Blink!", idempotency_key="k"), 422, "command name")
    err(post_command(gw, d.dev, name="blink", idempotency_key="k", args={"x": "y" * 5000}),
        422, "does not fit")
    err(gw.http.post(f"/devices/{d.dev}/commands", content=b"{",
                     headers={"content-type": "application/json"}), 422)
    err(gw.http.get("/commands/c-nope"), 404, "unknown command")
    err(gw.http.get("/stream", headers={"Last-Event-ID": "abc"}), 400, "Last-Event-ID")
    err(gw.http.get("/events", params={"after": -1}), 422, "after")
    err(gw.http.get("/samples/S-404"), 404, "unknown sample")
    err(gw.http.put("/samples/S-1", json={"title": "x", "uid": "zz"}), 422, "uid")
    assert gw.http.get("/events", params={"limit": 5000}).status_code == 200
    # nothing half-made: the rejected requests left no commands behind
    assert gw.get(f"/devices/{d.dev}")["pending_commands"] == []
    assert gw.get("/openapi.json")["info"]["title"] == "Phygital Edge gateway"


def test_events_paging_and_filters(gw, devices):
    d = devices()
    for n in range(5):
        d.emit("count" if n % 2 else "other", {"n": n})
    d.wait_acked(5)
    page = gw.get("/events", device=d.dev, limit=2)
    assert [e["seq"] for e in page["events"]] == [1, 2]
    page2 = gw.get("/events", device=d.dev, limit=2, after=page["next_after"])
    assert [e["seq"] for e in page2["events"]] == [3, 4]
    assert [e["seq"] for e in gw.get("/events", device=d.dev, type="count")["events"]] == [2, 4]


# -- stream and samples ---------------------------------------------------------------------

def test_stream_resumes_after_last_event_id(gw, devices):
    d = devices()
    with SseReader(gw.url) as first:
        for n in range(3):
            d.emit("count", {"n": n})
        d.wait_acked(3)
        wait_for(lambda: len(first.of("event", device=d.dev)) == 3, 5, what="3 on stream")
    resume_at = first.of("event", device=d.dev)[0]["id"]
    d.emit("count", {"n": 3})  # while nobody listens
    d.wait_acked(4)
    with SseReader(gw.url, last_event_id=resume_at) as again:
        wait_for(lambda: len(again.of("event", device=d.dev)) == 3, 5, what="replayed 2..4")
        d.emit("count", {"n": 4})
        wait_for(lambda: len(again.of("event", device=d.dev)) == 4, 5, what="live 5")
        time.sleep(0.3)
        assert [i["data"]["seq"] for i in again.of("event", device=d.dev)] == [2, 3, 4, 5]
        assert all(i["id"] > resume_at for i in again.items)


def test_samples_are_editable_and_uid_maps_to_content(gw, devices, samples_file):
    assert gw.get("/samples/S-1001")["title"] == "Linen shirt"
    r = gw.http.put("/samples/S-2002", json={"title": "Wool scarf", "uid": "0A0B0C0D",
                                             "image": "/img/s2002.jpg"})
    assert r.status_code == 200, r.text
    assert r.json()["uid"] == "0a0b0c0d"
    assert [s["id"] for s in gw.get("/samples")][:2] == ["S-1001", "S-2002"]
    assert "S-2002" not in samples_file.read_text()  # the seed file is never written
    clash = gw.http.put("/samples/S-3003", json={"title": "x", "uid": "0a0b0c0d"})
    assert clash.status_code == 409 and "S-2002" in clash.json()["detail"]
    d = devices()
    d.emit("tag.placed", {"uid": "0a0b0c0d", "tech": "mifare-1k", "sample": None})
    d.wait_acked(1)
    content = gw.events(d.dev)[0]["content"]
    assert content == {"id": "S-2002", "title": "Wool scarf", "image": "/img/s2002.jpg",
                       "url": None, "description": None}


def test_stats_shape(gw):
    s = stats(gw)
    for key in ("messages_received", "events_persisted", "duplicates", "rejections", "commands"):
        assert key in s
    assert s["mqtt"]["connected"] is True
    with httpx.Client(base_url=gw.url) as c:
        assert c.get("/health").json() == {"status": "ok", "mqtt": "connected",
                                           "ingest_queue": 0}
