"""The MQTT edge: a supervised MQTT connection (`gateway.mqtt_lite`).

* Reconnects forever with exponential backoff (0.25 s doubling to 10 s, with jitter).
* Persistent session (clean_session=False, fixed client id): while the gateway restarts, the
  broker queues QoS 1 device messages for it. The client acknowledges a message (PUBACK) when
  it reads it, before our handler runs, so an MQTT ack is not persistence: the device keeps
  each event until the gateway's application-level ack, published only after the commit.
* Subscribes `pe/1/+/{birth,status,evt,reply}` at QoS 1; publishes `pe/1/gateway/state`
  retained `online`, with a retained `offline` last will (and publishes `offline` itself on a
  clean stop, when the broker would not fire the will).
* `publish` waits for the broker's PUBACK (QoS 1) and raises `PublishError` when not
  connected, on a broker error or on timeout: a publish is never silently lost.
* Inbound messages are handed to the handler in arrival order; while the handler (the ingest
  queue) is full, the client stops reading the socket, so the broker holds the backlog.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from .mqtt_lite import MqttLite, MqttLiteError

from . import protocol

log = logging.getLogger("gateway.bus")

Handler = Callable[[str, bytes], Awaitable[None]]


class PublishError(RuntimeError):
    pass


class MqttBus:
    def __init__(self, host: str, port: int, handler: Handler, *, client_id: str = "pe-gateway",
                 keepalive: int = 30, publish_timeout: float = 5.0,
                 backoff_min: float = 0.25, backoff_max: float = 10.0,
                 clock: Callable[[], int] | None = None, username: str | None = None,
                 password: str | None = None, tls_ca: str | None = None) -> None:
        self.host = host
        # broker credentials and TLS (tools/provision.py writes them to gateway.json)
        self.auth: dict[str, object] = {"username": username, "password": password}
        if tls_ca:
            import ssl
            self.auth["ssl"] = ssl.create_default_context(cafile=tls_ca)
        self.port = port
        self.handler = handler
        self.client_id = client_id
        self.keepalive = keepalive
        self.publish_timeout = publish_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.clock = clock
        self.connects = 0
        self.publish_failures = 0
        self._client: MqttLite | None = None
        self._connected = asyncio.Event()
        self._stopping = False

    @property
    def connected(self) -> bool:
        return self._client is not None and self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def _now(self) -> int | None:
        return self.clock() if self.clock else None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        client = self._client
        if client is None or not self._connected.is_set():
            self.publish_failures += 1
            raise PublishError(f"not connected to the broker at {self.host}:{self.port}")
        try:
            await client.publish(topic, payload, qos=qos, retain=retain,
                                 timeout=self.publish_timeout)
        except (MqttLiteError, OSError) as exc:
            self.publish_failures += 1
            raise PublishError(f"publish to {topic} failed: {exc}") from exc

    async def run(self) -> None:
        """Connect, subscribe, deliver messages to the handler; reconnect on any loss."""
        backoff = self.backoff_min
        while not self._stopping:
            will = (protocol.GATEWAY_STATE_TOPIC, protocol.encode_gateway_state(False, None), 1,
                    True)
            client = MqttLite(self.client_id, clean_session=False, keepalive=self.keepalive,
                              will=will, **self.auth)  # type: ignore[arg-type]
            try:
                await client.connect(self.host, self.port, timeout=self.publish_timeout)
                await client.subscribe([(t, 1) for t in protocol.SUBSCRIPTIONS])
                self._client = client
                await client.publish(protocol.GATEWAY_STATE_TOPIC,
                                     protocol.encode_gateway_state(True, self._now()),
                                     qos=1, retain=True, timeout=self.publish_timeout)
                self._connected.set()
                self.connects += 1
                backoff = self.backoff_min
                log.info("mqtt connected broker=%s:%d client_id=%s connects=%d", self.host,
                         self.port, self.client_id, self.connects)
                while True:
                    for topic, payload in await client.next_batch():
                        await self.handler(topic, payload)
            except (MqttLiteError, OSError, asyncio.TimeoutError) as exc:
                if self._stopping:
                    break
                log.warning("mqtt connection lost broker=%s:%d error=%r retry_in=%.2fs",
                            self.host, self.port, exc, backoff)
            except Exception:  # a bug in a handler must not end the supervisor
                log.exception("mqtt session failed broker=%s:%d retry_in=%.2fs", self.host,
                              self.port, backoff)
            finally:
                self._connected.clear()
                self._client = None
                if self._stopping:
                    client.disconnect()  # clean: no will (announce_offline published offline)
                else:
                    client.abort()       # the broker fires the will
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.backoff_max)

    async def announce_offline(self) -> None:
        """Publish the retained `offline` state (a clean disconnect does not fire the will)."""
        self._stopping = True
        try:
            await self.publish(protocol.GATEWAY_STATE_TOPIC,
                               protocol.encode_gateway_state(False, self._now()),
                               qos=1, retain=True)
        except PublishError as exc:
            log.warning("could not announce offline state: %s", exc)
