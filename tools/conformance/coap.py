"""The conformance kit's side of the wire over CoAP: the gateway role for one device, built on
the gateway's own CoAP edge (`gateway.transport.coap.CoapEdge`: aiocoap server, the bounded message-layer
dedup, the long-poll mailbox, liveness) and its authentication (`gateway.transport.coap_auth.CoapAuth`,
the challenge and the per-request HMAC) with a throwaway key the kit makes for the run.

Where the gateway would persist (its ingest handler) the kit records instead: every message the
device POSTs, raw and in order, as `Msg`s on the same channels as over MQTT (birth, status,
evt, reply), plus `auth` (each `GET`/`POST auth` and every 4.01) and the time of every request
(for the heartbeat). A birth or event the device repeats with `again=1` (it could not take the
response in: docs/protocol.md "Delivery of cmd and ctl messages") is recorded with
`meta["again"]`; the edge sends the message it asks for again, as the gateway does.
Gateway-to-device traffic bypasses the edge's filters on purpose: the kit puts commands into
the mailbox as they are (a command past its deadline, malformed bytes), so the device's own
behaviour is what gets checked. The edge runs on its own event loop in a
thread; the clauses call in from theirs, as with `MqttGatewaySide`."""
from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import json
import secrets
import threading
import time

import aiocoap

from gateway.devices import protocol
from gateway.transport.coap import CoapEdge, _Entry
from gateway.transport.coap_auth import AUTH_CHANNEL
from tools.conformance.link import REDELIVER_S, GatewaySide, Msg, now_ms

# a kit key: this marker, then 16 random bytes. The firmware takes its test hook next to a CoAP
# key only if the key starts with it (firmware/edge/config.py); tools/provision.py makes keys of
# 32 random bytes, which start with it with probability 2^-128
KIT_KEY_MARKER = b"conformance-kit\0"
REQUESTS_MAX = 100_000  # request times kept for the heartbeat clause (a run makes a few hundred)

# the device request being handled (set by KitEdge.handle): tells the device's own messages from
# the ones the edge makes up (an `online` on a device's return, an `offline` after its silence);
# and whether it is a repeat with `again=1` (its response could not be taken by the device)
_request: contextvars.ContextVar[tuple[str, bytes, bool] | None] = contextvars.ContextVar(
    "conformance_request", default=None)


def kit_key() -> bytes:
    return KIT_KEY_MARKER + secrets.token_bytes(32 - len(KIT_KEY_MARKER))


