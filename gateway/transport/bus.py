"""The MQTT edge: a supervised MQTT connection (`gateway.transport.mqtt_lite`).

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
* `publish_many` sends QoS 1 publishes without awaiting them (an ingest batch's acks): one
  future each, settled by its PUBACK, one timeout timer for all of them, no task per message.
* Inbound messages are handed to the handler in arrival order (a long read in slices of
  `HANDOFF_SLICE`, with a yield to the event loop between two); while the handler (the ingest
  queue) is full, the client stops reading the socket, so the broker holds the backlog.
* Command lane: a second connection (client id `<client_id>.cmd`, persistent session too;
  its own user `lane_username`: a provisioned broker makes every client id its user name
  (`use_username_as_clientid`), so each connection needs a user, and the ACL gives each only
  what it does; with a main user but no lane user there is no lane, since the two connections
  would take the id from each other; an anonymous lab broker gets a lane) subscribes only to
  `pe/1/+/reply` and carries the
  `pe/1/{dev}/cmd` publishes. Saturated, the main connection's socket holds a backlog of
  events (and the PUBACKs behind them); replies and command PUBACKs on their own connection
  do not queue behind it. The main connection unsubscribes `reply` (a session from before
  the lane). The lane connects first; if it is down, commands go out on the main connection
  and replies wait in the lane's session until it is back. (`.` is not allowed in a device id,
  so no device's id is the lane's; what stops a device from connecting with the gateway's
  client ids is the broker binding ids to users, docs/security.md.)
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from gateway.devices import protocol
from gateway.transport.mqtt_lite import MqttLite, MqttLiteError

log = logging.getLogger("gateway.bus")

Handler = Callable[[str, bytes], Awaitable[None]]

REPLY_TOPIC = protocol.topic("+", "reply")
LANE_SUFFIX = ".cmd"
HANDOFF_SLICE = 128  # messages handed over between two yields to the loop (`_hand_over`)


class PublishError(RuntimeError):
    pass


class MqttBus:
    def __init__(self, host: str, port: int, handler: Handler, *, client_id: str = "pe-gateway",
                 keepalive: int = 30, publish_timeout: float = 5.0,
                 backoff_min: float = 0.25, backoff_max: float = 10.0,
                 clock: Callable[[], int] | None = None, username: str | None = None,
                 password: str | None = None, tls_ca: str | None = None,
                 command_lane: bool = True, subscriptions: Sequence[str] | None = None,
                 announce: bool = True, lane_username: str | None = None,
                 lane_password: str | None = None) -> None:
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
        self.announce = announce  # retained gateway state + will (the main connection only)
        if command_lane and username is not None and lane_username is None:
            # One user for both connections: a provisioned broker makes each client id its
            # user name, so the two would take the id from each other forever. No lane, then
            # (an old gateway.json without cmd_user after an upgrade): commands and replies
            # use the main connection, as before the lane existed.
            log.warning("mqtt broker user %r has no command-lane user (cmd_user): commands and "
                        "replies use the main connection", username)
            command_lane = False
        self.subscriptions = tuple(subscriptions if subscriptions is not None else
                                   (t for t in protocol.SUBSCRIPTIONS
                                    if not command_lane or t != REPLY_TOPIC))
        self.unsubscriptions = (REPLY_TOPIC,) if command_lane else ()
        self.lane = MqttBus(host, port, handler, client_id=client_id + LANE_SUFFIX,
                            keepalive=keepalive, publish_timeout=publish_timeout,
                            backoff_min=backoff_min, backoff_max=backoff_max, clock=clock,
                            username=lane_username or username,
                            password=lane_password if lane_username else password,
                            tls_ca=tls_ca, command_lane=False, subscriptions=(REPLY_TOPIC,), announce=False
                            ) if command_lane else None

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
        if self.lane is not None and self.lane.connected and topic.endswith("/cmd"):
            try:
                return await self.lane.publish(topic, payload, qos=qos, retain=retain)
            except PublishError:
                self.publish_failures += 1  # the gateway's figure (/stats) counts the lane's
                raise
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

    def publish_many(self, items: list[tuple[str, bytes]]) -> list[asyncio.Future[None]]:
        """QoS 1 publishes on the main connection, not awaited: one future per item, done at
        its PUBACK or failed with `PublishError` (not connected, connection lost, no PUBACK
        within `publish_timeout`), each failure counted in `publish_failures`. For the acks of
        an ingest batch: the caller decides what a failure means (the device re-sends)."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is not None and self._connected.is_set():
            try:
                futs = client.publish_many(items, self.publish_timeout)
            except (MqttLiteError, OSError) as exc:
                error = f"publish failed: {exc}"
            else:
                for fut in futs:
                    fut.add_done_callback(self._count_failure)
                return futs
        else:
            error = f"not connected to the broker at {self.host}:{self.port}"
        self.publish_failures += len(items)
        failed = []
        for topic, _ in items:
            fut = loop.create_future()
            fut.set_exception(PublishError(f"{error} ({topic})"))
            failed.append(fut)
        return failed

    def _count_failure(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:  # cancelled: shutting down
            self.publish_failures += 1

    async def run(self) -> None:
        """Connect, subscribe, deliver messages to the handler; reconnect on any loss."""
        lane = None
        if self.lane is not None:  # first, so that no reply of a command sent on main is lost
            lane = asyncio.create_task(self.lane.run(), name="mqtt-command-lane")
            if not await self.lane.wait_connected(self.publish_timeout):
                log.error("mqtt command lane not connected broker=%s:%d client_id=%s: "
                          "command replies wait until it is", self.host, self.port,
                          self.lane.client_id)
        try:
            await self._supervise()
        finally:
            if lane is not None:
                lane.cancel()
                await asyncio.gather(lane, return_exceptions=True)

    async def _supervise(self) -> None:
        backoff = self.backoff_min
        while not self._stopping:
            will = (protocol.GATEWAY_STATE_TOPIC, protocol.encode_gateway_state(False, None), 1,
                    True) if self.announce else None
            client = MqttLite(self.client_id, clean_session=False, keepalive=self.keepalive,
                              will=will, **self.auth)  # type: ignore[arg-type]
            try:
                await client.connect(self.host, self.port, timeout=self.publish_timeout)
                await client.subscribe([(t, 1) for t in self.subscriptions])
                if self.unsubscriptions:
                    await client.unsubscribe(list(self.unsubscriptions))
                self._client = client
                if self.announce:
                    await client.publish(protocol.GATEWAY_STATE_TOPIC,
                                         protocol.encode_gateway_state(True, self._now()),
                                         qos=1, retain=True, timeout=self.publish_timeout)
                self._connected.set()
                self.connects += 1
                backoff = self.backoff_min
                log.info("mqtt connected broker=%s:%d client_id=%s connects=%d", self.host,
                         self.port, self.client_id, self.connects)
                while True:
                    await self._hand_over(await client.next_batch())
            except (TimeoutError, MqttLiteError, OSError) as exc:
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

    async def _hand_over(self, batch: list[tuple[str, bytes]]) -> None:
        """Give `batch` to the handler in order, yielding to the event loop every
        `HANDOFF_SLICE` messages: a read of a saturated broker holds ~1,000 of them, and an
        HTTP request (a command) that came meanwhile waits for this step to end."""
        for n, (topic, payload) in enumerate(batch, 1):
            await self.handler(topic, payload)
            if not n % HANDOFF_SLICE:
                await asyncio.sleep(0)

    async def announce_offline(self) -> None:
        """Publish the retained `offline` state (a clean disconnect does not fire the will)."""
        self._stopping = True
        if self.lane is not None:
            self.lane._stopping = True  # its connection ends cleanly with `run`
        try:
            await self.publish(protocol.GATEWAY_STATE_TOPIC,
                               protocol.encode_gateway_state(False, self._now()),
                               qos=1, retain=True)
        except PublishError as exc:
            log.warning("could not announce offline state: %s", exc)
