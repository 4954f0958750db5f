"""A small MQTT 3.1.1 client on an asyncio Protocol: the part of MQTT the gateway uses.

Why not aiomqtt/paho on the hot path: paho reads each packet with several `recv` calls (one
byte for the header, one per length byte, then the body), builds an MQTTMessage, runs its
topic matcher and its logging helper, and aiomqtt then creates an asyncio task per message to
hand it over; every QoS 1 publish goes through locks, a message-info object and a pending-call
event. Measured on the standard machine, a subscriber doing nothing but counting reaches ~9k
messages/s with aiomqtt and ~35k/s with this module: the gateway's ingest cannot go faster
than its MQTT edge.

Measured again for issue 18 against gmqtt (maintained, asyncio-native, no task per message):
`bench/mqtt_clients.py` (each client drains the same backlog of 50,000 QoS 1 messages of
~160 B from one Mosquitto 2.0.11, in its own process, clients in turns, 3 rounds), 2026-12-07
01:19 UTC, 2-core AMD EPYC VM shared with other work (load average 8-10, CPU pressure 77-89 %):
this module 90,830 msgs/s median (85,908-92,163), 5.6 us of process CPU per message; gmqtt
0.8.0 28,383 (21,926-41,680), 11.6 us: **0.31 of this module**; aiomqtt 2.5.1 5,499
(4,589-6,879), 62.6 us: 0.06. gmqtt is not within 10 %, so the gateway keeps this module
(docs/benchmarks.md, "Issue 18").

Scope: CONNECT (clean session or persistent, will, keepalive), (UN)SUBSCRIBE, PUBLISH QoS 0/1 in
both directions (inbound QoS 1 is PUBACKed on receipt, as aiomqtt does: the application ack
is what means "persisted"), PINGREQ, DISCONNECT. No QoS 2, no MQTT 5. User/password and TLS
(an `ssl.SSLContext`) for a provisioned broker (tools/provision.py). Reconnection is the caller's job (`MqttBus.run`).

This module is the I/O; the packets are `gateway.transport.mqtt_codec` (shared with
tools/loadgen.py). An inbound PUBLISH over `max_packet` bytes is PUBACKed and dropped with a
warning (never buffered); bytes that are not MQTT close the connection.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.transport import mqtt_codec as codec

log = logging.getLogger("gateway.bus")


class MqttLiteError(ConnectionError):
    pass


class MqttLite(asyncio.Protocol):
    """One connection. Inbound messages are queued (`messages`); reading pauses while more
    than `max_queued` wait, which pushes back on the broker instead of growing memory."""

    def __init__(self, client_id: str, *, clean_session: bool = True, keepalive: int = 30,
                 will: tuple[str, bytes, int, bool] | None = None, max_queued: int = 10_000,
                 username: str | None = None, password: str | None = None,
                 ssl: Any = None, max_packet: int = codec.MAX_PACKET) -> None:
        self.client_id = client_id
        self.username, self.password = username, password  # tools/provision.py credentials
        self.ssl = ssl                                       # an SSLContext: TLS to the broker
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.will = will
        self.max_queued = max_queued
        self.transport: asyncio.Transport | None = None
        self.messages: deque[tuple[str, bytes]] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._paused = False
        self._decoder = codec.Decoder(max_packet)
        self._error: codec.MqttProtocolError | None = None
        self.dropped_oversized = 0
        self._out: list[bytes] | None = None  # written this loop pass, not yet sent
        self._pid = 0
        self._inflight: dict[int, asyncio.Future[None]] = {}
        self._connack: asyncio.Future[int] | None = None
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        self.closed: asyncio.Future[Exception | None] | None = None
        self._pinger: asyncio.Task[None] | None = None

    # -- connection ---------------------------------------------------------------------------

    async def connect(self, host: str, port: int, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self.closed = loop.create_future()
        await asyncio.wait_for(loop.create_connection(lambda: self, host, port, ssl=self.ssl),
                               timeout)
        self._write(codec.connect_packet(self.client_id, clean_session=self.clean_session,
                                         keepalive=self.keepalive, will=self.will,
                                         username=self.username, password=self.password))
        try:
            rc = await asyncio.wait_for(asyncio.shield(self._connack), timeout)
        except BaseException:
            self.abort()
            raise
        if rc != 0:
            self.abort()
            raise MqttLiteError(f"broker refused the connection (CONNACK rc={rc})")
        if self.keepalive:
            self._pinger = loop.create_task(self._ping())

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive / 2)
            self._write(codec.PINGREQ)

    async def subscribe(self, topics: list[tuple[str, int]], timeout: float = 10.0) -> bytes:
        pid = self._next_pid()
        packet = codec.subscribe_packet(pid, topics)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[pid] = fut
        self._write(packet)
        codes = await asyncio.wait_for(fut, timeout)
        if 0x80 in codes:
            raise MqttLiteError(f"subscription refused: {topics}")
        return codes

    async def unsubscribe(self, topics: list[str], timeout: float = 10.0) -> None:
        pid = self._next_pid()
        packet = codec.unsubscribe_packet(pid, topics)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[pid] = fut  # UNSUBACK carries the same packet id
        self._write(packet)
        await asyncio.wait_for(fut, timeout)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float = 5.0) -> None:
        """Send; for QoS 1 wait for the broker's PUBACK (raises on timeout or connection loss)."""
        if self.transport is None or self.transport.is_closing():
            raise MqttLiteError("not connected")
        if not qos:
            self._write(codec.publish_packet(topic, payload, 0, 0, retain))
            return
        pid = self._next_pid()
        packet = codec.publish_packet(topic, payload, qos, pid, retain)  # raises before waiting
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[pid] = fut
        self._write(packet)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise MqttLiteError(f"no PUBACK within {timeout} s") from None
        finally:
            self._inflight.pop(pid, None)

    def publish_many(self, items: list[tuple[str, bytes]], timeout: float = 5.0
                     ) -> list[asyncio.Future[None]]:
        """Send QoS 1 publishes without waiting: one future each, done at its PUBACK, failed
        with `MqttLiteError` when the connection is lost or after `timeout` seconds (one timer
        for all of them). For a batch's acks: no task, no `wait_for` and no timer per message.
        Raises `MqttLiteError` at once when not connected (nothing sent)."""
        if self.transport is None or self.transport.is_closing():
            raise MqttLiteError("not connected")
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[None]] = []
        pids: list[int] = []
        inflight = self._inflight
        for topic, payload in items:
            pid = self._next_pid()
            packet = codec.publish_packet(topic, payload, 1, pid, False)
            fut: asyncio.Future[None] = loop.create_future()
            inflight[pid] = fut
            self._write(packet)
            futs.append(fut)
            pids.append(pid)
        if futs:
            loop.call_later(timeout, self._expire, pids, futs, timeout)
        return futs

    def _expire(self, pids: list[int], futs: list[asyncio.Future[None]], timeout: float) -> None:
        inflight = self._inflight
        for pid, fut in zip(pids, futs):
            if inflight.get(pid) is fut:
                del inflight[pid]
            if not fut.done():
                fut.set_exception(MqttLiteError(f"no PUBACK within {timeout} s"))

    def disconnect(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.write(codec.DISCONNECT)
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- inbound queue ------------------------------------------------------------------------

    async def next_batch(self) -> list[tuple[str, bytes]]:
        """Wait for inbound messages; return all queued (raises when the connection is gone)."""
        while not self.messages:
            assert self.closed is not None
            if self.closed.done():
                raise MqttLiteError(f"connection lost: {self.closed.result()!r}")
            self._wakeup = asyncio.get_running_loop().create_future()
            waiters: set[asyncio.Future[Any]] = {self._wakeup, self.closed}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        batch = list(self.messages)
        self.messages.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return batch

    # -- protocol -----------------------------------------------------------------------------

    def _next_pid(self) -> int:
        while True:
            self._pid = self._pid % 65535 + 1
            if self._pid not in self._inflight and self._pid not in self._subacks:
                return self._pid

    def _write(self, data: bytes) -> None:
        """Queue `data`; everything written in one pass of the event loop goes out in one
        `send` (a batch's acks: one per device, each its own publish)."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._out is None:
            self._out = [data]
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        exc = exc or self._error
        err = exc or MqttLiteError("connection closed")
        if self._pinger is not None:
            self._pinger.cancel()
        for fut in [self._connack, *self._inflight.values(), *self._subacks.values()]:
            if fut is not None and not fut.done():
                fut.set_exception(MqttLiteError(f"connection lost: {err!r}"))
        self._inflight.clear()
        self._subacks.clear()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(exc)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            packets = self._decoder.feed(data)
        except codec.MqttProtocolError as exc:
            packets = exc.packets  # the good ones before the bad bytes are handled first
            self._error = exc
        got = False
        ack_ids: list[int] = []  # PUBACKs for this read go out in one write
        messages = self.messages
        for kind, flags, pid, topic, body in packets:
            if kind == 3:  # PUBLISH
                if flags & 0x06:  # QoS 1 (QoS 2 is not subscribed to)
                    ack_ids.append(pid)
                messages.append((topic.decode("utf-8", "replace"), body))
                got = True
            elif kind == 4:  # PUBACK
                fut = self._inflight.pop(pid, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif kind == 2:  # CONNACK
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(body[1])
            elif kind == 9 or kind == 11:  # SUBACK, UNSUBACK
                sub = self._subacks.pop(pid, None)
                if sub is not None and not sub.done():
                    sub.set_result(body)
            elif kind == codec.OVERSIZED:
                if flags & 0x06:  # acknowledged, or the broker delivers it again on each connect
                    ack_ids.append(pid)
                self.dropped_oversized += 1
                log.warning("mqtt message dropped: over %d bytes topic=%s client_id=%s (the device "
                            "must send smaller messages)", self._decoder.max_packet,
                            ascii(topic[:200].decode("utf-8", "replace")), self.client_id)
        self._wake(got, [codec.puback_packets(ack_ids)] if ack_ids else [])
        if self._error is not None and self.transport is not None:
            log.error("mqtt stream error, closing the connection client_id=%s: %s", self.client_id,
                      self._error)
            self.transport.abort()

    def _wake(self, got: bool, acks: list[bytes]) -> None:
        if acks:  # at once, not at the end of the loop pass: the broker sends at most
            # `max_inflight_messages` (Mosquitto: 20) unacknowledged messages, so these
            # PUBACKs pace the whole inbound flow
            self._out = [*(self._out or ()), *acks]
            self._flush()
        if not got:
            return
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if len(self.messages) >= self.max_queued and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()


Handler = Callable[[str, bytes], None]
