"""Ingest linger (fewer, larger commits at moderate load) on a real SQLite file, and the MQTT
command lane (replies and command publishes on a connection the event backlog cannot block)
against a real Mosquitto."""
import asyncio
import json
import secrets

import pytest

from gateway.devices.ingest import IngestWorker
from gateway.storage.db import Database
from gateway.transport.bus import HANDOFF_SLICE, MqttBus, PublishError
from gateway.transport.coap import TransportRouter
from hil.fakes import MqttProbe
from tests.support.e2e import until
from tests.support.envelopes import birth, evt, reply


async def _close(bus: MqttBus, task: asyncio.Task, probe: MqttProbe) -> None:
    """The end of a bus test: offline announced, the bus's task and the probe closed."""
    await bus.announce_offline()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    probe.close()


def test_linger_gathers_a_tiny_batch_until_enough_queue_and_a_reply_does_not_wait(tmp_path):
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
                # a reply does not wait for the linger (it goes to the command file's writer)
                await w.put(*reply("c-unknown", "done"))
                await until(lambda: w.batches == 2, "the reply applied")
                assert w._linger is not None and len(acks) == 1  # nor ends it: events gather
                await w.put(*evt(4))
                await w.put(*evt(5))  # 2 queued: the linger ends
                await until(lambda: len(acks) == 2, "the second ack")
                assert acks[1] == ("pe/1/pad-1/ctl", 5) and w.batches == 3

                await w.put(*evt(6))
                await until(lambda: w._linger is not None, "the worker to linger a third time")
                # a command's write does not wait for the lingering batch: the writer is idle
                w.expedite(1.0)
                assert await asyncio.wait_for(db.write_grouped(lambda store: 42), 30) == 42
                assert w._linger is not None and w.batches == 3
            finally:
                task.cancel()

    asyncio.run(main())


def test_command_lane_carries_replies_and_commands_while_the_event_connection_is_stalled(broker):
    dev = f"lane-{secrets.token_hex(3)}"
    got: list[tuple[str, bytes]] = []

    async def handler(topic, payload):
        got.append((topic, payload))

    async def main():
        probe = await asyncio.to_thread(MqttProbe, broker.port, (f"pe/1/{dev}/cmd",))
        bus = MqttBus("127.0.0.1", broker.port, handler, client_id=f"gw-{secrets.token_hex(3)}")
        task = asyncio.create_task(bus.run())
        try:
            assert await bus.wait_connected(30) and bus.lane is not None and bus.lane.connected
            # what a saturated gateway does: the ingest queue is full, the main socket unread
            bus._client.transport.pause_reading()
            await asyncio.to_thread(probe.publish, f"pe/1/{dev}/evt", b"E1")
            await asyncio.to_thread(probe.publish, f"pe/1/{dev}/reply", b"R1")
            await until(lambda: (f"pe/1/{dev}/reply", b"R1") in got, "the reply on the lane")
            assert (f"pe/1/{dev}/evt", b"E1") not in got  # still behind the stalled socket
            # a command goes out (and its PUBACK comes back) on the lane as well
            await asyncio.wait_for(bus.publish(f"pe/1/{dev}/cmd", b"C1"), 30)
            await until(lambda: probe.messages, "the command at the device")
            assert probe.messages[0][:2] == (f"pe/1/{dev}/cmd", b"C1")
            bus._client.transport.resume_reading()
            await until(lambda: (f"pe/1/{dev}/evt", b"E1") in got, "the event after the stall")
        finally:
            await _close(bus, task, probe)

    asyncio.run(main())


def test_a_session_from_before_the_lane_stops_receiving_replies(broker):
    """The persistent session of a gateway without the lane subscribed `reply` too: the main
    connection unsubscribes it, so each reply is handled once (on the lane)."""
    dev = f"lane-{secrets.token_hex(3)}"
    client_id = f"gw-{secrets.token_hex(3)}"
    got: list[tuple[str, bytes]] = []

    async def handler(topic, payload):
        got.append((topic, payload))

    async def run_bus(bus, body):
        task = asyncio.create_task(bus.run())
        try:
            assert await bus.wait_connected(30)
            await body()
        finally:
            await bus.announce_offline()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def main():
        probe = await asyncio.to_thread(MqttProbe, broker.port)
        try:
            async def nothing():
                pass
            old = MqttBus("127.0.0.1", broker.port, handler, client_id=client_id,
                          command_lane=False)
            await run_bus(old, nothing)  # leaves a persistent session subscribed to reply

            async def reply_then_event():
                for topic, payload in (("reply", b"R"), ("evt", b"E"), ("reply", b"R2")):
                    await asyncio.to_thread(probe.publish, f"pe/1/{dev}/{topic}", payload)
                # every copy of R is in: each connection delivers in publish order, the main
                # one R before E, the lane R before R2
                await until(lambda: (f"pe/1/{dev}/evt", b"E") in got, "the event")
                await until(lambda: (f"pe/1/{dev}/reply", b"R2") in got, "the last reply")
            await run_bus(MqttBus("127.0.0.1", broker.port, handler, client_id=client_id),
                          reply_then_event)
            assert got.count((f"pe/1/{dev}/reply", b"R")) == 1, got
        finally:
            probe.close()

    asyncio.run(main())


