"""Ingest linger (fewer, larger commits at moderate load) on a real SQLite file."""
import asyncio
import json
import time

from gateway.db import Database
from gateway.ingest import IngestWorker
from tests.test_gateway_core import birth, evt, reply


async def until(predicate, what, timeout=30.0):
    """Wait for a condition (generous timeout: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_linger_gathers_a_tiny_batch_until_enough_queue_and_a_reply_ends_it(tmp_path):
    acks = []

    async def publish(topic, payload, *, qos=1, retain=False):
        acks.append((topic, json.loads(payload)["body"]["upto"]))

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            # linger far longer than the test may take: only the rules may end it
            w = IngestWorker(db, publish, batch_max=2048, linger_s=3600, linger_below=2)
            task = asyncio.create_task(w.run())
            try:
                await w.put(*birth())
                await until(lambda: w._linger is not None, "the worker to linger")
                await w.put(*evt(1))  # 1 queued < linger_below: still lingering
                for _ in range(20):
                    await asyncio.sleep(0)
                assert w._linger is not None and w.batches == 0 and acks == []
                await w.put(*evt(2))  # 2 queued: the linger ends, one batch of three
                await until(lambda: w.batches == 1, "the first batch")
                await until(lambda: acks, "the ack")
                assert acks == [("pe/1/pad-1/ctl", 2)]

                await w.put(*evt(3))
                await until(lambda: w._linger is not None, "the worker to linger again")
                await w.put(*reply("c-unknown", "done"))  # a reply ends it at once
                await until(lambda: w.batches == 2, "the batch with the reply")
                await until(lambda: len(acks) == 2, "the second ack")
                assert acks[1] == ("pe/1/pad-1/ctl", 3)

                await w.put(*evt(4))
                await until(lambda: w._linger is not None, "the worker to linger a third time")
                w.expedite(1.0)  # a submitted command ends it too
                await until(lambda: w.batches == 3, "the batch after a submit")
            finally:
                task.cancel()

    asyncio.run(main())
