"""The CoAP edge: docs/protocol.md over CoAP (RFC 7252, UDP), next to the MQTT bus.

Devices that speak CoAP get the same protocol as MQTT devices, fed into the same code paths:
every inbound message goes through the handler the MQTT bus uses (`IngestWorker.put(topic,
payload)` with the MQTT topic `pe/1/{dev}/{channel}`), and everything the gateway publishes
for a device (`ctl` acks and rebirth requests from ingest, `cmd` from the command service)
goes through one publisher, `TransportRouter.publish`, which hands it to this edge when the
device is a CoAP device and to the MQTT bus otherwise. Store systems cannot tell the
transports apart. The mapping with examples: docs/protocol.md ("CoAP mapping"); memory
bounds and sizes: docs/coap.md.

Resources (`{dev}` is the device id; query `s` = the device's session, `hb` = its heartbeat
interval in seconds, both optional):

    POST /pe/1/{dev}/birth|evt    → 2.04, payload = the `ctl` message the ingest published for
                                    it (the `ack` after the commit, or a `rebirth` request):
                                    the acknowledgement rides the piggybacked response.
    POST /pe/1/{dev}/status|reply → 2.04 once queued for ingest (like a broker's PUBACK).
    GET  /pe/1/{dev}/cmd?hold=N   → long poll: 2.05 with the next `cmd` or `ctl` message for
                                    the device, or an empty 2.05 after N s (hold=0: just look).
                                    `again=1` (also on a repeated birth/evt): the device could
                                    not take the last message of that lane in; it goes again.
    POST /pe/1/{dev}/hb           → 2.04, liveness only.
    GET  /pe/1/{dev}/auth         → 2.05, a fresh challenge (changes nothing);
    POST /pe/1/{dev}/auth         → 2.04, a new session nonce for a signed, unused challenge
                                    (gateway/transport/coap_auth.py).
    A payload the protocol rejects → 4.00 (4.13 if oversized) with `reason: detail`; it is
    also counted at `GET /stats` (and logged, rate-limited) like an MQTT message would be. A
    path whose `{dev}` is not a device id → 4.04 `bad-device-id: ...` (counted as
    `coap.bad_device_id`, logged with the refusals). Overload → 5.03, Max-Age.

Liveness without a last will: any request refreshes a device; a device that has made no
request for `offline_after_missed` (3) heartbeat intervals is reported offline by feeding
the ingest the same `status offline {session}` message a broker would publish as the last
will (so the session rule against late wills applies unchanged). A device that shows up
again, or for the first time since a gateway restart, is reported `online` the same way.

Bounded memory: aiocoap remembers every request it received for EXCHANGE_LIFETIME (247 s)
with one loop timer each, and keeps the whole response (and the request, through
`response.request`) for duplicates: memory grows linearly with the request rate.
`bound_dedup()` replaces that table with an insertion-ordered one holding at most
`dedupe_max` entries of (deadline, encoded response bytes), expired lazily, no timers.
Evicting an entry early is safe here because the protocol above is idempotent (events are
deduplicated by seq, commands by id, replies by the command state machine): a late
duplicate is answered again, never applied twice. Concurrency is bounded too (requests in
processing, parked polls, devices, mailbox per device); beyond a bound the edge answers
5.03 with Max-Age so the device backs off instead of the gateway queueing without limit.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiocoap
import aiocoap.error
import aiocoap.resource
from aiocoap.blockwise import Block1Spool
from aiocoap.message import Direction
from aiocoap.numbers import TransportTuning
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from gateway.devices import protocol
from gateway.devices.protocol import ProtocolError
from gateway.transport.coap_auth import AUTH_CHANNEL, CoapAuth, Refused
from gateway.transport.coap_auth import OPTION as AUTH_OPTION

log = logging.getLogger("gateway.coap")

Handler = Callable[[str, bytes], Awaitable[None]]
Publisher = Callable[..., Awaitable[None]]

JSON = 50  # Content-Format application/json
DEVICE_CHANNELS = ("birth", "status", "evt", "reply")  # POSTed, fed to ingest
ACKED_CHANNELS = ("birth", "evt")                     # their response carries the ctl
# a message handed to a device that says, with `again=1` on its next request of that lane, that
# it could not take it (no heap for it at that moment) goes out again, at most this many times
# more (docs/protocol.md "Delivery of cmd and ctl messages")
AGAIN_MAX = 3


class PublishError(RuntimeError):
    """Same meaning as `gateway.transport.bus.PublishError`: the message did not reach the device."""


def _tuning(ack_timeout_s: float) -> TransportTuning:
    if ack_timeout_s == TransportTuning.ACK_TIMEOUT:
        return TransportTuning()
    return type("EdgeTuning", (TransportTuning,), {"ACK_TIMEOUT": ack_timeout_s})()


# -- bounded message-layer deduplication ------------------------------------------------------

class BoundedDedup:
    """aiocoap's duplicate detection (RFC 7252 4.5) with a size bound and no timers.

    Entries are kept in arrival order, so expiry and eviction both pop from the front.
    A response is stored encoded (a few hundred bytes) instead of as a Message that
    references its request."""

    def __init__(self, mman: Any, max_entries: int, lifetime_s: float) -> None:
        self.mman = mman
        self.max_entries = max(1, max_entries)
        self.lifetime_s = lifetime_s
        self.entries: collections.OrderedDict[tuple[Any, int], list[Any]] = \
            collections.OrderedDict()
        self.duplicates = 0
        self.evicted = 0
        self.expired = 0
        mman._recent_messages = {}  # the stock table stays empty (and timers are never made)
        mman._deduplicate_message = self.deduplicate
        mman._store_response_for_duplicates = self.store

    def _expire(self, now: float) -> None:
        entries = self.entries
        while entries:
            entry = next(iter(entries.values()))
            if entry[0] > now:
                break
            entries.popitem(last=False)
            self.expired += 1

    def deduplicate(self, message: aiocoap.Message) -> bool:
        now = time.monotonic()
        self._expire(now)
        key = (message.remote, message.mid)
        entry = self.entries.get(key)
        if entry is not None:
            self.duplicates += 1
            if message.mtype is Type.CON and entry[1] is not None:
                again = aiocoap.Message.decode(entry[1], message.remote)
                again.direction = Direction.OUTGOING
                self.mman._send_via_transport(again)
            return True
        self.entries[key] = [now + self.lifetime_s, None]
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
            self.evicted += 1
        return False

    def store(self, message: aiocoap.Message) -> None:
        entry = self.entries.get((message.remote, message.mid))
        if entry is not None:
            entry[1] = message.encode()

    def __len__(self) -> int:
        return len(self.entries)


def bound_dedup(context: aiocoap.Context, max_entries: int,
                lifetime_s: float) -> list[BoundedDedup]:
    """Install `BoundedDedup` on every message manager (UDP transport) of `context`."""
    out = []
    for ri in context.request_interfaces:
        mman = getattr(ri, "token_interface", None)
        if mman is not None and hasattr(mman, "_deduplicate_message"):
            out.append(BoundedDedup(mman, max_entries, lifetime_s))
    return out


# -- per-device state -------------------------------------------------------------------------

@dataclass
class _Entry:
    """One message waiting in a device's mailbox for its next poll."""
    topic: str
    payload: bytes
    key: str                       # command id, "ack" or "rebirth" (a newer one replaces it)
    deadline: int | None = None    # commands: never handed out past this (unix ms)
    taken: asyncio.Future[None] | None = None
    sent: int = 0                  # times handed out (again=1 re-queues it up to AGAIN_MAX more)


