"""Staff alerts (gateway/devices/alerts.py): rules over the stream, folding, resolving,
acknowledging, exactly once across restarts; and through the gateway process with fake devices."""
import secrets

import pytest

from gateway.devices.alerts import ack_alert, apply_items, cursor, list_alerts, match, pending
from gateway.storage.store import Store, StreamItem, connect, migrate
from hil.fakes import FakeDevice, SseReader
from hil.harness import GatewayProcess, wait_for


@pytest.fixture
def store(gw_store):
    return gw_store  # tests/conftest.py


def append(store: Store, kind: str, data: dict) -> StreamItem:
    with store.transaction():
        return store.append_stream(kind, data)


def offline(dev: str) -> dict:
    return {"change": "offline", "id": dev, "kind": "sample-pad", "online": False}


def event(dev: str, type_: str, **body) -> dict:
    return {"id": 1, "device": dev, "type": type_, "seq": 1, "body": body}


def test_rules_raise_fold_and_resolve(store):
    items = [append(store, "device", offline("pad-1")),
             append(store, "device", offline("pad-1")),           # folded into the open one
             append(store, "event", event("lk-1", "door.ajar", compartment=7, open_ms=90000)),
             append(store, "event", event("lk-1", "tag.placed", uid="04")),  # no rule
             append(store, "device", {**offline("pad-1"), "change": "online", "online": True})]
    assert apply_items(store, items, now=1000) == items[-1].id
    assert cursor(store) == items[-1].id
    every = {a["key"]: a for a in list_alerts(store, "all")}
    assert set(every) == {"offline:pad-1", "door.ajar:lk-1:7"}
    assert every["offline:pad-1"]["state"] == "resolved" and every["offline:pad-1"]["count"] == 2
    ajar = every["door.ajar:lk-1:7"]
    assert ajar["state"] == "open" and ajar["severity"] == "warning" and ajar["device"] == "lk-1"
    assert ajar["text"] == "Locker lk-1, door 7 has been left open"
    # the default list leaves resolved alerts out
    assert [a["key"] for a in list_alerts(store)] == ["door.ajar:lk-1:7"]
    # every change is on the stream, in order
    changes = [(i.data["change"], i.data["key"]) for i in store.stream_after(items[-1].id)]
    assert changes == [("raised", "offline:pad-1"), ("repeated", "offline:pad-1"),
                       ("raised", "door.ajar:lk-1:7"), ("resolved", "offline:pad-1")]


def test_pending_reads_only_what_a_rule_may_match_and_moves_the_cursor_past_the_rest(store):
    items = [append(store, "event", event("pad-1", "tag.placed", uid="04")),
             append(store, "event", event("lk-1", "door.forced", compartment=3)),
             append(store, "alert", {"change": "raised", "type": "door.forced"}),
             append(store, "device", offline("pad-1")),
             append(store, "device", {**offline("pad-1"), "change": "birth"}),
             append(store, "command", {"id": "c-1", "status": "done", "type": "door.forced"}),
             append(store, "event", event("pad-1", "tag.removed", uid="04"))]
    got, upto = pending(store, 0)
    assert [i.id for i in got] == [items[1].id, items[3].id] and upto == items[-1].id
    assert [match(i)[0][0].type for i in got] == ["door.forced", "offline"]
    got, upto = pending(store, 0, limit=1)  # a full page: the cursor stops at its last item
    assert [i.id for i in got] == [items[1].id] and upto == items[1].id
    assert pending(store, items[-1].id) == ([], items[-1].id)
    assert apply_items(store, got, now=5, upto=items[2].id) == items[2].id == cursor(store)
    assert [a["key"] for a in list_alerts(store)] == ["door.forced:lk-1:3"]


def test_alert_items_and_unknown_types_raise_nothing():
    assert match(StreamItem(1, "alert", {"change": "raised", "type": "door.forced"})) == []
    assert match(StreamItem(2, "event", {"device": "x", "type": "door.opened", "body": {}})) == []
    hits = match(StreamItem(3, "event", {"device": "lk", "type": "door.forced",
                                         "body": {"compartment": 3}}))
    assert [(r.severity, f["compartment"]) for r, f in hits] == [("critical", 3)]


