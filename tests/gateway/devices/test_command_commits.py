"""A command's path waits for two commits of the command file, not four (issue 18): its send
record and the device's `accepted` need no commit of their own (a crash before they commit
only means the command is sent again, which the device answers from its journal), so they
are held (`Database.defer`) and share the commit of the device's final answer. Order only,
on real SQLite files: `DEFER_S` is made long, so nothing here depends on timing."""
import asyncio
import contextlib
import json
import sqlite3

import pytest

from gateway.devices.commands import CommandService
from gateway.devices.ingest import IngestWorker
from gateway.storage import db as dbmod
from gateway.storage.db import Database
from gateway.storage.store import Store
from tests.support.e2e import until
from tests.support.envelopes import birth, reply


@pytest.fixture
def long_defer(monkeypatch):
    monkeypatch.setattr(dbmod, "DEFER_S", 60.0)


@contextlib.asynccontextmanager
async def _born(db, publish):
    """An IngestWorker (with its reply lane) running on `db`, pad-1 born."""
    w = IngestWorker(db, publish)
    task = asyncio.create_task(w.run())
    try:
        await w.put(*birth())
        await until(lambda: w.batches == 1, "the birth's batch")
        yield w
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _mark(store, key, value):
    with store.transaction():
        store.conn.execute("CREATE TABLE IF NOT EXISTS marks (k TEXT PRIMARY KEY, v TEXT)")
        store.conn.execute("INSERT INTO marks VALUES (?, ?)", (key, value))


def _marked(store, key):
    try:
        row = store.conn.execute("SELECT v FROM marks WHERE k = ?", (key,)).fetchone()
    except sqlite3.OperationalError:  # no such table yet
        return None
    return row and row[0]


def test_a_deferred_write_shares_the_next_commit_and_close_writes_what_is_held(
        tmp_path, long_defer):
    async def main():
        async with Database(tmp_path / "gw.db") as db:
            cdb = db.commands
            groups = cdb.groups
            held = cdb.defer(_mark, "a", "1")
            await asyncio.sleep(0.1)
            assert not held.done()  # no commit of its own yet
            assert await cdb.read(_marked, "a") is None
            await cdb.write_grouped(_mark, "b", "2")
            assert held.done()  # committed with the next write, first (the order is kept)
            assert cdb.groups == groups + 1 and await cdb.read(_marked, "a") == "1"
            cdb.defer(_mark, "c", "3")  # still held when the database closes
        async with Database(tmp_path / "gw.db") as db:
            assert await db.commands.read(_marked, "c") == "3"

    asyncio.run(main())


def test_a_deferred_write_commits_alone_after_its_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(dbmod, "DEFER_S", 0.01)

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            await asyncio.wait_for(db.commands.defer(_mark, "a", "1"), 30)
            assert await db.commands.read(_marked, "a") == "1"

    asyncio.run(main())


def test_the_send_record_and_accepted_share_the_final_answers_commit(tmp_path, long_defer):
    commits: list[list[str]] = []  # the command file's transactions, by the statuses in each
    sent: list[bytes] = []

    async def publish(topic, payload, *, qos=1, retain=False):
        sent.append(payload)

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            db.command_listeners.append(
                lambda items: commits.append([i.data["status"] for i in items]))
            async with _born(db, publish) as w:
                svc = CommandService(db, publish)
                cmd, created = await svc.submit("pad-1", "blink", {}, "k-1", 30, wait_send=False)
                assert created and sent, "published"
                await w.put(*reply(cmd["id"], "accepted"))
                await until(lambda: w.batches == 2, "the accepted reply taken by the lane")
                await w.put(*reply(cmd["id"], "done"))
                outcome = await svc.wait(cmd["id"], 30)
                assert outcome is not None and outcome["status"] == "done"
                # submit alone, then one commit for the send record, accepted and done
                assert commits == [["queued"], ["sent", "accepted", "done"]]
                stored = await db.commands.read(Store.get_command, cmd["id"])
                assert stored["status"] == "done" and stored["sends"] == 1
                assert await w.drained(30)

    asyncio.run(main())


def test_a_clean_stop_writes_the_held_writes_and_copies_their_stream_items(tmp_path, long_defer):
    async def publish(topic, payload, *, qos=1, retain=False):
        pass

    async def main():
        async with Database(tmp_path / "gw.db") as db, _born(db, publish):
            svc = CommandService(db, publish)
            await svc.submit("pad-1", "blink", {}, "k-1", 30, wait_send=False)
            assert db.commands._held, "the send record is held"

    asyncio.run(main())
    conn = sqlite3.connect(tmp_path / "gw.db")
    try:
        statuses = [json.loads(data)["status"] for (data,) in conn.execute(
            "SELECT data FROM stream WHERE kind = 'command' ORDER BY id")]
    finally:
        conn.close()
    assert statuses == ["queued", "sent"]  # in the main stream at the stop, not at next start