@dataclass
class _Waiter:
    """A request whose response waits for the `ctl` message the ingest publishes for it."""
    want: Callable[[dict[str, Any]], bool]
    future: asyncio.Future[bytes]


@dataclass
class CoapDevice:
    dev: str
    session: int | None = None
    hb_s: float = 30.0
    last_seen: float = 0.0                      # monotonic
    alive: bool = True
    offline_at: float | None = None
    mailbox: collections.deque[_Entry] = field(default_factory=collections.deque)
    poll: asyncio.Future[_Entry | None] | None = None
    waiters: list[_Waiter] = field(default_factory=list)
    last_ack: bytes | None = None
    # what went out last on each lane, until the device's next request of that lane shows it
    # took it (no `again=1`): the poll's message, and a rebirth/new_epoch that rode a response
    handed: _Entry | None = None
    rode: _Entry | None = None


def _query(request: aiocoap.Message) -> dict[str, str]:
    out = {}
    for item in request.opt.uri_query:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def _qint(q: dict[str, str], name: str, lo: int, hi: int, *, clamp: bool = True) -> int | None:
    """Query parameter `name` as an int in lo..hi: clamped into it, or (`clamp=False`) None
    if outside (absent or not an int: None)."""
    try:
        v = int(q[name])
    except (KeyError, ValueError):
        return None
    if not clamp and not lo <= v <= hi:
        return None
    return min(max(v, lo), hi)


