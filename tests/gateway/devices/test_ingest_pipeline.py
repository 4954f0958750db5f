"""The ingest pipeline (issue 18): while the writer thread commits one batch, the event loop
decodes the next; the writer never holds two ingest batches; a reply that arrives meanwhile
does not wait for either: it goes to the reply lane (the database's command lane, ahead of the
next batch); acks only after the commit."""
import asyncio
import itertools
import json
import threading

from gateway.devices.ingest import IngestWorker, apply_decoded
from gateway.storage.db import Database
from gateway.storage.store import Store
from tests.support.e2e import until
from tests.support.envelopes import birth, evt, reply


def test_the_next_batch_is_decoded_while_the_writer_commits_and_a_reply_goes_first(tmp_path):
    """(The command half of issue 18 moved the reply from the front of the next batch to the
    reply lane, and session 11 to the command file: tests/gateway/devices/test_command_lanes.py
    checks that it commits while the event writer is held.)"""
    acks: list[tuple[str, int]] = []

    async def publish(topic, payload, *, qos=1, retain=False):
        body = json.loads(payload)["body"]
        if "upto" in body:
            acks.append((topic, body["upto"]))

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            applied: list[list[str]] = []  # topics of each batch the writer got, in order
            at_writer = peak = 0
            write_grouped = db.write_grouped

            async def counting(fn, decoded, *args):
                nonlocal at_writer, peak
                if fn is not apply_decoded:  # the replies' bookkeeping, the command stream
                    return await write_grouped(fn, decoded, *args)
                at_writer += 1
                peak = max(peak, at_writer)
                applied.append([topic for topic, _ in decoded])
                try:
                    return await write_grouped(fn, decoded, *args)
                finally:
                    at_writer -= 1

            db.write_grouped = counting
            gate = threading.Event()
            blocker = asyncio.ensure_future(db.write(lambda store: gate.wait(60)))
            w = IngestWorker(db, publish, batch_max=2048)
            task = asyncio.create_task(w.run())
            try:
                await w.put(*birth())
                await until(lambda: len(applied) == 1, "the birth's batch at the (busy) writer")
                for seq in (1, 2, 3):
                    await w.put(*evt(seq))
                await w.put(*reply("c-unknown", "done"))
                # taken off the queue and decoded while the writer is still busy
                await until(lambda: w.queue.empty() and not w.priority,
                            "the next batch decoded during the commit")
                assert len(applied) == 1 and acks == []  # not at the writer yet, nothing acked
                gate.set()
                await blocker
                assert await w.drained(60)
                assert applied[1] == ["pe/1/pad-1/evt"] * 3  # the reply took the lane
                # ... to the command file (refused there: no such command, or no birth yet),
                # counted in the gateway's file
                assert sum((await db.read(Store.rejections)).values()) == 1
                assert peak == 1  # one ingest batch at the writer at a time
                assert acks[-1] == ("pe/1/pad-1/ctl", 3)
                stored = await db.read(lambda store: [e["seq"] for e in store.list_events()])
                assert stored == [1, 2, 3]
            finally:
                gate.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_acks_go_out_through_publish_many_after_the_commit_without_a_task_each(tmp_path):
    """Issue 18, session 7: with `publish_many` (the gateway's router) a batch's acks are handed
    over in one call once the batch committed, as futures, not one task per ack; `drained`
    waits for their PUBACKs, and an ack that fails is counted (the device re-sends)."""
    calls: list[list[tuple[str, int]]] = []
    pending: list[asyncio.Future[None]] = []

    async def publish(topic, payload, *, qos=1, retain=False):  # births, rebirths, new epochs
        raise AssertionError(f"an ack took the task path: {topic}")

    def publish_many(items):
        calls.append([(topic, json.loads(payload)["body"]["upto"]) for topic, payload in items])
        futs = [asyncio.get_running_loop().create_future() for _ in items]
        pending.extend(futs)
        return futs

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            tasks_before = len(asyncio.all_tasks())
            w = IngestWorker(db, publish, publish_many=publish_many, batch_max=2048)
            task = asyncio.create_task(w.run())
            try:
                await w.put(*birth())
                await until(lambda: len(calls) == 1, "the birth's ack")
                assert calls[0] == [("pe/1/pad-1/ctl", 0)]
                pending[0].set_result(None)
                for seq in (1, 2, 3):
                    await w.put(*evt(seq))
                await until(lambda: len(calls) == 2, "the events' ack")
                assert calls[1] == [("pe/1/pad-1/ctl", 3)]  # coalesced: one per device
                stored = await db.read(lambda store: [e["seq"] for e in store.list_events()])
                assert stored == [1, 2, 3]  # committed before the ack was handed over
                # the worker's own task and its reply lane: no task per ack in flight
                assert len(asyncio.all_tasks()) - tasks_before <= 2
                assert not await w.drained(0.2)  # its PUBACK has not come
                pending[1].set_exception(ConnectionError("no PUBACK"))
                assert await w.drained(5)
                assert w.ack_failures == 1
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_the_loop_decodes_at_most_a_slice_per_step_and_keeps_the_order(tmp_path):
    """Issue 18, session 7: the next batch is decoded `slice_max` messages at a time with a
    yield to the event loop between two (an HTTP request does not wait for a whole batch's
    decode); the batch still holds every message, in order."""
    steps: list[tuple[int, int]] = []  # (messages decoded, loop ticks seen) per `_take`
    ticks = 0

    async def publish(topic, payload, *, qos=1, retain=False):
        pass

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            gate = threading.Event()
            blocker = asyncio.ensure_future(db.write(lambda store: gate.wait(60)))
            w = IngestWorker(db, publish, batch_max=2048, slice_max=2)
            take = w._take

            def spy(nxt, *most):
                before = len(nxt.raw)
                got = take(nxt, *most)
                if len(nxt.raw) > before:
                    steps.append((len(nxt.raw) - before, ticks))
                return got

            w._take = spy  # type: ignore[method-assign]
            task = asyncio.create_task(w.run())
            tick = asyncio.create_task(ticker())
            try:
                await w.put(*birth())
                await until(lambda: w._inflight is not None, "the birth's batch at the writer")
                steps.clear()
                for seq in range(1, 8):
                    await w.put(*evt(seq))
                await until(lambda: w.queue.empty(), "the events decoded")
                assert [n for n, _ in steps] == [2, 2, 2, 1]
                seen = [t for _, t in steps]
                assert all(b > a for a, b in itertools.pairwise(seen))  # the loop ran between two
                gate.set()
                await blocker
                assert await w.drained(60)
                stored = await db.read(lambda store: [e["seq"] for e in store.list_events()])
                assert stored == list(range(1, 8))
            finally:
                gate.set()
                tick.cancel()
                task.cancel()
                await asyncio.gather(task, tick, return_exceptions=True)

    asyncio.run(main())
