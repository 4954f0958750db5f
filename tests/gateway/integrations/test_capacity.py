"""Bounded queues and the disk (issue 17, gateway/integrations/capacity.py): a webhook
subscription's queue never holds more than `max_pending` (the oldest go, counted), the chain
outbox is counted without a scan and never dropped, and the capacity watch turns a low disk, a
dropping webhook queue and a long chain outbox into alerts, then resolves them. In process, a
scripted disk, no sleeps."""
import asyncio
import json
from types import SimpleNamespace

import pytest

from gateway.config_file import ConfigError, parse
from gateway.devices.alerts import AlertsService, list_alerts
from gateway.integrations.capacity import MB, CapacitySettings, CapacityWatch, disk_threshold
from gateway.integrations.webhooks import Fanout, _create_tx, _record_tx, backlog, install, queues
from gateway.storage.db import Database
from gateway.storage.store import Store, connect, migrate

SECRET = "s3cret-for-the-tests-xxxxxxxx"


def _store(tmp_path, max_pending):
    conn = connect(tmp_path / "gw.db")
    migrate(conn)
    store = Store(conn)
    fanout = Fanout(max_pending)
    install(store, fanout)
    for sid, pats in (("wh-a", ["event.*"]), ("wh-b", ["event.door.*"])):
        _create_tx(store, fanout, {"id": sid, "url": "http://x/", "secret": SECRET,
                                   "events": pats, "description": None, "created": 1})
    return store


def _counted(store, sub):
    """The triggers' `pending` against a real count of the table."""
    kept = store.conn.execute("SELECT pending, dropped FROM webhook_subscriptions WHERE id = ?",
                              (sub,)).fetchone()
    real = store.conn.execute("SELECT COUNT(*) FROM webhook_deliveries WHERE sub = ? AND "
                              "status = 'pending'", (sub,)).fetchone()[0]
    return kept[0], real, kept[1]


def _pending_seqs(store, sub):
    return [json.loads(r[0])["seq"] for r in store.conn.execute(
        "SELECT data FROM webhook_deliveries WHERE sub = ? AND status = 'pending' ORDER BY id",
        (sub,))]


def test_a_webhook_queue_keeps_the_newest_max_pending_and_counts_the_dropped(tmp_path):
    store = _store(tmp_path, max_pending=5)
    with store.transaction():
        for seq in range(1, 9):
            store.insert_event("pad-1", "e1", seq, "tag.placed", None, seq, {"n": seq})
    assert _counted(store, "wh-a") == (5, 5, 3)          # pending (kept, real), dropped
    assert _pending_seqs(store, "wh-a") == [4, 5, 6, 7, 8]  # drop-oldest
    assert _counted(store, "wh-b") == (0, 0, 0)          # another subscription is untouched

    # a transaction that rolls back takes its deliveries, its drops and their counts with it
    with pytest.raises(RuntimeError), store.transaction():
        for seq in range(9, 12):
            store.insert_event("pad-1", "e1", seq, "tag.placed", None, seq, {})
        raise RuntimeError("crash before commit")
    assert _counted(store, "wh-a") == (5, 5, 3)
    assert _pending_seqs(store, "wh-a") == [4, 5, 6, 7, 8]

    # one delivered: the count follows, and the next event fits without a drop
    head = store.conn.execute("SELECT MIN(id) FROM webhook_deliveries WHERE sub = 'wh-a' AND "
                              "status = 'pending'").fetchone()[0]
    _record_tx(store, head, "wh-a", True, 200, None, 100, 100)
    assert _counted(store, "wh-a") == (4, 4, 3)
    with store.transaction():
        store.insert_event("pad-1", "e1", 12, "door.opened", None, 12, {})
    assert _counted(store, "wh-a") == (5, 5, 3) and _counted(store, "wh-b") == (1, 1, 0)
    assert backlog(store) == 6
    assert queues(store) == [{"id": "wh-a", "pending": 5, "dropped": 3},
                             {"id": "wh-b", "pending": 1, "dropped": 0}]
    # deleting the subscription takes its queue (the cascade goes through the same triggers)
    store.conn.execute("DELETE FROM webhook_subscriptions WHERE id = 'wh-b'")
    assert backlog(store) == 5


def test_the_chain_outbox_is_counted_by_triggers_not_by_a_scan(tmp_path):
    conn = connect(tmp_path / "gw.db")
    migrate(conn)
    store = Store(conn)

    def n():
        return conn.execute("SELECT n FROM queue_counts WHERE name = 'chain_outbox'").fetchone()[0]
    with store.transaction():
        conn.executemany("INSERT INTO chain_outbox (stream_id, topic, type, data, created) "
                         "VALUES (?, 't', 'event.x', '{}', 1)", [(i,) for i in range(7)])
    assert n() == 7 == conn.execute("SELECT COUNT(*) FROM chain_outbox").fetchone()[0]
    with store.transaction():
        conn.execute("DELETE FROM chain_outbox WHERE id <= 3")
    assert n() == 4 == conn.execute("SELECT COUNT(*) FROM chain_outbox").fetchone()[0]


class Disk:
    """A scripted `shutil.disk_usage`."""

    def __init__(self, total, free):
        self.total, self.free = total, free

    def __call__(self, path):
        return SimpleNamespace(total=self.total, used=self.total - self.free, free=self.free)


