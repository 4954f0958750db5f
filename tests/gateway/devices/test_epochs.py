"""Issue 16, items 1 and 2: a device whose journal was rolled back (restored from an older copy
of its flash) loses nothing, and a will is matched to the epoch and session it belongs to.

The rules are in docs/protocol.md ("Journal rolled back: `new_epoch`", "Session: connect, will,
birth"). The core tests drive `apply_batch` on a real SQLite file; the firmware test runs the
real runtime and journal (firmware/edge/runtime.py, journal.py) in MicroPython against the
gateway process and a real Mosquitto, with the device's flash directory copied and restored.
"""
import json
import shutil

import httpx

from gateway.devices.ingest import ROLLBACK_EVENT, apply_batch
from gateway.storage.store import Store, connect, migrate
from hil.harness import wait_for
from tests.support.scripted_device import ScriptedDevice

NOW = 1_795_426_642_000


def birth(session=1, epoch="e1", first=1, nxt=None, dev="pad-1"):
    return (f"pe/1/{dev}/birth", json.dumps({
        "v": 1, "dev": dev, "type": "birth", "t": None,
        "body": {"kind": "sample-pad", "fw": "0.1.0", "caps": ["blink"], "cfg": "0",
                 "session": session, "boot": 1, "reset": "power", "epoch": epoch,
                 "first": first, "next": nxt or first}}).encode())


def evt(seq, body=None, t=None, dev="pad-1"):
    return (f"pe/1/{dev}/evt", json.dumps({"v": 1, "dev": dev, "type": "count", "seq": seq,
                                           "t": t, "body": body or {"n": seq}}).encode())


def status(online, session, epoch=None, dev="pad-1"):
    body = {"session": session} | ({} if epoch is None else {"epoch": epoch})
    return (f"pe/1/{dev}/status", json.dumps({
        "v": 1, "dev": dev, "type": "online" if online else "offline", "t": None,
        "body": body}).encode())


def stored(gw_store, dev="pad-1"):
    return [(e["epoch"], e["seq"], e["body"]) for e in gw_store.list_events(device=dev, limit=1000)
            if e["seq"] is not None]


# -- item 1: a rolled-back journal ------------------------------------------------------------

def test_true_duplicates_are_still_duplicates_and_acked(gw_store):
    apply_batch(gw_store, [birth(), evt(1), evt(2), evt(3)], NOW)
    # the device missed our acks and reconnects: its journal still holds 2 and 3
    eff = apply_batch(gw_store, [birth(session=2, first=2, nxt=4)], NOW)
    assert eff.acks == {"pad-1": ("e1", 1)} and not eff.new_epochs
    eff = apply_batch(gw_store, [evt(2), evt(3)], NOW)  # the replay: same content
    assert (eff.persisted, eff.duplicates, eff.acks) == (0, 2, {"pad-1": ("e1", 3)})
    eff = apply_batch(gw_store, [evt(3), evt(3)], NOW)  # QoS 1 redelivery, twice
    assert (eff.persisted, eff.duplicates, eff.acks) == (0, 2, {"pad-1": ("e1", 3)})
    assert [s for _, s, _ in stored(gw_store)] == [1, 2, 3]
    assert not gw_store.list_events(type=ROLLBACK_EVENT)


def test_restored_device_with_empty_journal_is_told_to_start_a_new_epoch(gw_store):
    apply_batch(gw_store, [birth(), *(evt(s) for s in range(1, 9))], NOW)
    # restored from a copy taken when 1..3 were acked: next = 4, the gateway has up to 8
    eff = apply_batch(gw_store, [birth(session=2, first=4, nxt=4)], NOW)
    assert not eff.acks
    (old, upto, new), = eff.new_epochs.values()
    assert (old, upto) == ("e1", 3) and new != "e1"
    rb = gw_store.list_events(type=ROLLBACK_EVENT)
    assert len(rb) == 1 and rb[0]["body"]["from"] == 4 and rb[0]["body"]["new_epoch"] == new
    # the device moves to the new epoch; its seqs go on from 4 and are all stored
    eff = apply_batch(gw_store, [birth(session=2, epoch=new, first=4, nxt=4),
                              evt(4, {"new": 1}), evt(5, {"new": 2})], NOW)
    assert eff.acks == {"pad-1": (new, 5)} and eff.persisted == 2
    assert not gw_store.list_events(type="journal.overflow")
    assert (new, 4, {"new": 1}) in stored(gw_store) and (new, 5, {"new": 2}) in stored(gw_store)
    assert ("e1", 4, {"n": 4}) in stored(gw_store)  # the old epoch's events are untouched


