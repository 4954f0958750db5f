"""Commands never wait for the event writer (issue 18): they live in a file of their own with
its own writer (`Database.commands`), so a command's submit, its send record and a device's
reply commit while the gateway's writer is held by an event batch, and the caller waiting for
the outcome does not wait for the batch. Order only, on real SQLite files."""
import asyncio
import contextlib
import threading
import time

from gateway.devices.commands import CommandService
from gateway.devices.ingest import RELAX_GRACE_S, IngestWorker
from gateway.storage.db import Database
from gateway.storage.store import Store
from tests.support.e2e import until
from tests.support.envelopes import NOW, birth, evt, reply


def _hold(store, gate):
    assert gate.wait(30), "the test never opened the gate"


def _command(store):
    with store.transaction():
        store.insert_command(id="c-1", device="pad-1", name="blink", args={}, idem_key="k-1",
                             deadline=NOW + 60_000, now=NOW)


@contextlib.asynccontextmanager
async def _worker(db, publish):
    """An IngestWorker running on `db`, pad-1 born and its command c-1 stored."""
    w = IngestWorker(db, publish, batch_max=2048)
    task = asyncio.create_task(w.run())
    try:
        await w.put(*birth())
        await until(lambda: w.batches == 1, "the birth's batch")
        await db.commands.write(_command)
        yield w
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_reply_commits_in_the_command_file_while_the_event_writer_is_held(tmp_path):
    commits: list[tuple[str, object]] = []
    heard: list[str] = []

    def on_commit(items):
        commits.extend((i.kind, i.data.get("status") if i.kind == "command" else
                        i.data.get("seq")) for i in items if i.kind in ("command", "event"))

    async def publish(topic, payload, *, qos=1, retain=False):
        pass

    async def main():
        async with Database(tmp_path / "gw.db", on_commit=on_commit) as db, \
                _worker(db, publish) as w:
            db.command_listeners.append(lambda items: heard.extend(i.data["status"]
                                                                   for i in items))
            await until(lambda: ("command", "queued") in commits, "c-1 in the main stream")
            commits.clear()
            gate = threading.Event()
            held = asyncio.ensure_future(db.write(_hold, gate))  # the event writer is busy
            try:
                await asyncio.sleep(0.05)
                await w.put(*evt(1))
                await w.put(*evt(2))
                await until(lambda: db._queue, "the event batch to wait for the writer")
                await w.put(*reply("c-1", "done"))
                await until(lambda: heard == ["done"], "the reply committed")
                assert commits == []  # the event writer is still held
                assert (await db.commands.read(Store.get_command, "c-1"))["status"] == "done"
            finally:
                gate.set()
            await held
            # then the events, and the command's item copied into the main stream
            await until(lambda: len(commits) == 3, "the events and the command item")
            assert await w.drained(30)
        assert sorted(c for c in commits if c[0] == "event") == [("event", 1), ("event", 2)]
        assert ("command", "done") in commits

    asyncio.run(main())


def test_a_command_is_stored_and_published_while_the_event_writer_is_held(tmp_path):
    """`CommandService.submit` writes to the command file: its record commits, and the command
    is published, while the gateway's writer is held by an event batch (before the command
    file, its submit waited for the batch in progress and shared its commit)."""
    published: list[str] = []
    stored: list[str] = []

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            async def publish(topic, payload, *, qos=1, retain=False):
                if topic.endswith("/cmd"):  # published only once its record is committed
                    published.append(topic)
                    assert stored, "published before it was stored"

            w = IngestWorker(db, publish, batch_max=2048)
            commands = CommandService(db, publish, clock=lambda: NOW)
            db.command_listeners.append(lambda items: stored.extend(i.data["status"]
                                                                    for i in items))
            task = asyncio.create_task(w.run())
            gate = threading.Event()
            held = None
            try:
                await w.put(*birth())
                await until(lambda: w.batches == 1, "the birth's batch")
                held = asyncio.ensure_future(db.write(_hold, gate))
                await asyncio.sleep(0.05)
                await w.put(*evt(1))
                await until(lambda: db._queue, "the event batch to wait for the writer")
                cmd, created = await asyncio.wait_for(
                    commands.submit("pad-1", "blink", {}, "k-2", 60.0), 10)
                assert not held.done()  # the event writer was held all along
            finally:
                gate.set()
                if held is not None:
                    await held
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        assert created and published == ["pe/1/pad-1/cmd"]
        assert stored[:2] == ["queued", "sent"] and cmd["status"] == "sent"

    asyncio.run(main())


def test_an_event_alone_after_a_quiet_spell_does_not_linger(tmp_path):
    """The linger gathers a moderate load's events into fewer commits; a message with none in
    the `alone_s` before it has no companion coming, and a device waiting for the gateway's
    reaction to it (a tube eye) would only wait: it is written at once. No timing is
    asserted: a linger far longer than the test ends only by the rules."""
    acks: list[int] = []

    async def publish(topic, payload, *, qos=1, retain=False):
        acks.append(len(acks))

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            w = IngestWorker(db, publish, batch_max=2048, linger_s=3600, linger_below=2,
                             alone_s=0.2)
            task = asyncio.create_task(w.run())
            try:
                await w.put(*birth())  # the first message: nothing known before it, lingers
                await until(lambda: w._linger is not None, "the worker to linger")
                await w.put(*evt(1))
                await w.put(*evt(2))  # 2 queued: the linger ends, one batch of three
                await until(lambda: w.batches == 1, "the first batch")
                await asyncio.sleep(0.3)  # quiet for longer than alone_s
                await w.put(*evt(3))
                await until(lambda: w.batches == 2, "the lone event written without lingering")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def _notifying(holder: dict[str, CommandService]):
    """An `on_commit` that tells `holder["commands"]` of every committed command change."""
    def on_commit(items):
        for item in items:
            if item.kind == "command":
                holder["commands"].notify(item.data)
    return on_commit


