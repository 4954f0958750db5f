"""Webhooks: signatures, the outbox written in the event's transaction, retries while the
receiver is down, and at-least-once delivery across a SIGKILL of the gateway."""
import json
import random
import secrets

import pytest

from gateway.integrations.webhooks import (
    Fanout,
    _create_tx,
    backoff_s,
    due_heads,
    event_type,
    install,
    matches,
    sign,
    validate_patterns,
    verify_signature,
)
from gateway.storage.store import Store, StreamItem, connect, migrate
from hil.fakes import FakeDevice, WebhookReceiver
from hil.harness import GatewayProcess, wait_for

SECRET = "s3cret-for-the-tests-" + "x" * 8


# -- pure parts -------------------------------------------------------------------------------

def test_signature_verifies_and_rejects_tampering_and_replay():
    body = b'{"delivery":1,"type":"event.tag.placed"}'
    sig = sign(SECRET, 1_800_000_000, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature(SECRET, "1800000000", body, sig, now=1_800_000_010)
    assert not verify_signature(SECRET, "1800000000", body + b" ", sig, now=1_800_000_010)
    assert not verify_signature("other-secret-xxxxxxxx", 1_800_000_000, body, sig,
                                now=1_800_000_010)
    # the timestamp is signed: moving it forward to dodge the replay window breaks the MAC
    assert not verify_signature(SECRET, 1_800_001_000, body, sig, now=1_800_001_000)
    # replayed later than the tolerance
    assert not verify_signature(SECRET, 1_800_000_000, body, sig, now=1_800_000_301)
    assert not verify_signature(SECRET, "not-a-number", body, sig)


def test_event_types_and_wildcards():
    assert event_type(StreamItem(1, "event", {"type": "tag.placed"})) == "event.tag.placed"
    assert event_type(StreamItem(2, "device", {"change": "offline"})) == "device.offline"
    assert event_type(StreamItem(3, "command", {"status": "done"})) == "command.done"
    assert event_type(StreamItem(4, "locker", {"type": "order.ready"})) == "locker.order.ready"
    assert event_type(StreamItem(5, "alert", {"change": "raised", "type": "door.forced"})) == \
        "alert.raised"
    assert matches(["event.*"], "event.tag.placed")
    assert matches(["*.offline"], "device.offline")
    assert not matches(["event.tag.*"], "event.door.opened")
    assert not matches(["device.online"], "device.offline")
    with pytest.raises(ValueError, match="invalid pattern"):
        validate_patterns(["Event.*", "ok.*"])
    with pytest.raises(ValueError, match="at least one"):
        validate_patterns([])


def test_backoff_doubles_with_jitter_and_caps():
    rng = random.Random(7)
    for n in range(1, 20):
        d = backoff_s(n, 1.0, 60.0, rng)
        base = min(60.0, 2 ** (n - 1))
        assert base / 2 <= d <= base
    assert {round(backoff_s(3, 1.0, 60.0, rng), 6) for _ in range(20)}.__len__() > 1  # jitter


def test_deliveries_commit_and_roll_back_with_the_event(tmp_path):
    conn = connect(tmp_path / "gw.db")
    migrate(conn)
    store = Store(conn)
    fanout = Fanout()
    install(store, fanout)
    _create_tx(store, fanout, {"id": "wh-a", "url": "http://x/", "secret": SECRET,
                               "events": ["event.tag.*"], "description": None, "created": 1})
    _create_tx(store, fanout, {"id": "wh-b", "url": "http://y/", "secret": SECRET,
                               "events": ["device.*"], "description": None, "created": 2})
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_event("pad-1", "e1", 1, "tag.placed", None, 5, {"uid": "04"})
        raise RuntimeError("crash before commit")
    assert conn.execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()[0] == 0
    with store.transaction():
        store.insert_event("pad-1", "e1", 1, "tag.placed", None, 5, {"uid": "04"})
        store.insert_event("pad-1", "e1", 2, "door.opened", None, 6, {})
    heads = due_heads(store)
    assert [(h["sub"], h["type"]) for h in heads] == [("wh-a", "event.tag.placed")]
    assert json.loads(heads[0]["data"])["body"] == {"uid": "04"}


# -- against a real gateway, broker and HTTP receiver -----------------------------------------

def _gateway(broker, tmp_path, name):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text('[webhooks]\nbackoff_min_s = 0.05\nbackoff_max_s = 0.5\ntimeout_s = 5\n'
                   '[logging]\nformat = "json"\n')
    return GatewayProcess(tmp_path / name, broker.port,
                          extra_args=["--config", str(cfg)]).start()


def _subscribe(gw, receiver, events):
    r = gw.http.post("/webhooks", json={"url": receiver.url, "events": events,
                                        "secret": receiver.secret})
    assert r.status_code == 201, r.text
    return r.json()


def test_receiver_down_then_up_gets_everything_in_order(broker, tmp_path):
    gw = _gateway(broker, tmp_path, "gw")
    receiver = WebhookReceiver(SECRET)            # not started: connection refused
    dev = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port)
    try:
        sub = _subscribe(gw, receiver, ["event.*"])
        assert sub["secret"] == SECRET and sub["pending"] == 0
        assert "secret" not in gw.get(f"/webhooks/{sub['id']}")
        dev.connect()
        seqs = [dev.emit("tag.placed", {"uid": f"04{i:02x}"}) for i in range(20)]
        dev.wait_acked(seqs[-1])
        # failures are visible while the receiver is down
        state = wait_for(lambda: (s := gw.get(f"/webhooks/{sub['id']}"))["failing"] >= 3 and s,
                         30, what="failed attempts recorded")
        assert state["pending"] == 20 and state["delivered"] == 0
        assert "ConnectError" in state["last_error"] and state["next_attempt"] is not None
        head = gw.get(f"/webhooks/{sub['id']}/deliveries", status="pending",
                      limit=1)["deliveries"][0]
        assert head["attempts"] >= 3 and head["last_error"] and head["next_at"]
        # only the head of the queue is tried (per-subscription order)
        second = gw.get(f"/webhooks/{sub['id']}/deliveries", status="pending", after=head["id"],
                        limit=1)["deliveries"][0]
        assert second["attempts"] == 0

        receiver.status = 503                     # up, but failing: not a delivery either
        receiver.start()
        wait_for(lambda: "HTTP 503" in (gw.get(f"/webhooks/{sub['id']}")["last_error"] or ""),
                 30, what="HTTP 503 recorded")
        assert gw.get(f"/webhooks/{sub['id']}")["delivered"] == 0
        receiver.status = 200
        wait_for(lambda: len(receiver.accepted()) == 20, 60, what="20 deliveries")
        got = receiver.accepted()
        assert all(r["signed"] for r in receiver.received)
        assert [r["body"]["data"]["seq"] for r in got] == seqs
        assert [r["body"]["data"]["body"]["uid"] for r in got] == [f"04{i:02x}" for i in range(20)]
        assert all(r["body"]["type"] == "event.tag.placed" for r in got)
        assert all(r["headers"]["X-Phygital-Delivery"] == str(r["body"]["delivery"]) for r in got)
        stream_ids = [r["body"]["stream_id"] for r in got]
        assert stream_ids == sorted(stream_ids)
        done = wait_for(lambda: (s := gw.get(f"/webhooks/{sub['id']}"))["pending"] == 0 and s,
                        10, what="backlog empty")
        assert done["delivered"] == 20 and done["failing"] == 0 and done["failures"] >= 3
        # logs are JSON lines with the key=value pairs as fields
        lines = [json.loads(l) for l in gw.log_text().splitlines() if l.startswith("{")]
        failed = [l for l in lines if l["msg"].startswith("webhook attempt failed")]
        assert failed and failed[0]["level"] == "WARNING" and failed[0]["id"] == sub["id"]

        # a subscription only gets what matches; deleting it stops deliveries
        other = _subscribe(gw, receiver, ["device.offline"])
        dev.emit("tag.removed", {"uid": "0400"})
        assert gw.http.delete(f"/webhooks/{other['id']}").status_code == 204
        assert gw.http.delete(f"/webhooks/{other['id']}").status_code == 404
        wait_for(lambda: len(receiver.accepted()) == 21, 30, what="21st delivery")
        assert receiver.accepted()[-1]["body"]["subscription"] == sub["id"]
        assert [s["id"] for s in gw.get("/webhooks")] == [sub["id"]]
    finally:
        dev.close()
        receiver.stop()
        gw.stop()


