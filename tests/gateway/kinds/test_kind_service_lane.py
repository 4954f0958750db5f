"""A kind service's change that sends devices commands (a tube step setting diverters, a locker
opening a door) is saved in the database's command lane: ahead of the event batches queued
before it (`StatefulService._save`, gateway/kinds/base.py); a change without commands keeps its
place in the queue. Order only, on a real SQLite file."""
import asyncio
import logging
import threading

from gateway.kinds.base import Batch, StatefulService
from gateway.storage.db import Database

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