def test_new_data_under_a_reused_seq_is_not_dropped_as_a_duplicate(gw_store):
    apply_batch(gw_store, [birth(), *(evt(s) for s in range(1, 9))], NOW)
    # restored to next = 4 and, offline, journaled 7 new events: next = 11 > 8 (the gateway
    # cannot tell from the numbers alone). Its birth must not settle 4..8
    eff = apply_batch(gw_store, [birth(session=2, first=2, nxt=11)], NOW)
    assert eff.acks == {"pad-1": ("e1", 1)}
    eff = apply_batch(gw_store, [evt(2), evt(3), *(evt(s, {"offline": s}) for s in range(4, 11))],
                      NOW)
    assert eff.duplicates == 2 and eff.persisted == 0 and not eff.acks
    (old, upto, new), = eff.new_epochs.values()
    assert (old, upto) == ("e1", 3)
    assert gw_store.counters().get("seq_conflicts") == 7
    # everything the device sends of e1 from 4 on is refused (not stored, not acked) ...
    eff = apply_batch(gw_store, [evt(9, {"late": 1})], NOW)
    assert not eff.acks and eff.new_epochs["pad-1"] == ("e1", 3, new)
    # ... and goes to the new epoch instead
    eff = apply_batch(gw_store, [birth(session=2, epoch=new, first=4, nxt=11),
                              *(evt(s, {"offline": s}) for s in range(4, 11))], NOW)
    assert eff.acks == {"pad-1": (new, 10)} and eff.persisted == 7
    assert [s for e, s, _ in stored(gw_store) if e == new] == list(range(4, 11))
    assert len(gw_store.list_events(type=ROLLBACK_EVENT)) == 1


def test_rollback_raises_an_alert(gw_store):
    from gateway.devices.alerts import apply_items, list_alerts
    apply_batch(gw_store, [birth(), *(evt(s) for s in range(1, 6))], NOW)
    start = gw_store.last_stream_id()
    apply_batch(gw_store, [birth(session=2, first=3, nxt=3)], NOW)
    with gw_store.transaction():
        apply_items(gw_store, gw_store.stream_after(start), now=NOW, upto=gw_store.last_stream_id())
    alerts = [a for a in list_alerts(gw_store) if a["type"] == ROLLBACK_EVENT]
    assert len(alerts) == 1 and alerts[0]["device"] == "pad-1"
    assert alerts[0]["severity"] == "warning" and "new epoch" in alerts[0]["text"]


# -- item 2: a will belongs to an epoch and a session ------------------------------------------

def test_late_will_of_an_older_epoch_with_a_higher_session_is_ignored(gw_store):
    apply_batch(gw_store, [birth(session=3, epoch="old")], NOW)
    # flash wiped: a new epoch whose session counter starts again
    apply_batch(gw_store, [birth(session=1, epoch="new"), birth(session=2, epoch="new")], NOW)
    apply_batch(gw_store, [status(False, 3, epoch="old")], NOW)   # the will of before the wipe
    assert gw_store.get_device("pad-1")["online"] is True
    apply_batch(gw_store, [status(False, 3)], NOW)                # the same, from older firmware
    assert gw_store.get_device("pad-1")["online"] is True
    apply_batch(gw_store, [status(False, 2, epoch="new")], NOW)   # this connection's will
    assert gw_store.get_device("pad-1")["online"] is False
    eff = apply_batch(gw_store, [status(True, 5, epoch="old")], NOW)  # retained online, old epoch
    assert not eff.rebirths and gw_store.get_device("pad-1")["online"] is False


def test_will_of_the_connection_that_moved_to_a_new_epoch_still_counts(gw_store):
    apply_batch(gw_store, [birth(), *(evt(s) for s in range(1, 4))], NOW)
    eff = apply_batch(gw_store, [birth(session=4, first=2, nxt=2)], NOW)  # restored
    _, _, new = eff.new_epochs["pad-1"]
    apply_batch(gw_store, [birth(session=4, epoch=new, first=2, nxt=2)], NOW)
    # the connection's will was made before the switch: it names the old epoch
    apply_batch(gw_store, [status(False, 4, epoch="e1")], NOW)
    assert gw_store.get_device("pad-1")["online"] is False


