"""The writer's command lane (`Database.write_first`): a command's write overtakes the event
batches queued before it, and ends a group of them that is being written (it joins that
transaction, which commits at once). Order only: no timing is asserted."""
import asyncio
import threading

from gateway.storage.db import Database


def _put(store, name, ran):
    """A grouped write that leaves a trace: its name in `ran` (writer thread) and a stream item
    (so `on_commit` shows which writes each transaction held)."""
    with store.transaction():
        ran.append(name)
        store.append_stream("event", {"n": name})
    return name


def _gated(store, name, ran, gate):
    """`_put`, but it holds the writer thread until `gate` is set."""
    assert gate.wait(30), "the test never opened the gate"
    return _put(store, name, ran)


def test_a_command_write_queued_behind_event_batches_is_committed_first(tmp_path):
    commits: list[list[str]] = []
    ran: list[str] = []

    async def main():
        db = Database(tmp_path / "gw.db",
                      on_commit=lambda items: commits.append([i.data["n"] for i in items]))
        async with db:
            gate = threading.Event()
            busy = asyncio.ensure_future(db.write(_gated, "busy", ran, gate))  # a plain write
            await asyncio.sleep(0.05)
            # two event batches queue up behind it, then a command's write
            batches = [asyncio.ensure_future(db.write_grouped(_put, f"batch{i}", ran))
                       for i in (1, 2)]
            command = asyncio.ensure_future(db.write_first(_put, "command", ran))
            await asyncio.sleep(0)
            gate.set()
            assert await asyncio.gather(busy, *batches, command) == [
                "busy", "batch1", "batch2", "command"]
        assert ran == ["busy", "command", "batch1", "batch2"]
        # the command's commit is its own, before the batches' shared one
        assert commits == [["busy"], ["command"], ["batch1", "batch2"]]
        assert db.first_writes == 1

    asyncio.run(main())


def test_a_command_write_ends_the_group_being_written_and_joins_its_commit(tmp_path):
    commits: list[list[str]] = []
    ran: list[str] = []

    async def main():
        db = Database(tmp_path / "gw.db",
                      on_commit=lambda items: commits.append([i.data["n"] for i in items]))
        async with db:
            gate = threading.Event()
            # an event batch being written (grouped), another queued behind it
            first = asyncio.ensure_future(db.write_grouped(_gated, "batch1", ran, gate))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(db.write_grouped(_put, "batch2", ran))
            command = asyncio.ensure_future(db.write_first(_put, "command", ran))
            await asyncio.sleep(0)
            gate.set()
            await asyncio.gather(first, second, command)
        assert ran == ["batch1", "command", "batch2"]
        # batch1 and the command share one commit; batch2 waits for the next transaction
        assert commits == [["batch1", "command"], ["batch2"]]
        assert db.preempted == 1

    asyncio.run(main())


def test_command_writes_fail_alone_and_plain_writes_keep_their_order(tmp_path):
    ran: list[str] = []

    def bad(store):
        with store.transaction():
            store.append_stream("event", {"n": "bad"})
            raise ValueError("bad command write")

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            gate = threading.Event()
            busy = asyncio.ensure_future(db.write(_gated, "busy", ran, gate))
            await asyncio.sleep(0.05)
            plain = [asyncio.ensure_future(db.write(_put, f"plain{i}", ran)) for i in (1, 2)]
            failing = asyncio.ensure_future(db.write_first(bad))
            good = asyncio.ensure_future(db.write_first(_put, "command", ran))
            await asyncio.sleep(0)
            gate.set()
            results = await asyncio.gather(busy, *plain, failing, good, return_exceptions=True)
            assert isinstance(results[3], ValueError) and results[4] == "command"
            items = await db.read(lambda store: [r.data["n"] for r in
                                                 store.stream_after(0)])
        assert ran == ["busy", "command", "plain1", "plain2"]
        assert items == ["busy", "command", "plain1", "plain2"]  # "bad" rolled back alone

    asyncio.run(main())
