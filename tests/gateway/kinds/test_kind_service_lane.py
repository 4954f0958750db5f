"""A kind service's change that sends devices commands (a tube step setting diverters, a locker
opening a door) is saved in the database's command lane: ahead of the event batches queued
before it (`StatefulService._save`, gateway/kinds/base.py), once its commands are committed in
the command file; a change without commands keeps its place in the queue. Order only, on real
SQLite files."""
import asyncio
import logging
import threading

from gateway.kinds.base import Batch, StatefulService
from gateway.storage.db import Database
from tests.support.e2e import until

NOW = 1_795_426_642_000


class _Service(StatefulService):
    stream_kind = "probe"
    log = logging.getLogger("test.kind_lane")
    step_label = "probe step"


def _hold(store, gate):
    assert gate.wait(30), "the test never opened the gate"


def _event_batch(store, n):
    with store.transaction():
        store.append_stream("event", {"n": n})


def _device(store):
    with store.transaction():
        store.upsert_device(id="dev-1", kind="tube-line", fw="1", caps=[], cfg="0", session=1,
                            epoch="e1", boot=1, reset=None, online=True, now=NOW)


def _committed_order(tmp_path, with_command: bool) -> list[str]:
    order: list[str] = []

    async def main():
        db = Database(tmp_path / f"gw-{with_command}.db",
                      on_commit=lambda items: order.extend(
                          f"{i.kind}:{i.data.get('n', '')}" for i in items))
        async with db:
            await db.write(_device)
            order.clear()
            svc = _Service(db, tick_s=1.0, clock=lambda: NOW)
            gate = threading.Event()
            held = asyncio.ensure_future(db.write(_hold, gate))
            await asyncio.sleep(0.05)
            events = asyncio.ensure_future(db.write_grouped(_event_batch, "batch"))
            batch = Batch()
            batch.items.append({"n": "change"})
            if with_command:
                batch.cmds.append(("dev-1", "set", {"to": "floor"}, "k-1", NOW + 60_000))
            save = asyncio.ensure_future(svc._save(lambda store: None, batch))
            if with_command:  # its commands commit first, in the command file (not held)
                await until(lambda: db._first, "the change waiting in the command lane")
            await asyncio.sleep(0)
            gate.set()
            await asyncio.gather(held, events, save)
        return order

    asyncio.run(main())
    return order


def test_a_change_with_device_commands_is_saved_ahead_of_queued_event_batches(tmp_path):
    order = _committed_order(tmp_path, with_command=True)
    assert order.index("probe:change") < order.index("event:batch"), order
    assert "command:" in order  # the command inserted with the change


def test_a_change_without_commands_keeps_its_place_behind_them(tmp_path):
    order = _committed_order(tmp_path, with_command=False)
    assert order == ["event:batch", "probe:change"]


def test_a_crash_before_the_commands_reach_their_file_loses_none_and_repeats_none(tmp_path):
    """Issue 18, session 11: the commands live in a file of their own. A kind's commands are
    committed with its state (`command_outbox`, one transaction) and moved to the command file
    after; a crash between the two (here: the process stops after the state's commit) leaves
    them in the outbox, and the next start moves them. The same action re-emitted after the
    restart finds its command by its key: nothing is inserted, nor sent, twice."""
    from gateway.kinds.base import save_tx
    from gateway.storage.store import Store, command_outbox

    path = tmp_path / "gw.db"
    cmd = ("dev-1", "set", {"to": "floor"}, "k-1", NOW + 60_000)

    def put_state(store):
        store.bump("probe_state")

    async def crashed():
        async with Database(path) as db:
            await db.write(_device)
            rows = await db.write_first(save_tx, put_state, "probe", [{"n": "change"}], [cmd], NOW)
            # (the process dies here: the move to the command file never runs)
            return rows, await db.commands.read(Store.pending_commands)

    async def restarted():
        async with Database(path) as db:
            pending = await db.commands.read(Store.pending_commands)
            state = (await db.read(Store.counters)).get("probe_state")
            svc = _Service(db, tick_s=1.0, clock=lambda: NOW)
            batch = Batch()
            batch.cmds.append(cmd)
            again = await svc._save(lambda store: None, batch)  # the re-emitted action
            after = await db.commands.read(Store.pending_commands)
        async with Database(path) as db:
            left = await db.read(command_outbox)
        return pending, state, again, after, left

    rows, before = asyncio.run(crashed())
    assert len(rows) == 1 and before == []  # committed with the state, not in the file yet
    pending, state, again, after, left = asyncio.run(restarted())
    assert [c["id"] for c in pending] == [rows[0][1]["id"]]  # moved by the start
    assert state == 1                                        # the state it came with
    assert again == [] and [c["id"] for c in after] == [rows[0][1]["id"]]  # not twice
    assert left == []                                        # the outbox emptied


def test_commands_the_command_file_cannot_take_now_are_moved_when_it_can(tmp_path):
    """A change is committed with its commands in the outbox; if the command file refuses them
    (a full disk), the change stands (its state is committed: the service must not act as if it
    were not), nothing is sent yet, and the database moves them as soon as the file takes
    writes again."""
    from gateway.storage.store import Store

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            await db.write(_device)
            svc = _Service(db, tick_s=1.0, clock=lambda: NOW)
            real = db.commands.write_grouped
            failures = []

            async def full_once(fn, *args):
                if not failures:
                    failures.append(fn.__name__)
                    raise OSError("database or disk is full")
                return await real(fn, *args)

            db.commands.write_grouped = full_once
            batch = Batch()
            batch.cmds.append(("dev-1", "set", {"to": "floor"}, "k-1", NOW + 60_000))
            sent = await svc._save(lambda store: store.bump("probe_state"), batch)
            state = (await db.read(Store.counters)).get("probe_state")
            await until(lambda: failures, "the refusal")
            pending = []
            for _ in range(100):  # `_follow` retries within a second or two
                pending = await db.commands.read(Store.pending_commands)
                if pending:
                    break
                await asyncio.sleep(0.05)
            return sent, state, failures, pending

    sent, state, failures, pending = asyncio.run(main())
    assert failures == ["take_commands"] and sent == [] and state == 1
    assert [c["idem_key"] for c in pending] == ["k-1"]
