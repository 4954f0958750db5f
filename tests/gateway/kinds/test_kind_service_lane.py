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


def test_a_crash_between_the_commands_and_the_state_repeats_no_command(tmp_path):
    """Issue 18, session 11: the commands live in a file of their own, so a change is two
    commits: its commands first, then its state. A crash between them (here: the state's write
    fails) leaves the commands stored and the state as before; the same events applied again
    after the restart re-emit the same action with the same idempotency key, which finds its
    command: nothing is inserted, nor sent, twice. (The other order would keep a state that
    counts on a command never stored.)"""
    from gateway.storage.store import Store

    def crash(store):
        raise RuntimeError("the process died before the state committed")

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            await db.write(_device)
            svc = _Service(db, tick_s=1.0, clock=lambda: NOW)
            batch = Batch()
            batch.items.append({"n": "change"})
            batch.cmds.append(("dev-1", "set", {"to": "floor"}, "k-1", NOW + 60_000))
            try:
                await svc._save(crash, batch)
                raise AssertionError("the state's write did not fail")
            except RuntimeError as exc:
                assert "died" in str(exc)
            first = await db.commands.read(Store.find_command, "dev-1", "k-1")
            again = await svc._save(lambda store: None, batch)  # the re-emitted action
            pending = await db.commands.read(Store.pending_commands)
            return first, again, pending

    first, again, pending = asyncio.run(main())
    assert first is not None and first["status"] == "queued"  # committed before the state
    assert again == []                                       # found by its key: not again
    assert [c["id"] for c in pending] == [first["id"]]