# -- item 1 with the real firmware -------------------------------------------------------------

def _journal(dev):
    return json.loads((dev.dir / "flash" / "journal" / "journal.json").read_text())


def test_firmware_restored_from_an_older_flash_copy_loses_no_event(gw, broker, tmp_path):
    dev = ScriptedDevice(tmp_path, broker.port, "pad-rb")
    try:
        dev.start()
        gw.wait_online(dev.dev)
        gw.command(dev.dev, "emit", {"n": 3}, key="a")
        wait_for(lambda: len(gw.events(dev.dev, "test.n")) == 3, 20, what="3 events")
        wait_for(lambda: _journal(dev)["first"] == 4, 20, what="3 events acked on the device")
        dev.kill()
        backup = tmp_path / "flash-copy"
        shutil.copytree(dev.dir / "flash", backup)   # the copy: next = 4
        epoch = _journal(dev)["epoch"]
        dev.start()
        gw.wait_online(dev.dev)
        gw.command(dev.dev, "emit", {"n": 5}, key="b")
        wait_for(lambda: len(gw.events(dev.dev, "test.n")) == 8, 20, what="8 events")
        wait_for(lambda: _journal(dev)["first"] == 9, 20, what="8 events acked on the device")
        dev.kill()
        shutil.rmtree(dev.dir / "flash")
        shutil.copytree(backup, dev.dir / "flash")   # restore: next = 4 again
        before = gw.get("/stats")
        dev.start()
        wait_for(lambda: _journal(dev)["epoch"] != epoch, 20, what="device moved to a new epoch")
        new = _journal(dev)["epoch"]
        wait_for(lambda: (gw.device(dev.dev) or {}).get("epoch") == new, 20,
                 what="gateway saw the new epoch")
        gw.command(dev.dev, "emit", {"n": 4}, key="c")
        wait_for(lambda: len([e for e in gw.events(dev.dev, "test.n") if e["epoch"] == new]) == 4,
                 20, what="the 4 new events stored")
        wait_for(lambda: _journal(dev)["first"] == _journal(dev)["next"], 20,
                 what="the new events acked on the device")
        events = gw.events(dev.dev, "test.n")
        assert [(e["seq"], e["body"]["i"]) for e in events if e["epoch"] == new] == [
            (4, 0), (5, 1), (6, 2), (7, 3)]
        assert [e["seq"] for e in events if e["epoch"] == epoch] == list(range(1, 9))
        after = gw.get("/stats")
        assert after["duplicates"] == before["duplicates"]
        rb = gw.events(dev.dev, "journal.rollback")
        assert len(rb) == 1 and rb[0]["body"]["new_epoch"] == new
        alerts = wait_for(lambda: [a for a in httpx.get(gw.url + "/alerts", timeout=10).json()
                                   if a["type"] == "journal.rollback"], 20, what="alert")
        assert alerts[0]["device"] == dev.dev and alerts[0]["state"] == "open"
    finally:
        dev.kill()


def test_migration_11_keeps_acking_devices_born_before_the_upgrade(tmp_path):
    conn = connect(tmp_path / "gw.db")
    migrate(conn, upto=10)
    old = Store(conn)
    # what a v10 gateway wrote for a device born before the upgrade (events 1 and 2 acked)
    old.upsert_device(id="pad-1", kind="sample-pad", fw="0.1.0", caps=["blink"], cfg="0",
                      session=1, epoch="e1", boot=1, reset=None, online=True, now=NOW)
    for seq in (1, 2):
        conn.execute("INSERT INTO events (device, epoch, seq, type, t_device, t_gateway, body) "
                     "VALUES ('pad-1', 'e1', ?, 'count', NULL, ?, ?)",
                     (seq, NOW, json.dumps({"n": seq})))
    conn.execute("INSERT INTO acks (device, epoch, upto) VALUES ('pad-1', 'e1', 2)")
    migrate(conn)
    st = old.epoch_state("pad-1", "e1")
    assert (st["verified"], st["sealed"], st["fork"]) == (2, None, None)
    assert st["mark"] == old.last_event_id()
    eff = apply_batch(old, [evt(3)], NOW)              # no new birth: acks go on
    assert eff.acks == {"pad-1": ("e1", 3)}
    conn.close()
