"""`final: true` is final (issue 16, item 3): a command reported `expired` keeps that status
and outcome forever; a device answer that arrives later is recorded beside it as
`late_outcome`, streamed as `command.late.<status>` and raised as a staff alert."""
import json

import pytest

from gateway.devices import commands
from gateway.devices.alerts import apply_items, list_alerts, pending
from gateway.devices.ingest import apply_batch
from gateway.integrations.metrics import GatewayMetrics
from gateway.integrations.webhooks import Fanout, _create_tx, due_heads, event_type, install
from gateway.storage.store import (
    MIGRATIONS,
    Store,
    StreamItem,
    connect,
    connect_all,
    migrate,
    public_command,
)
from tests.support.envelopes import NOW, birth, reply

SECRET = "s3cret-for-the-tests-" + "x" * 8


def _expired_command(gw_store, cid="c-1", name="open"):
    apply_batch(gw_store, [birth()], NOW)
    commands._submit_tx(gw_store, device="pad-1", name=name, args={"compartment": 3}, key=cid,
                        deadline=NOW + 1000, now=NOW, new_id=cid)
    commands._record_send(gw_store, cid, NOW + 1)
    assert [c["id"] for c in commands.expire_due(gw_store, NOW + 3000, 2000)] == [cid]
    return gw_store.get_command(cid)


def test_an_expired_command_stays_expired_and_a_late_answer_is_recorded_beside_it(gw_store):
    expired = _expired_command(gw_store)
    assert (expired["status"], expired["final"], expired["late_outcome"]) == ("expired", True, None)
    gw_store.take_outbox()
    apply_batch(gw_store, [reply("c-1", "done")], NOW + 5000)
    c = public_command(gw_store.get_command("c-1"))
    # the outcome the caller was told is frozen: status, reason, result, final, updated
    assert (c["status"], c["reason"], c["result"], c["final"], c["updated"]) == \
        ("expired", "timeout", None, True, expired["updated"])
    assert c["late"] is True
    assert c["late_outcome"] == {"status": "done", "reason": None, "result": {"ok": "done"},
                                 "at": NOW + 5000}
    items = [i for i in gw_store.take_outbox() if i.kind == "command"]
    assert [(i.data["status"], i.data.get("change")) for i in items] == [("expired", "late.done")]
    # a second late answer (a redelivered reply, or a different one) changes nothing
    apply_batch(gw_store, [reply("c-1", "failed")], NOW + 6000)
    assert gw_store.get_command("c-1")["late_outcome"]["status"] == "done"
    assert [i for i in gw_store.take_outbox() if i.kind == "command"] == []


def test_a_non_final_late_reply_is_ignored(gw_store):
    _expired_command(gw_store)
    apply_batch(gw_store, [reply("c-1", "accepted")], NOW + 4000)
    c = gw_store.get_command("c-1")
    assert (c["status"], c["late"], c["late_outcome"]) == ("expired", False, None)


def test_webhooks_get_command_late_and_no_second_expired(gw_store):
    fanout = Fanout()
    install(gw_store, fanout)
    for sid, pats in (("wh-all", ["command.*"]), ("wh-exp", ["command.expired"]),
                      ("wh-late", ["command.late.*"])):
        _create_tx(gw_store, fanout, {"id": sid, "url": "http://x/", "secret": SECRET,
                                   "events": pats, "description": None, "created": 1})
    _expired_command(gw_store)
    apply_batch(gw_store, [reply("c-1", "done")], NOW + 5000)
    rows = gw_store.conn.execute("SELECT sub, type, data FROM webhook_deliveries "
                              "ORDER BY id").fetchall()
    by_sub = {}
    for sub, etype, _ in rows:
        by_sub.setdefault(sub, []).append(etype)
    assert by_sub["wh-exp"] == ["command.expired"]          # told once, never told otherwise
    assert by_sub["wh-late"] == ["command.late.done"]
    assert by_sub["wh-all"][-2:] == ["command.expired", "command.late.done"]
    late = json.loads(rows[-1][2])
    assert (late["status"], late["final"], late["late_outcome"]["status"]) == \
        ("expired", True, "done")
    assert due_heads(gw_store)  # queued for delivery
    assert event_type(StreamItem(1, "command", {"status": "expired", "change": "late.rejected"})) \
        == "command.late.rejected"


@pytest.mark.parametrize("answer,raised", [("done", True), ("failed", True), ("rejected", False)])
def test_a_late_actuation_raises_an_alert(gw_store, answer, raised):
    _expired_command(gw_store)
    apply_batch(gw_store, [reply("c-1", answer)], NOW + 5000)
    items, upto = pending(gw_store, 0)
    if items:
        apply_items(gw_store, items, NOW + 5001, upto)
    alerts = [a for a in list_alerts(gw_store) if a["key"].startswith("command.late")]
    if not raised:  # the device did nothing: what the caller assumed holds, no alert
        assert alerts == []
        return
    assert len(alerts) == 1
    a = alerts[0]
    assert (a["key"], a["device"], a["severity"], a["type"]) == \
        ("command.late:c-1", "pad-1", "warning", f"late.{answer}")
    assert "command open (c-1)" in a["text"] and "reported expired" in a["text"]


def test_metrics_count_an_outcome_once(gw_store):
    m = GatewayMetrics()
    _expired_command(gw_store)
    m.on_commit(gw_store.take_outbox())
    apply_batch(gw_store, [reply("c-1", "done")], NOW + 5000)
    m.on_commit(gw_store.take_outbox())
    assert m.command_outcomes.labels("expired")._value.get() == 1
    assert m.command_outcomes.labels("done")._value.get() == 0


def test_migration_freezes_old_late_rows_as_expired(tmp_path):
    conn = connect(tmp_path / "old.db")
    migrate(conn, upto=10)
    conn.execute("INSERT INTO devices VALUES ('pad-1','sample-pad','0','[]','0',1,'e1',1,NULL,1,1,1)")
    conn.execute("""INSERT INTO commands (id, device, name, args, idem_key, status, reason, result,
                    deadline, created, updated, late) VALUES
                    ('c-old','pad-1','open','{}','k','done',NULL,'{"ok":1}',5,1,9,1),
                    ('c-new','pad-1','open','{}','k2','done',NULL,'{"ok":2}',5,1,4,0)""")
    conn.close()
    conn = connect_all(tmp_path / "old.db")  # upgraded: the rows move to the command file
    gw_store = Store(conn)
    old, new = gw_store.get_command("c-old"), gw_store.get_command("c-new")
    assert (old["status"], old["reason"], old["result"], old["late"]) == \
        ("expired", "timeout", None, True)
    assert old["late_outcome"] == {"status": "done", "reason": None, "result": {"ok": 1}, "at": 9}
    assert (new["status"], new["result"], new["late_outcome"]) == ("done", {"ok": 2}, None)
    assert len(MIGRATIONS) >= 11