def _status_payload(dev: str, online: bool, session: int, now: int) -> bytes:
    return json.dumps({"v": protocol.VERSION, "dev": dev, "type": "online" if online else "offline",
                       "t": now, "body": {"session": session}},
                      separators=(",", ":")).encode()


def _device_of(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) == 4 and f"{parts[0]}/{parts[1]}" == protocol.PREFIX:
        return parts[2]
    return None


# -- the edge ---------------------------------------------------------------------------------

class CoapEdge:
    """aiocoap server + device registry, mailboxes and liveness. `publish` is its outbound side."""

    def __init__(self, host: str, port: int, handler: Handler, *,
                 clock: Callable[[], int] | None = None,
                 heartbeat_s: float = 30.0, offline_after_missed: int = 3,
                 max_hold_s: float = 60.0, ack_wait_s: float = 3.0,
                 publish_timeout_s: float = 5.0, ack_timeout_s: float = 2.0,
                 dedupe_max: int = 8192, dedupe_lifetime_s: float = 247.0,
                 max_inflight: int = 256, max_polls: int = 4096, max_devices: int = 10_000,
                 mailbox_max: int = 16, forget_after_s: float = 600.0,
                 enqueue_timeout_s: float = 2.0, state_path: Path | None = None,
                 sweep_s: float = 0.5, keys_file: Path | None = None,
                 allow_unauthenticated: bool = False,
                 keys: dict[str, bytes] | None = None) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.heartbeat_s = heartbeat_s
        self.offline_after_missed = offline_after_missed
        self.max_hold_s = max_hold_s
        self.ack_wait_s = ack_wait_s
        self.publish_timeout_s = publish_timeout_s
        self.tuning = _tuning(ack_timeout_s)
        self.dedupe_max = dedupe_max
        self.dedupe_lifetime_s = dedupe_lifetime_s
        self.max_inflight = max_inflight
        self.max_polls = max_polls
        self.max_devices = max_devices
        self.mailbox_max = mailbox_max
        self.forget_after_s = forget_after_s
        self.enqueue_timeout_s = enqueue_timeout_s
        self.state_path = Path(state_path) if state_path else None
        self.sweep_s = sweep_s
        self.devices: dict[str, CoapDevice] = {}
        self.context: aiocoap.Context | None = None
        self.dedup: list[BoundedDedup] = []
        self.inflight = 0
        self.polls = 0
        self.counters: collections.Counter[str] = collections.Counter()
        self._sweeper: asyncio.Task[None] | None = None
        self._dirty = False
        self._saved: dict[str, Any] | None = None
        # who may speak for a device (gateway/transport/coap_auth.py); refuses everything without keys
        # unless unauthenticated devices are explicitly allowed
        self.auth = CoapAuth(keys_file, allow_unauthenticated, keys)
        # firmware chunks (docs/ota.md): POST /pe/1/{dev}/ota -> the chunk as the response's
        # payload; set by the app to the OTA service's `coap_answer` (None: no updates here)
        self.chunks: Callable[[str, bytes], bytes | None] | None = None

    # lifetime ---------------------------------------------------------------------------

    async def start(self) -> Self:
        _check_port_free(self.host, self.port)
        # aiocoap logs every duplicate and retransmission at INFO
        if logging.getLogger("coap-server").level == logging.NOTSET:
            logging.getLogger("coap-server").setLevel(logging.WARNING)
        site = aiocoap.resource.Site()
        site.add_resource([protocol.PREFIX.split("/")[0], protocol.PREFIX.split("/")[1]],
                          _PeResource(self))
        self.context = await aiocoap.Context.create_server_context(
            site, bind=(self.host, self.port), transports=["udp6"])
        self.dedup = bound_dedup(self.context, self.dedupe_max, self.dedupe_lifetime_s)
        if self.port == 0:
            self.port = self.context.request_interfaces[0].token_interface \
                .message_interface._local_port()
        self._load_state()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="coap-sweep")
        log.info("coap listening url=coap://%s:%d dedupe_max=%d heartbeat_s=%.0f keys=%d "
                 "allow_unauthenticated=%s", self.host, self.port, self.dedupe_max,
                 self.heartbeat_s, len(self.auth.keys), self.auth.allow_unauthenticated)
        return self

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for d in self.devices.values():
            if d.poll is not None and not d.poll.done():
                d.poll.set_result(None)  # parked polls get their (empty) answer now
        await asyncio.sleep(0.05)
        if self.context is not None:
            await self.context.shutdown()
            self.context = None
        self.auth.refusal_log.flush(force=True)
        await self._save_state(force=True)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # transport interface (outbound) -----------------------------------------------------

    def handles(self, dev: str) -> bool:
        """True if messages for `dev` go over CoAP (it has talked to us over CoAP)."""
        return dev in self.devices

    def mqtt_seen(self, topic: str) -> None:
        """The MQTT bus got a message on `topic`: a device that switched to MQTT is no longer
        routed here (cheap enough for every MQTT message)."""
        dev = _device_of(topic)
        if dev is not None and dev in self.devices:
            log.info("device now on mqtt device=%s", dev)
            self.forget(dev)

    def forget(self, dev: str) -> None:
        """`dev` talks MQTT now (call this from the MQTT path): stop routing it here."""
        d = self.devices.pop(dev, None)
        if d is not None:
            self._dirty = True
            for w in d.waiters:
                if not w.future.done():
                    w.future.set_result(b"")
            if d.poll is not None and not d.poll.done():
                d.poll.set_result(None)
            for entry in d.mailbox:
                if entry.taken is not None and not entry.taken.done():
                    entry.taken.set_exception(PublishError(f"{dev} left the CoAP edge"))
                    entry.taken.exception()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        """Deliver a gateway → device message (`ctl` or `cmd`) to a CoAP device."""
        dev = _device_of(topic)
        d = self.devices.get(dev or "")
        if d is None:
            raise PublishError(f"{dev} is not a CoAP device")
        channel = topic.rsplit("/", 1)[1]
        try:
            msg = json.loads(payload)
        except ValueError as exc:
            raise PublishError(f"not a JSON envelope: {exc}") from None
        if channel == "ctl":
            self._on_ctl(d, msg, payload)
            return
        if channel != "cmd":
            raise PublishError(f"no CoAP mapping for {topic}")
        entry = self._put_mail(d, _Entry(topic, payload, key=str(msg.get("id")),
                                         deadline=(msg.get("body") or {}).get("deadline")))
        entry.taken = asyncio.get_running_loop().create_future()
        self._hand_to_poll(d)
        try:
            await asyncio.wait_for(asyncio.shield(entry.taken), self.publish_timeout_s)
        except TimeoutError:
            self.counters["cmd_not_polled"] += 1
            raise PublishError(f"{dev} did not poll within {self.publish_timeout_s}s "
                               "(the command stays in its mailbox until its deadline)") from None

    def _on_ctl(self, d: CoapDevice, msg: dict[str, Any], payload: bytes) -> None:
        mtype = msg.get("type")
        body = msg.get("body") or {}
        if mtype == "ack":
            d.last_ack = payload
        consumed = False
        for w in list(d.waiters):
            if w.future.done():
                continue
            if mtype in ("rebirth", "new_epoch") or (mtype == "ack" and w.want(body)):
                w.future.set_result(payload)
                consumed = True
        key = "ack" if mtype == "ack" else str(mtype)
        if consumed:
            self.counters["ctl_piggybacked"] += 1
            if mtype != "ack":  # an ack is computed again for the request a device repeats
                d.rode = _Entry(protocol.topic(d.dev, "ctl"), payload, key=key, sent=1)
            return
        self._put_mail(d, _Entry(protocol.topic(d.dev, "ctl"), payload, key=key))
        self._hand_to_poll(d)

    def _again(self, d: CoapDevice, entry: _Entry | None, again: bool) -> None:
        """The device's next request of a lane: `again=1` means it could not take `entry`, the
        message that went out last on that lane (no heap for it): back to the front of the
        mailbox, unless a newer one of the same key is there or it went out AGAIN_MAX more
        times already. Without `again`, it was taken."""
        if entry is None or not again:
            return
        if any(e.key == entry.key for e in d.mailbox):
            return  # a newer copy (a resent command, a later ack) goes out instead
        if entry.sent > AGAIN_MAX or len(d.mailbox) >= self.mailbox_max:
            self.counters["again_given_up"] += 1
            return
        self.counters["again_" + entry.topic.rsplit("/", 1)[1]] += 1
        d.mailbox.appendleft(entry)

    def _put_mail(self, d: CoapDevice, entry: _Entry) -> _Entry:
        for i, old in enumerate(d.mailbox):
            if old.key == entry.key:  # a resend of the same command, a newer ack
                entry.taken = old.taken
                d.mailbox[i] = entry
                return entry
        if len(d.mailbox) >= self.mailbox_max:
            dropped = d.mailbox.popleft()  # commands are re-sent, acks are cumulative
            self.counters["mailbox_dropped"] += 1
            if dropped.taken is not None and not dropped.taken.done():
                dropped.taken.set_exception(PublishError("mailbox full"))
                dropped.taken.exception()  # retrieved: no "never retrieved" warning
        d.mailbox.append(entry)
        return entry

    def _take_mail(self, d: CoapDevice) -> _Entry | None:
        now = self.clock()
        while d.mailbox:
            entry = d.mailbox.popleft()
            if entry.deadline is not None and isinstance(entry.deadline, int) \
                    and now >= entry.deadline:
                self.counters["cmd_expired_in_mailbox"] += 1
                continue  # never send a command past its deadline
            if entry.taken is not None and not entry.taken.done():
                entry.taken.set_result(None)
            entry.sent += 1
            return entry
        return None

    def _hand_to_poll(self, d: CoapDevice) -> None:
        if d.poll is not None and not d.poll.done() and d.mailbox:
            entry = self._take_mail(d)
            if entry is not None:
                d.poll.set_result(entry)

    # inbound ----------------------------------------------------------------------------

    def _reply(self, code: Code, payload: bytes = b"", **opts: Any) -> aiocoap.Message:
        if payload and code.is_successful():
            opts.setdefault("content_format", JSON)
        self.counters[f"code_{code.dotted}"] += 1
        return aiocoap.Message(code=code, payload=payload, transport_tuning=self.tuning, **opts)

    def _busy(self, why: str, max_age: int = 2) -> aiocoap.Message:
        self.counters[f"busy_{why}"] += 1
        return self._reply(Code.SERVICE_UNAVAILABLE, why.encode(), max_age=max_age)

    async def _enqueue(self, topic: str, payload: bytes) -> bool:
        try:
            await asyncio.wait_for(self.handler(topic, payload), self.enqueue_timeout_s)
            return True
        except TimeoutError:
            return False

    def _device(self, dev: str, q: dict[str, str],
                channel: str) -> tuple[CoapDevice | None, bytes | None]:
        """Register/refresh a device; returns it and a `status online` to feed first, if any."""
        d = self.devices.get(dev)
        fresh = d is None
        if d is None:
            if len(self.devices) >= self.max_devices:
                return None, None
            d = self.devices[dev] = CoapDevice(dev, hb_s=self.heartbeat_s)
            self._dirty = True
        # a session is a protocol counter (docs/protocol.md, Limits): one out of range is
        # ignored, not clamped (a clamped one would not be the session of the birth)
        session = _qint(q, "s", 0, protocol.MAX_COUNTER, clamp=False)
        hb = _qint(q, "hb", 1, 3600)
        if hb is not None:
            d.hb_s = float(hb)
        if session is not None and session != d.session:
            d.session = session
            self._dirty = True
        d.last_seen = time.monotonic()
        revive = None
        if (fresh or not d.alive) and channel not in ("birth", "status") \
                and d.session is not None:
            revive = _status_payload(dev, True, d.session, self.clock())
        if not d.alive:
            log.info("coap device back device=%s session=%s", dev, d.session)
        d.alive = True
        d.offline_at = None
        return d, revive

    def authenticate(self, dev: str, channel: str,
                     request: aiocoap.Message) -> aiocoap.Message | None:
        """Check a request's Edge-Auth option before anything else sees it (every Block1
        block on its own). Returns the response for a refusal (4.01), a challenge (`GET auth`)
        or a new session (`POST auth` with a valid proof), None to go on."""
        if not protocol.is_device_id(dev):
            return None  # answered 4.04 by `handle`
        try:
            if channel == AUTH_CHANNEL and request.code == Code.GET:
                challenge = self.auth.challenge(dev)  # unsigned; changes no session
                self.counters["auth_challenges"] += 1
                return self._reply(Code.CONTENT, challenge, content_format=42, max_age=0)
            if channel == AUTH_CHANNEL and request.code != Code.POST:
                raise aiocoap.error.UnallowedMethod()
            b1, b2 = request.opt.block1, request.opt.block2
            opt = request.opt.get_option(AUTH_OPTION)
            nonce = self.auth.check(
                dev, channel, int(request.code), list(request.opt.uri_query),
                0 if b1 is None else _block_value(b1), 0 if b2 is None else _block_value(b2),
                request.payload, bytes(opt[0].value) if opt else None)
        except Refused as exc:
            self.counters["auth_refused"] += 1
            self.counters["auth_refused_" + exc.reason] += 1
            self.auth.note_refusal(dev, request.remote, exc.reason, str(exc))
            return self._reply(Code.UNAUTHORIZED, str(exc).encode())
        if channel != AUTH_CHANNEL:
            return None
        self.counters["auth_sessions"] += 1
        return self._reply(Code.CHANGED, nonce or b"", content_format=42)

    async def handle(self, dev: str, channel: str, request: aiocoap.Message) -> aiocoap.Message:
        self.counters["requests"] += 1
        if not protocol.is_device_id(dev):
            self.counters["bad_device_id"] += 1
            text = f"bad-device-id: {protocol.device_id_problem(dev)}"
            self.auth.note_refusal(ascii(dev[:40]), request.remote, "bad-device-id", text)
            return self._reply(Code.NOT_FOUND, text[:200].encode())
        q = _query(request)
        if channel == "cmd":
            if request.code != Code.GET:
                raise aiocoap.error.UnallowedMethod()
            return await self._poll(dev, q, request)
        if channel in protocol.REQUESTS and self.chunks is not None:  # "ota": a chunk request
            if request.code != Code.POST:
                raise aiocoap.error.UnallowedMethod()
            self.counters["ota_requests"] += 1
            answer = self.chunks(f"{protocol.PREFIX}/{dev}/{channel}", request.payload)
            if answer is None:
                return self._reply(Code.BAD_REQUEST, b"not a chunk request (docs/ota.md)")
            return self._reply(Code.CONTENT, answer)
        if channel not in DEVICE_CHANNELS and channel != "hb":
            return self._reply(Code.NOT_FOUND, f"no resource {channel!r}".encode())
        if request.code != Code.POST:
            raise aiocoap.error.UnallowedMethod()
        if self.inflight >= self.max_inflight:
            return self._busy("inflight")
        self.inflight += 1
        try:
            return await self._inbound(dev, channel, q, request)
        finally:
            self.inflight -= 1

    async def _inbound(self, dev: str, channel: str, q: dict[str, str],
                       request: aiocoap.Message) -> aiocoap.Message:
        if channel == "hb":
            d, revive = self._device(dev, q, channel)
            if d is None:
                return self._busy("devices")
            if revive is not None and not await self._enqueue(protocol.topic(dev, "status"),
                                                             revive):
                return self._busy("ingest")
            return self._reply(Code.CHANGED)
        topic = protocol.topic(dev, channel)  # type: ignore[arg-type]
        payload = request.payload
        try:
            msg = protocol.decode(topic, payload)
        except ProtocolError as exc:
            await self._enqueue(topic, payload)  # rejected and counted by ingest, as for MQTT
            code = Code.REQUEST_ENTITY_TOO_LARGE if exc.reason == "oversized" \
                else Code.BAD_REQUEST
            detail = f"{exc.reason}: {exc.detail}"[:200]
            return self._reply(code, detail.encode(), **(
                {"size1": protocol.MAX_PAYLOAD} if exc.reason == "oversized" else {}))
        d, revive = self._device(dev, q, channel)
        if d is None:
            return self._busy("devices")
        if isinstance(msg, protocol.Birth):
            if d.session != msg.session:
                d.session = msg.session
                self._dirty = True
        elif isinstance(msg, protocol.Status):
            d.session = msg.session
        waiter = None
        if channel in ACKED_CHANNELS:
            # the device repeats a birth or event whose response it could not take (again=1):
            # a rebirth/new_epoch that rode that response goes by the poll now
            rode, d.rode = d.rode, None
            self._again(d, rode, q.get("again") == "1")
            self._hand_to_poll(d)
            waiter = _Waiter(_wants(msg), asyncio.get_running_loop().create_future())
            d.waiters.append(waiter)
        try:
            if revive is not None and not await self._enqueue(protocol.topic(dev, "status"),
                                                             revive):
                return self._busy("ingest")
            if not await self._enqueue(topic, payload):
                return self._busy("ingest")
            if waiter is None:
                return self._reply(Code.CHANGED)
            try:
                ctl = await asyncio.wait_for(waiter.future, self.ack_wait_s)
            except TimeoutError:
                self.counters["ack_wait_timeout"] += 1
                ctl = d.last_ack or b""  # true but maybe not covering this one yet
            return self._reply(Code.CHANGED, ctl)
        finally:
            if waiter is not None:
                with contextlib.suppress(ValueError):
                    d.waiters.remove(waiter)

    async def _poll(self, dev: str, q: dict[str, str], request: aiocoap.Message
                    ) -> aiocoap.Message:
        d, revive = self._device(dev, q, "cmd")
        if d is None:
            return self._busy("devices")
        if revive is not None and not await self._enqueue(protocol.topic(dev, "status"), revive):
            return self._busy("ingest")
        # a held poll never outlasts the heartbeat: a polling device is seen every `hb_s`
        hold = min(float(_qint(q, "hold", 0, 3600) or 0), self.max_hold_s, d.hb_s)
        handed, d.handed = d.handed, None
        self._again(d, handed, q.get("again") == "1")  # the last poll's message, not taken?
        entry = self._take_mail(d)
        if entry is None and hold > 0:
            if d.poll is not None and not d.poll.done():
                d.poll.set_result(None)  # superseded: the device gave up on that one
            if self.polls >= self.max_polls:
                return self._busy("polls", max_age=int(min(hold, 10)) or 1)
            fut: asyncio.Future[_Entry | None] = asyncio.get_running_loop().create_future()
            d.poll = fut
            self.polls += 1
            try:
                entry = await asyncio.wait_for(fut, hold)
            except TimeoutError:
                entry = None
            finally:
                self.polls -= 1
                if d.poll is fut:
                    d.poll = None
        if entry is None:
            return self._reply(Code.CONTENT)
        self.counters["delivered_" + entry.topic.rsplit("/", 1)[1]] += 1
        d.handed = entry  # until the next poll says whether it was taken
        return self._reply(Code.CONTENT, entry.payload)

    # liveness ---------------------------------------------------------------------------

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.sweep_once()
                await self._save_state()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("coap sweep failed")

    async def sweep_once(self) -> None:
        self.auth.reload()  # a device provisioned or rotated meanwhile (one stat)
        self.auth.refusal_log.flush()  # how many refusals were held back, once due
        now = time.monotonic()
        for d in list(self.devices.values()):
            silent = now - d.last_seen
            if d.alive and silent > self.offline_after_missed * d.hb_s:
                d.alive = False
                d.offline_at = now
                self._dirty = True
                self.counters["offline"] += 1
                log.info("coap device silent device=%s session=%s silent_s=%.1f hb_s=%.0f",
                         d.dev, d.session, silent, d.hb_s)
                if d.session is not None:
                    await self._enqueue(protocol.topic(d.dev, "status"),
                                        _status_payload(d.dev, False, d.session, self.clock()))
            elif not d.alive and d.offline_at is not None \
                    and now - d.offline_at > self.forget_after_s:
                self.forget(d.dev)

    # registry persistence (so a gateway restart still notices devices that died meanwhile) --

    def _snapshot(self) -> dict[str, Any]:
        return {d.dev: {"session": d.session, "hb": d.hb_s}
                for d in self.devices.values() if d.alive and d.session is not None}

    def _load_state(self) -> None:
        if self.state_path is None:
            return
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("coap registry unreadable path=%s error=%r", self.state_path, exc)
            return
        now = time.monotonic()
        for dev, info in data.items() if isinstance(data, dict) else ():
            if protocol.is_device_id(dev) and isinstance(info, dict) \
                    and isinstance(info.get("session"), int):
                self.devices[dev] = CoapDevice(dev, session=info["session"],
                                               hb_s=float(info.get("hb") or self.heartbeat_s),
                                               last_seen=now)
        self._saved = self._snapshot()
        log.info("coap registry loaded devices=%d", len(self.devices))

    async def _save_state(self, force: bool = False) -> None:
        if self.state_path is None or not (self._dirty or force):
            return
        self._dirty = False
        snap = self._snapshot()
        if snap == self._saved and not force:
            return
        self._saved = snap
        await asyncio.to_thread(_write_atomic, self.state_path, json.dumps(snap))

    # observability ----------------------------------------------------------------------

    def auth_refusals(self) -> dict[str, int]:
        """4.01s by reason (for /metrics)."""
        pre = "auth_refused_"
        return {k[len(pre):]: v for k, v in self.counters.items() if k.startswith(pre)}

    def stats(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "devices": len(self.devices),
            "alive": sum(1 for d in self.devices.values() if d.alive),
            "inflight": self.inflight,
            "polls": self.polls,
            "mailbox": sum(len(d.mailbox) for d in self.devices.values()),
            "dedupe_entries": sum(len(x) for x in self.dedup),
            "dedupe_hits": sum(x.duplicates for x in self.dedup),
            "dedupe_evicted": sum(x.evicted for x in self.dedup),
            **dict(self.counters),
        }