def test_missing_fields_do_not_break_a_rule(store):
    apply_items(store, [append(store, "event", event("lk-2", "keypad.locked"))], now=5)
    (a,) = list_alerts(store)
    assert a["text"] == "Locker lk-2: keypad locked for ? s after ? wrong codes"


def test_ack_once_then_unchanged_and_a_new_alert_after_resolution(store):
    apply_items(store, [append(store, "event", event("lk-1", "lock.jammed", compartment=2))], 10)
    (a,) = list_alerts(store)
    acked = ack_alert(store, a["id"], "anna", now=20)
    assert (acked["state"], acked["acked_by"], acked["acked_at"]) == ("acked", "anna", 20)
    again = ack_alert(store, a["id"], "ben", now=30)
    assert (again["acked_by"], again["acked_at"]) == ("anna", 20)
    assert ack_alert(store, 999, "anna", now=30) is None
    # a repeat while acked folds into the acked alert: staff is already on it
    apply_items(store, [append(store, "event", event("lk-1", "lock.jammed", compartment=2))], 40)
    (a2,) = list_alerts(store, "all")
    assert (a2["id"], a2["count"], a2["state"]) == (a["id"], 2, "acked")


def test_an_upgraded_database_does_not_alert_on_old_history(tmp_path):
    conn = connect(tmp_path / "old.db")
    # an older gateway's database: build v3, add history, then migrate to the newest
    migrate(conn, upto=3)
    conn.execute("INSERT INTO stream (kind, data) VALUES ('device', ?)",
                 ('{"change": "offline", "id": "pad-9"}',))
    migrate(conn)
    s = Store(conn)
    assert cursor(s) == 1 and list_alerts(s, "all") == []
    conn.close()


# -- through the gateway process ------------------------------------------------------------

def test_alerts_from_devices_acknowledged_over_the_api_and_kept_across_a_restart(broker, tmp_path):
    gw = GatewayProcess(tmp_path / "gw", broker.port)
    gw.start()
    bank = FakeDevice(f"lk-{secrets.token_hex(3)}", broker.port, kind="locker-bank",
                      caps=("open",), keepalive=2)
    pad = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port, keepalive=2)
    try:
        with SseReader(gw.url) as sse:
            bank.connect()
            pad.connect()
            bank.emit("door.forced", {"compartment": 4})
            forced = wait_for(lambda: [a for a in gw.get("/alerts") if a["type"] == "door.forced"],
                              15, what="door.forced alert")[0]
            assert forced["device"] == bank.dev and forced["severity"] == "critical"
            assert "door 4 was forced open" in forced["text"]
            pad.crash()  # the broker publishes its will: offline
            wait_for(lambda: any(a["key"] == f"offline:{pad.dev}" for a in gw.get("/alerts")),
                     20, what="offline alert")

            r = gw.http.post(f"/alerts/{forced['id']}/ack", json={"by": "anna"})
            assert r.status_code == 200 and r.json()["state"] == "acked"
            assert gw.http.post("/alerts/99999/ack", json={"by": "anna"}).status_code == 404
            assert gw.http.post(f"/alerts/{forced['id']}/ack", json={}).status_code == 422
            wait_for(lambda: sse.of("alert", change="acked", id=forced["id"]), 10,
                     what="acked on the stream")
            assert [i["data"]["change"] for i in sse.of("alert", id=forced["id"])] == \
                ["raised", "acked"]

        assert gw.terminate() == 0
        gw.start()  # nothing raised twice, nothing lost
        pad.connect()  # back online: its offline alert resolves by itself
        wait_for(lambda: not any(a["key"] == f"offline:{pad.dev}" for a in gw.get("/alerts")),
                 20, what="offline alert resolved")
        every = gw.get("/alerts", state="all")
        assert sorted(a["key"] for a in every) == sorted(
            [f"door.forced:{bank.dev}:4", f"offline:{pad.dev}"])
        assert {a["key"]: a["state"] for a in every}[f"door.forced:{bank.dev}:4"] == "acked"

        page = gw.http.get("/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "Store dashboard" in page.text and 'new EventSource("/stream")' in page.text
    finally:
        bank.close()
        pad.close()
        gw.stop()