def test_api_rejects_bad_subscriptions(broker, tmp_path):
    gw = _gateway(broker, tmp_path, "gw")
    try:
        for body, needle in (({"url": "ftp://x", "events": ["*"]}, "url"),
                             ({"url": "http://x/", "events": []}, "events"),
                             ({"url": "http://x/", "events": ["Tag Placed"]}, "invalid pattern"),
                             ({"url": "http://x/", "events": ["*"], "secret": "short"}, "secret"),
                             ({"url": "http://x/", "events": ["*"], "extra": 1}, "extra")):
            r = gw.http.post("/webhooks", json=body)
            assert r.status_code == 422 and needle in r.json()["detail"], (body, r.text)
        assert gw.http.get("/webhooks/wh-nope").status_code == 404
        assert gw.http.get("/webhooks/wh-nope/deliveries").status_code == 404
    finally:
        gw.stop()


def test_sigkill_mid_delivery_redelivers_after_restart(broker, tmp_path):
    gw = _gateway(broker, tmp_path, "gw")
    receiver = WebhookReceiver(SECRET).start()
    receiver.hold.clear()                         # the first POST stays in flight
    dev = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port)
    try:
        sub = _subscribe(gw, receiver, ["event.*"])
        dev.connect()
        seqs = [dev.emit("count", {"n": i}) for i in range(5)]
        dev.wait_acked(seqs[-1])
        first = wait_for(lambda: receiver.received and receiver.received[0], 30,
                         what="first delivery in flight")
        gw.kill()                                  # SIGKILL while the receiver holds the POST
        receiver.hold.set()                        # the receiver processes it: gateway never knows
        gw.start()
        wait_for(lambda: len(receiver.accepted()) == 5, 60, what="5 deliveries after restart")
        got = receiver.accepted()
        assert [r["body"]["data"]["seq"] for r in got] == seqs
        ids = [r["delivery"] for r in receiver.received]
        assert ids.count(first["delivery"]) >= 2    # at least once: same id, receiver dedupes
        assert len({r["delivery"] for r in got}) == 5
        assert wait_for(lambda: gw.get(f"/webhooks/{sub['id']}")["pending"] == 0, 10,
                        what="backlog empty")
    finally:
        dev.close()
        receiver.stop()
        gw.stop()
