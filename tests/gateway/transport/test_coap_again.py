"""The CoAP edge sends a `cmd` or `ctl` message again when the device's next request of that
lane says `again=1`: it could not take the message in (no heap for it at that moment, issue
16: a `rebirth` or an `ack` lost at 96 KB). docs/protocol.md, "Delivery of cmd and ctl
messages". The edge in-process, an aiocoap client as the device."""
from __future__ import annotations

import asyncio
import json

import aiocoap
from aiocoap.numbers.codes import Code

from gateway.devices import protocol
from gateway.transport.coap import AGAIN_MAX, CoapEdge

DEV = "pad-a"


def _ctl(mtype: str, body: dict) -> bytes:
    return json.dumps({"v": 1, "dev": DEV, "type": mtype, "t": 1, "body": body}).encode()


REBIRTH = _ctl("rebirth", {})


async def _with_edge(scenario, handler=None) -> None:
    async def record(topic: str, payload: bytes) -> None:
        if handler is not None:
            await handler(topic, payload)

    edge = await CoapEdge("127.0.0.1", 0, record, allow_unauthenticated=True,
                          ack_wait_s=0.5).start()
    ctx = await aiocoap.Context.create_client_context()
    base = f"coap://127.0.0.1:{edge.port}/pe/1/{DEV}"

    async def req(code: Code, channel: str, query: str = "", payload: bytes = b"") -> bytes:
        msg = aiocoap.Message(code=code, uri=f"{base}/{channel}?s=1&hb=30{query}", payload=payload)
        resp = await ctx.request(msg).response
        assert resp.code.is_successful(), (resp.code, resp.payload)
        return resp.payload

    try:
        await scenario(edge, req)
    finally:
        await ctx.shutdown()
        await edge.stop()


def test_a_poll_with_again_gets_the_last_message_again_until_it_is_taken():
    got: list[bytes] = []

    async def scenario(edge: CoapEdge, req) -> None:
        await req(Code.POST, "hb")  # the device is known
        await edge.publish(protocol.topic(DEV, "ctl"), REBIRTH)
        got.append(await req(Code.GET, "cmd", "&hold=0"))
        got.append(await req(Code.GET, "cmd", "&hold=0&again=1"))  # not taken: again
        got.append(await req(Code.GET, "cmd", "&hold=0"))  # taken: nothing more
        got.append(await req(Code.GET, "cmd", "&hold=0&again=1"))  # nothing was handed

    asyncio.run(_with_edge(scenario))
    assert got == [REBIRTH, REBIRTH, b"", b""]


def test_a_message_never_taken_goes_out_again_at_most_again_max_times():
    """A message the device can never take (JSON too deep for its parser) is not sent forever."""
    got: list[bytes] = []
    counters: dict = {}

    async def scenario(edge: CoapEdge, req) -> None:
        await req(Code.POST, "hb")
        await edge.publish(protocol.topic(DEV, "ctl"), REBIRTH)
        got.append(await req(Code.GET, "cmd", "&hold=0"))
        for _ in range(AGAIN_MAX + 2):
            got.append(await req(Code.GET, "cmd", "&hold=0&again=1"))
        counters.update(edge.counters)

    asyncio.run(_with_edge(scenario))
    assert got == [REBIRTH] * (1 + AGAIN_MAX) + [b""] * 2
    assert counters["again_ctl"] == AGAIN_MAX and counters["again_given_up"] == 1


def test_again_yields_to_a_newer_copy_of_the_same_message():
    """A newer ack queued meanwhile goes out instead of the lost older one (acks are cumulative)."""
    got: list[bytes] = []
    ack1, ack2 = _ctl("ack", {"epoch": "e", "upto": 1, "now": 1}), _ctl("ack", {"epoch": "e", "upto": 2, "now": 2})

    async def scenario(edge: CoapEdge, req) -> None:
        await req(Code.POST, "hb")
        await edge.publish(protocol.topic(DEV, "ctl"), ack1)
        got.append(await req(Code.GET, "cmd", "&hold=0"))
        await edge.publish(protocol.topic(DEV, "ctl"), ack2)
        got.append(await req(Code.GET, "cmd", "&hold=0&again=1"))
        got.append(await req(Code.GET, "cmd", "&hold=0"))

    asyncio.run(_with_edge(scenario))
    assert got == [ack1, ack2, b""]


def test_a_rebirth_that_rode_an_event_response_goes_by_the_poll_when_the_event_is_repeated():
    """The ingest answers an event with a `rebirth` (no birth for the device): it rides the
    event's response. A device that could not take that response repeats the event with
    `again=1`; the repeat's response carries what the ingest answers then, and the rebirth it
    lost comes with the next poll."""
    got: list[bytes] = []
    evt = json.dumps({"v": 1, "dev": DEV, "type": "tag.placed", "seq": 1, "t": 1, "body": {}}).encode()
    edge_ref: list[CoapEdge] = []
    answers = iter([REBIRTH, _ctl("ack", {"epoch": "e", "upto": 1, "now": 1})])

    async def ingest(topic: str, payload: bytes) -> None:
        if topic.endswith("/evt"):
            await edge_ref[0].publish(protocol.topic(DEV, "ctl"), next(answers))

    async def scenario(edge: CoapEdge, req) -> None:
        edge_ref.append(edge)
        await req(Code.POST, "hb")
        got.append(await req(Code.POST, "evt", "", evt))  # the rebirth rides it (lost)
        got.append(await req(Code.POST, "evt", "&again=1", evt))
        got.append(await req(Code.GET, "cmd", "&hold=0"))
        got.append(await req(Code.GET, "cmd", "&hold=0"))

    asyncio.run(_with_edge(scenario, ingest))
    assert got[0] == REBIRTH and json.loads(got[1])["type"] == "ack"
    assert got[2:] == [REBIRTH, b""]


def test_without_again_a_message_is_handed_out_once_as_before():
    """A device that never says `again` (older firmware, `coap-client`): nothing changes."""
    got: list[bytes] = []

    async def scenario(edge: CoapEdge, req) -> None:
        await req(Code.POST, "hb")
        await edge.publish(protocol.topic(DEV, "ctl"), REBIRTH)
        got.append(await req(Code.GET, "cmd", "&hold=0"))
        got.append(await req(Code.GET, "cmd", "&hold=0"))

    asyncio.run(_with_edge(scenario))
    assert got == [REBIRTH, b""]