def _wants(msg: protocol.Message) -> Callable[[dict[str, Any]], bool]:
    """Which `ack` answers this message: one that covers its seq (events) or its settled
    journal prefix in its epoch (births)."""
    if isinstance(msg, protocol.Event):
        seq = msg.seq
        return lambda body: isinstance(body.get("upto"), int) and body["upto"] >= seq
    assert isinstance(msg, protocol.Birth)
    epoch, settled = msg.epoch, msg.first - 1
    return lambda body: body.get("epoch") == epoch and isinstance(body.get("upto"), int) \
        and body["upto"] >= settled


def _block_value(b: Any) -> int:
    """A Block1/Block2 option as its uint value (RFC 7959: NUM | M | SZX)."""
    return (b.block_number << 4) | (8 if b.more else 0) | b.size_exponent


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_port_free(host: str, port: int) -> None:
    """aiocoap binds with SO_REUSEPORT: a second gateway on the same port would silently
    share the device traffic. Refuse to start instead."""
    if port == 0:
        return
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on coap://{host}:{port}: {exc.strerror} "
                                     "(is another gateway running?)") from exc


class _TooLarge(aiocoap.error.ConstructionRenderableError):
    code = Code.REQUEST_ENTITY_TOO_LARGE
    message = f"oversized: a message is at most {protocol.MAX_PAYLOAD} bytes"