def test_batch_histogram_exposes_what_a_prometheus_histogram_does():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from gateway.integrations.metrics import LATENCY_BUCKETS, BatchHistogram

    starts = [10.0 - v for v in (0.0005, 0.001, 0.003, 0.003, 0.2, 1.0, 45.0)]  # 0.001: <= 0.001
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    h = BatchHistogram("x_seconds", "help", LATENCY_BUCKETS)
    ours.register(h)
    ref = Histogram("x_seconds", "help", buckets=LATENCY_BUCKETS, registry=theirs)
    h.observe_since(starts[:3], 10.0)
    h.observe_since(starts[3:], 10.0)
    for t in starts:
        ref.observe(10.0 - t)

    def lines(reg):
        return [ln for ln in generate_latest(reg).decode().splitlines()
                if "x_seconds_created" not in ln and not ln.startswith("x_seconds_sum")]

    def total(reg):
        return reg.get_sample_value("x_seconds_sum")
    assert lines(ours) == lines(theirs) and len(lines(ours)) == 2 + 15 + 1  # 14 bounds, +Inf
    assert total(ours) == pytest.approx(total(theirs)) and total(ours) > 46


def test_publish_many_delivers_in_order_and_fails_counted_when_not_connected(broker):
    """Issue 18, session 7: an ingest batch's acks as one `publish_many` on the main
    connection (futures settled by the PUBACKs, no task each)."""
    dev = f"many-{secrets.token_hex(3)}"

    async def handler(topic, payload):
        pass

    async def main():
        probe = await asyncio.to_thread(MqttProbe, broker.port, ("pe/1/+/ctl",))
        bus = MqttBus("127.0.0.1", broker.port, handler, client_id=f"gw-{secrets.token_hex(3)}")
        down = bus.publish_many([(f"pe/1/{dev}-0/ctl", b"early")])  # before it connects
        with pytest.raises(PublishError, match="not connected to the broker"):
            down[0].result()
        assert bus.publish_failures == 1
        task = asyncio.create_task(bus.run())
        try:
            assert await bus.wait_connected(30)
            items = [(f"pe/1/{dev}-{i}/ctl", f"ack{i}".encode()) for i in range(50)]
            futs = bus.publish_many(items)
            done, pending = await asyncio.wait(futs, timeout=30)
            assert not pending and all(f.result() is None for f in done)  # every PUBACK in
            await until(lambda: len([m for m in probe.messages if m[0].startswith(
                f"pe/1/{dev}-")]) == 50, "the 50 publishes at the subscriber")
            assert [(t, p) for t, p, _ in probe.messages if t.startswith(f"pe/1/{dev}-")] == items
            assert bus.publish_failures == 1
        finally:
            await _close(bus, task, probe)

    asyncio.run(main())


def test_router_publish_many_sends_coap_devices_to_their_edge_and_the_rest_in_one_call():
    edge_got: list[str] = []
    many_got: list[list[str]] = []

    class Edge:
        def handles(self, dev):
            return dev == "coap-1"

        async def publish(self, topic, payload, *, qos=1, retain=False):
            edge_got.append(topic)

    async def fallback(topic, payload, *, qos=1, retain=False):
        raise AssertionError("one call to fallback_many, not a publish each")

    def fallback_many(items):
        many_got.append([t for t, _ in items])
        futs = [asyncio.get_running_loop().create_future() for _ in items]
        for f in futs:
            f.set_result(None)
        return futs

    async def main():
        router = TransportRouter(fallback, Edge(), fallback_many=fallback_many)  # type: ignore[arg-type]
        futs = router.publish_many([("pe/1/mqtt-1/ctl", b"a"), ("pe/1/coap-1/ctl", b"b"),
                                    ("pe/1/mqtt-2/ctl", b"c")])
        assert len(futs) == 3
        await asyncio.wait(futs, timeout=5)
        assert all(f.result() is None for f in futs)
        assert many_got == [["pe/1/mqtt-1/ctl", "pe/1/mqtt-2/ctl"]] and edge_got == ["pe/1/coap-1/ctl"]

    asyncio.run(main())


def test_a_long_read_is_handed_over_in_slices_so_other_work_interleaves():
    """A saturated broker's socket read holds ~1,000 messages: the bus yields to the event loop
    every `HANDOFF_SLICE` of them, so an HTTP request (a command) does not wait for the whole
    hand-over (issue 18, session 7)."""
    order: list[str] = []

    async def handler(topic, payload):
        order.append(topic)

    async def other():
        order.append("other")

    async def main():
        bus = MqttBus("127.0.0.1", 1, handler, command_lane=False)
        batch = [(f"m{i}", b"") for i in range(3 * HANDOFF_SLICE)]
        waiting = asyncio.ensure_future(other())  # ready to run at the loop's next step
        await bus._hand_over(batch)
        await waiting
        assert [t for t in order if t != "other"] == [t for t, _ in batch]  # order kept
        assert order.index("other") == HANDOFF_SLICE  # it ran after the first slice

    asyncio.run(main())