def test_the_watch_raises_and_resolves_disk_webhook_and_chain_alerts(tmp_path):
    disk = Disk(32_000 * MB, 20_000 * MB)
    settings = CapacitySettings(free_percent=10, free_mb=1024, webhook_max_pending=3,
                                chain_alert_rows=4, interval_s=3600)
    assert disk_threshold(disk.total, settings) == 3_200 * MB      # 10 % beats 1 GiB
    assert disk_threshold(4_000 * MB, settings) == 1024 * MB       # ... and 1 GiB beats 10 %

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            fanout = Fanout(3)
            await db.write(install, fanout)
            await db.write(_create_tx, fanout, {"id": "wh-a", "url": "http://x/",
                                                "secret": SECRET, "events": ["event.*"],
                                                "description": None, "created": 1})
            watch = CapacityWatch(db, settings, chain_enabled=True, disk_usage=disk)
            alerts = AlertsService(db, lambda: 1000)

            async def check():
                items = await watch.check()
                await alerts.step()
                return [i["type"] for i in items], {
                    a["key"]: a["state"] for a in await db.read(list_alerts, "all")}

            assert await check() == ([], {})

            disk.free = 3_000 * MB                                  # below 3.2 GB
            types, state = await check()
            assert types == ["disk.low"] and state == {"disk.low": "open"}
            text = (await db.read(list_alerts))[0]["text"]
            assert "3000 MiB free of 32000 MiB" in text and "alert below 3200 MiB" in text
            assert (await check())[0] == []                         # no second item while low
            disk.free = 3_300 * MB                                  # above, but not by 10 %
            assert (await check())[0] == []
            disk.free = 3_600 * MB
            types, state = await check()
            assert types == ["disk.ok"] and state == {"disk.low": "resolved"}

            def events(store, seqs):
                with store.transaction():
                    for s in seqs:
                        store.insert_event("pad-1", "e1", s, "tag.placed", None, s, {})
            await db.write(events, range(1, 4))                     # 3: at the cap, no drop
            assert (await check())[0] == []
            await db.write(events, range(4, 6))                     # 2 dropped
            types, state = await check()
            assert types == ["webhook.dropping"] and state["webhook.dropping:wh-a"] == "open"
            alert = next(a for a in await db.read(list_alerts) if a["type"] == "webhook.dropping")
            assert "dropped (2 so far)" in alert["text"] and alert["severity"] == "warning"
            await db.write(events, range(6, 8))                     # still dropping: no repeat
            assert (await check())[0] == []
            snap = await watch.snapshot()
            assert snap["webhooks"]["subscriptions"] == [
                {"id": "wh-a", "pending": 3, "dropped": 4, "full": True}]

            def deliver_head(store):
                head = store.conn.execute("SELECT MIN(id) FROM webhook_deliveries WHERE "
                                          "status = 'pending'").fetchone()[0]
                _record_tx(store, head, "wh-a", True, 200, None, 1, 1)
            await db.write(deliver_head)                            # the receiver is back
            types, state = await check()
            assert types == ["webhook.ok"] and state["webhook.dropping:wh-a"] == "resolved"

            def outbox(store, n):
                with store.transaction():
                    store.conn.executemany(
                        "INSERT INTO chain_outbox (stream_id, topic, type, data, created) "
                        "VALUES (1, 't', 'x', '{}', 1)", [()] * n)
            await db.write(outbox, 5)                               # above 4
            types, state = await check()
            assert types == ["chain.backlog"] and state["chain.backlog"] == "open"
            assert (await watch.snapshot())["chain_outbox"]["rows"] == 5   # never dropped

            def publish_all(store):
                with store.transaction():
                    store.conn.execute("DELETE FROM chain_outbox")
            await db.write(publish_all)
            types, state = await check()
            assert types == ["chain.ok"] and state["chain.backlog"] == "resolved"

            # a restart with the disk still low does not raise a second alert
            disk.free = 1 * MB
            assert (await check())[0] == ["disk.low"]
            again = CapacityWatch(db, settings, chain_enabled=True, disk_usage=disk)
            assert await again.check() == []
            assert sum(a["type"] == "disk.low" and a["state"] == "open"
                       for a in await db.read(list_alerts, "all")) == 1

    asyncio.run(main())


def test_the_capacity_keys_of_the_config_file():
    cfg = parse({"database": {"disk_alert_free_percent": 5, "disk_alert_free_mb": 2048,
                              "capacity_check_s": 30},
                 "webhooks": {"max_pending": 1000},
                 "chain": {"outbox_alert_rows": 10_000}}).gateway
    assert (cfg.disk_alert_free_percent, cfg.disk_alert_free_mb, cfg.capacity_check_s,
            cfg.webhook_max_pending, cfg.chain_outbox_alert_rows) == (5.0, 2048.0, 30.0, 1000,
                                                                      10_000)
    with pytest.raises(ConfigError) as exc:
        parse({"database": {"disk_alert_free_percent": 150}, "webhooks": {"max_pending": 0}})
    assert "[database] disk_alert_free_percent: must be 0..100" in str(exc.value)
    assert "[webhooks] max_pending: must be" in str(exc.value)
