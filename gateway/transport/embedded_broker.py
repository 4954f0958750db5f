"""The zero-install broker for `phygital demo`: amqtt inside the gateway's event loop.

Production uses Mosquitto (docs/operations.md). amqtt is enough for a demo store: QoS 1,
retained messages and last wills, on loopback, without persistence.
"""
from __future__ import annotations

import logging
import socket
from typing import Self

from amqtt.broker import Broker


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _SnapshotDict(dict):
    """amqtt 0.12 iterates its subscription table across `await`s (retained messages for a
    connecting client) while another client's SUBSCRIBE adds to it: "dictionary changed size
    during iteration" kills that client's connection (seen when the gateway's two connections
    and the devices connect at once). Iterating a snapshot is what the loop meant."""

    def __iter__(self):
        return iter(list(dict.keys(self)))

    def items(self):
        return list(dict.items(self))


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or free_port(host)
        self._broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        })
        table = getattr(self._broker, "_subscriptions", None)
        if type(table) is dict:  # amqtt internals: a later release may rename or fix this
            self._broker._subscriptions = _SnapshotDict(table)

    async def __aenter__(self) -> Self:
        # amqtt logs every connect at INFO; the demo's console is for the store, not the broker
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        await self._broker.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._broker.shutdown()