async def _no_publish(topic, payload, *, qos=1, retain=False):
    pass


def test_a_caller_waiting_for_an_outcome_is_woken_by_its_commit_while_the_reader_is_busy(tmp_path):
    """`CommandService.wait` registers before it reads, and the read races the outcome: the
    reader thread (shared with the services' reads) being busy does not hold the caller once
    the reply has committed."""
    holder: dict[str, CommandService] = {}
    on_commit, publish = _notifying(holder), _no_publish

    async def main():
        async with Database(tmp_path / "gw.db", on_commit=on_commit) as db:
            w = IngestWorker(db, publish, batch_max=2048)
            commands = holder["commands"] = CommandService(db, publish, clock=lambda: NOW)
            task = asyncio.create_task(w.run())
            gate = threading.Event()
            try:
                await w.put(*birth())
                await until(lambda: w.batches == 1, "the birth's batch")
                cmd, _ = await commands.submit("pad-1", "blink", {}, "k-3", 60.0, wait_send=False)
                held = asyncio.ensure_future(db.read(_hold, gate))  # the reader is busy
                waiting = asyncio.ensure_future(commands.wait(cmd["id"], 60.0))
                for _ in range(20):
                    await asyncio.sleep(0)
                await w.put(*reply(cmd["id"], "done"))
                outcome = await asyncio.wait_for(asyncio.shield(waiting), 30)
                assert not held.done()  # woken while the reader was still busy
                assert outcome is not None and outcome["status"] == "done" and outcome["final"]
            finally:
                gate.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_a_tick_does_not_send_again_a_command_whose_send_record_has_not_committed(tmp_path):
    """The `sent` record is written after the publish and may lag (the command file's writer is
    busy): a tick that still sees the command
    unsent must not publish it a second time before `resend_s`."""
    published: list[str] = []
    gate = threading.Event()
    holder: dict[str, Database] = {}

    async def publish(topic, payload, *, qos=1, retain=False):
        if topic.endswith("/cmd"):
            published.append(topic)
            if len(published) == 1:  # the command file's writer gets busy after the publish
                holder["held"] = asyncio.ensure_future(holder["db"].commands.write(_hold, gate))
                await asyncio.sleep(0.05)

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            holder["db"] = db
            w = IngestWorker(db, publish, batch_max=2048)
            commands = CommandService(db, publish, clock=lambda: NOW, resend_s=60.0)
            task = asyncio.create_task(w.run())
            try:
                await w.put(*birth())
                await until(lambda: w.batches == 1, "the birth's batch")
                await commands.submit("pad-1", "blink", {}, "k-4", 60.0, wait_send=False)
                await until(lambda: "held" in holder, "the first publish")
                stale = await db.read(Store.pending_commands)  # what a tick reads: not sent yet
                assert [c["last_sent"] for c in stale] == [None]
                commands._spawn_send(stale[0])  # what the tick does with it
                for _ in range(50):
                    await asyncio.sleep(0)
                assert published == ["pe/1/pad-1/cmd"]  # once
            finally:
                gate.set()
                if "held" in holder:
                    await holder["held"]
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_small_batches_last_while_commands_wait_and_end_with_their_outcomes(tmp_path):
    """Issue 18, session 9: `expedite` keeps ingest batches small for up to 5 s after a submit;
    a lone command's outcome comes much sooner, and at saturation the small batches halved the
    background ingest (docs/benchmarks.md). They end `RELAX_GRACE_S` after no submitted command
    waits any more: the last outcome, not the first; a command past its deadline counts as
    settled."""
    holder: dict[str, CommandService] = {}
    on_commit, publish = _notifying(holder), _no_publish

    async def main():
        async with Database(tmp_path / "gw.db", on_commit=on_commit) as db:
            w = IngestWorker(db, publish, batch_max=2048, urgent_batch_max=64)
            commands = holder["commands"] = CommandService(db, publish, clock=lambda: NOW)
            commands.on_submit, commands.on_settled = w.expedite, w.relax
            task = asyncio.create_task(w.run())
            try:
                await w.put(*birth())
                await until(lambda: w.batches == 1, "the birth's batch")
                a, _ = await commands.submit("pad-1", "blink", {}, "k-a", 60.0, wait_send=False)
                b, _ = await commands.submit("pad-1", "blink", {}, "k-b", 60.0, wait_send=False)
                assert w._limit() == 64  # both wait
                await w.put(*reply(a["id"], "done"))
                await until(lambda: a["id"] not in commands._urgent, "a's outcome")
                assert w._limit() == 64  # b still waits
                await w.put(*reply(b["id"], "done"))
                t0 = time.monotonic()
                await until(lambda: w._limit() == 2048, "full-size batches once b is done",
                            timeout=1.0)  # (the expedite window is 5 s)
                assert time.monotonic() - t0 >= RELAX_GRACE_S * 0.9  # after the grace
                # a command past its deadline counts as settled
                c, _ = await commands.submit("pad-1", "blink", {}, "k-c", 60.0, wait_send=False)
                assert w._limit() == 64
                commands._urgent[c["id"]] = 0.0  # its deadline has passed
                commands._maybe_settled()
                assert not commands._urgent
                await until(lambda: w._limit() == 2048, "full-size batches", timeout=1.0)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