class _CappedBlock1Spool(Block1Spool):
    """aiocoap assembles Block1 transfers of any length in memory: stop at twice the
    protocol's limit (the ingest still sees, rejects and counts what is just over it)."""

    def feed_and_take(self, req: aiocoap.Message) -> aiocoap.Message:
        b1 = req.opt.block1
        if b1 is not None and b1.block_number * b1.size > 2 * protocol.MAX_PAYLOAD:
            raise _TooLarge()
        return super().feed_and_take(req)


class _PeResource(aiocoap.resource.Resource, aiocoap.resource.PathCapable):
    """Everything under /pe/1/: the path left is `{dev}/{channel}`."""

    def __init__(self, edge: CoapEdge) -> None:
        super().__init__()
        self._block1 = _CappedBlock1Spool()
        self.edge = edge

    async def render_to_pipe(self, pipe: Any) -> None:
        # authenticate each request as received: before Block1 assembly and the Block2 cache
        path = pipe.request.opt.uri_path
        if len(path) == 2:
            answer = self.edge.authenticate(path[0], path[1], pipe.request)
            if answer is not None:
                pipe.add_response(answer, is_last=True)
                return
            # checked: drop it, or aiocoap's Block1 spool and Block2 cache (keyed by the
            # request's options) never match the next block, whose counter differs (4.08)
            pipe.request.opt.delete_option(AUTH_OPTION)
        await super().render_to_pipe(pipe)

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        path = request.opt.uri_path
        if len(path) != 2:
            return self.edge._reply(Code.NOT_FOUND, b"use /pe/1/{dev}/{channel}")
        return await self.edge.handle(path[0], path[1], request)


