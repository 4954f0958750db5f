"""The demo's embedded amqtt broker (gateway/transport/embedded_broker.py)."""
from __future__ import annotations

import asyncio

import aiomqtt

from gateway.transport.embedded_broker import EmbeddedBroker


def test_subscription_table_can_change_while_a_connect_walks_it():
    # amqtt walks this table across awaits while other clients subscribe (a CI demo traceback)
    async def make():  # amqtt's Broker wants a running loop
        return EmbeddedBroker()._broker._subscriptions
    table = asyncio.run(make())
    table["a/#"] = []
    seen = []
    for topic in table:
        table[f"b/{len(seen)}"] = []  # a plain dict raises "changed size during iteration"
        seen.append(topic)
    for topic, _subs in table.items():  # noqa: PERF102 - amqtt walks .items(): it must survive the pops
        table.pop(topic)
    assert seen == ["a/#"] and table == {}


def test_many_clients_connect_and_subscribe_at_once_without_broker_errors():
    errors: list[dict] = []

    async def main() -> int:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        async with EmbeddedBroker() as broker:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="seed") as c:
                await c.publish("demo/retained", b"r", qos=1, retain=True)

            async def client(i: int) -> bool:
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"c{i}") as c:
                    await c.subscribe(f"demo/c{i}/#", qos=1)
                    await c.subscribe("demo/retained", qos=1)
                    async with asyncio.timeout(10):
                        async for msg in c.messages:
                            return msg.payload == b"r"
                return False
            return sum(await asyncio.gather(*(client(i) for i in range(40))))

    got = asyncio.run(main())
    assert got == 40 and not errors, errors[:3]