class KitEdge(CoapEdge):
    """`CoapEdge` with the kit's hooks: requests are timed, auth exchanges recorded."""

    def __init__(self, side: CoapGatewaySide, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.side = side

    def authenticate(self, dev: str, channel: str, request: aiocoap.Message):
        answer = super().authenticate(dev, channel, request)
        # (a checked Edge-Auth option is dropped by gateway.transport.coap before the Block2 cache)
        if dev == self.side.dev:
            self.side.note_request(channel, request)
            if channel == AUTH_CHANNEL or answer is not None:
                code = answer.code if answer is not None else None
                self.side.record("auth", request.payload, None, meta={
                    "method": str(request.code), "path_channel": channel,
                    "code": code.dotted if code is not None else "-",
                    "detail": answer.payload[:120].decode(errors="replace") if answer else ""})
        return answer

    async def handle(self, dev: str, channel: str, request: aiocoap.Message):
        token = _request.set((channel, request.payload, "again=1" in request.opt.uri_query))
        try:
            return await super().handle(dev, channel, request)
        finally:
            _request.reset(token)


class CoapGatewaySide(GatewaySide):
    """Plays the gateway for one device over CoAP with the same interface as
    `MqttGatewaySide`: `msgs`, `epoch`, `acked`, `seen`, `pending`, `ack`, `publish`,
    `command`, `mark`, `find`, `wait`. Plus `requests` (time, channel, hb, s) and `key`."""

    transport = "coap"

    def __init__(self, host: str, port: int, dev: str, heartbeat_s: float = 5.0) -> None:
        super().__init__(dev)
        self.host = host
        self.port = port  # 0: a free one, known after start()
        self.key = kit_key()
        self.heartbeat_s = heartbeat_s
        self.requests: collections.deque[tuple[float, str, int | None, int | None]] = \
            collections.deque(maxlen=REQUESTS_MAX)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.edge: KitEdge | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._keys = itertools.count()

    # --- lifetime -----------------------------------------------------------------------
    def start(self, timeout: float = 10) -> None:
        self._thread = threading.Thread(target=self._run, name="conformance-coap", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"could not serve CoAP on {self.host}:{self.port}: "
                               f"{self._error!r} (pick another --coap-port)")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # ack_wait_s: an event's response carries an ack only if the kit acked it already, and
        # the kit acks when a clause says so (as over MQTT); so do not hold the response: within
        # aiocoap's empty-ACK delay (0.1 s) the answer stays piggybacked, no separate response.
        # mailbox_max: bad-input puts 17 messages in at once. The sweep reports silence as
        # `offline` after 3 heartbeats, as the gateway does (recorded as a gateway message).
        self.edge = KitEdge(self, self.host, self.port, self._ingest, heartbeat_s=self.heartbeat_s,
                            ack_wait_s=0.05, mailbox_max=64, keys={self.dev: self.key})
        try:
            await self.edge.start()
        except Exception as e:  # noqa: BLE001 - reported by start()
            self._error = e
            self._ready.set()
            return
        self.port = self.edge.port
        self._ready.set()
        redeliver = asyncio.create_task(self._redeliver())
        try:
            await self._stop.wait()
        finally:
            redeliver.cancel()
            await self.edge.stop()

    async def _redeliver(self) -> None:
        # as the gateway does (docs/protocol.md "Commands: long poll"): every command without a
        # final reply goes out again every 2 s (and on every birth). The firmware refuses a
        # reply locally when its reply queue is full and counts on this to answer later
        while True:
            await asyncio.sleep(REDELIVER_S)
            for cid, raw in list(self.pending.items()):
                self._mail("cmd", raw, cid)  # replaces a copy not yet polled

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    # --- receiving (on the edge's loop) -------------------------------------------------
    def note_request(self, channel: str, request: aiocoap.Message) -> None:
        q = {}
        for item in request.opt.uri_query:
            k, _, v = item.partition("=")
            q[k] = v

        def num(name):
            try:
                return int(q[name])
            except (KeyError, ValueError):
                return None

        self.requests.append((time.monotonic(), channel, num("hb"), num("s")))

    def record(self, channel: str, raw: bytes, obj: dict | None, meta: dict | None = None) -> Msg:
        with self.cond:
            if channel == "birth" and obj and isinstance(obj.get("body"), dict):
                ep = obj["body"].get("epoch")
                if isinstance(ep, str):
                    self.epoch = ep
            msg = Msg(len(self.msgs), channel, bytes(raw), obj, self.epoch, meta=meta or {})
            self.msgs.append(msg)
            if channel == "evt" and obj and isinstance(obj.get("seq"), int) and self.epoch:
                self.seen.setdefault(self.epoch, set()).add(obj["seq"])
            if channel == "reply" and obj and isinstance(obj.get("body"), dict) \
                    and obj["body"].get("status") in ("done", "rejected", "failed"):
                self.pending.pop(obj.get("id"), None)
            self.cond.notify_all()
            return msg

    async def _ingest(self, topic: str, payload: bytes) -> None:
        """The edge's handler: where the gateway would persist, the kit records."""
        channel = topic.rsplit("/", 1)[-1]
        if not topic.startswith(self.prefix):
            return
        req = _request.get()
        from_device = req is not None and req[0] == channel and req[1] is payload
        try:
            obj = json.loads(payload)
            if not isinstance(obj, dict):
                obj = None
        except ValueError:
            obj = None
        if not from_device:  # made up by the edge (liveness): not the device's behaviour
            self.record("gateway-" + channel, payload, obj)
            return
        # a repeat with again=1 is recorded, marked: clauses that count sends skip it
        msg = self.record(channel, payload, obj, meta={"again": True} if req[2] else None)
        if channel == "birth" and obj and msg.epoch:
            first = msg.body.get("first")
            upto = self.acked.get(msg.epoch, 0)
            if isinstance(first, int):
                upto = max(upto, first - 1)
            self.acked[msg.epoch] = upto
            self._ctl(self.envelope("ack", {"epoch": msg.epoch, "upto": upto, "now": now_ms()}))
            for cid, raw in list(self.pending.items()):
                self._mail("cmd", raw, cid)  # replaces a copy not yet polled

    # --- sending ------------------------------------------------------------------------
    def _device(self):
        assert self.edge is not None
        return self.edge.devices.get(self.dev)

    def _ctl(self, msg: dict) -> None:
        """A `ctl` message (ack, rebirth) as the gateway sends it: on the response the device
        is waiting for (its birth's or event's) if it wants it, else through the mailbox."""
        d = self._device()
        if d is not None:
            raw = json.dumps(msg).encode()
            self.edge._on_ctl(d, msg, raw)

    def _mail(self, channel: str, raw: bytes, key: str | None = None) -> None:
        """Into the device's mailbox as it is: no deadline filter, no parsing (the edge's
        `publish` would drop a command past its deadline and refuse bytes that are not JSON)."""
        d = self._device()
        if d is None:
            return  # not seen yet: pending commands go out on its birth
        self.edge._put_mail(d, _Entry(protocol.topic(self.dev, channel), raw,
                                      key=key or f"kit-{next(self._keys)}"))
        self.edge._hand_to_poll(d)

    def _call(self, fn, *args) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn, *args)  # FIFO: an ack goes before a later rebirth

    def publish(self, channel: str, payload: dict | bytes) -> None:
        if channel == "ctl" and isinstance(payload, dict):
            self._call(self._ctl, payload)
            return
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self._call(self._mail, channel, raw)

    def ack(self, upto: int) -> None:
        self.acked[self.epoch] = max(self.acked.get(self.epoch, 0), upto)
        self.publish("ctl", self.envelope("ack", {"epoch": self.epoch, "upto": upto, "now": now_ms()}))

    def command(self, cid: str, payload: dict | bytes, redeliver: bool = True) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if redeliver:
            self.pending[cid] = raw
        self._call(self._mail, "cmd", raw, cid)