# -- routing ----------------------------------------------------------------------------------

class TransportRouter:
    """The gateway's one publisher: CoAP devices get their messages from the CoAP edge,
    everything else (and the gateway state topic) goes to the MQTT bus."""

    def __init__(self, fallback: Publisher, *edges: CoapEdge,
                 fallback_many: Callable[[list[tuple[str, bytes]]],
                                         list[asyncio.Future[None]]] | None = None) -> None:
        self.fallback = fallback
        self.fallback_many = fallback_many  # `MqttBus.publish_many`: no task per message
        self.edges = edges

    def publish_many(self, items: list[tuple[str, bytes]]) -> list[asyncio.Future[None]]:
        """QoS 1 publishes not awaited (an ingest batch's acks): one future per item, done
        when the transport has it. CoAP devices' items become tasks on their edge; the rest
        go to `fallback_many` in one call (or a task each without it)."""
        if not self.edges and self.fallback_many is not None:
            return self.fallback_many(items)
        out: list[asyncio.Future[None]] = []
        rest: list[tuple[str, bytes]] = []
        for topic, payload in items:
            dev = _device_of(topic)
            edge = None if dev is None else next((e for e in self.edges if e.handles(dev)), None)
            if edge is not None:
                out.append(asyncio.ensure_future(edge.publish(topic, payload, qos=1)))
            elif self.fallback_many is None:
                out.append(asyncio.ensure_future(self.fallback(topic, payload, qos=1)))
            else:
                rest.append((topic, payload))
        if rest:
            assert self.fallback_many is not None
            out += self.fallback_many(rest)
        return out

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        dev = _device_of(topic)
        if dev is not None:
            for edge in self.edges:
                if edge.handles(dev):
                    return await edge.publish(topic, payload, qos=qos, retain=retain)
        return await self.fallback(topic, payload, qos=qos, retain=retain)
