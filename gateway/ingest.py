"""From device messages to committed state, then acknowledgements.

`apply_batch` is the synchronous core: it decodes a batch of raw MQTT messages and applies
them to the store in ONE transaction (each message in its own savepoint, so a message that
trips a bug rolls back alone), and returns the `Effects` to carry out after the commit:
acks to publish, rebirth requests, births (to resend pending commands). `IngestWorker` is
the asynchronous edge: it gathers messages into batches, runs `apply_batch` on the writer
thread, then publishes the acks. An ack is only ever published after the commit that makes
it true; acks are coalesced to one per device per batch (the highest `upto`).

Rules (docs/protocol.md):
* birth: register/update the device, mark it online; events at or below `first - 1` are
  settled; if that skips seqs we never stored, record a `journal.overflow` event with the
  number lost; then ack the watermark so the device can drop what we already have.
* status: `offline` marks the device offline only if its session is not older than the
  last birth's; a retained `online` of the current session marks it online again, a newer
  session we have no birth for asks for a rebirth.
* event: persist (deduplicated by device, epoch, seq), then ack `upto` = highest seq with no
  gap below it. Duplicates are acknowledged again. Unknown device → rejected and rebirth.
* reply: update the command (see `gateway.commands`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .commands import Publisher, apply_reply, now_ms
from .db import Database
from .protocol import Birth, Event, Message, ProtocolError, Reply, Status
from .store import Store

log = logging.getLogger("gateway.ingest")

OVERFLOW_EVENT = "journal.overflow"


@dataclass
class Effects:
    """What a batch asks for once it has committed."""
    acks: dict[str, tuple[str, int]] = field(default_factory=dict)  # device → (epoch, upto)
    rebirths: set[str] = field(default_factory=set)
    births: list[str] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)
    received: int = 0
    persisted: int = 0
    duplicates: int = 0
    touched: set[str] = field(default_factory=set)

    def merge(self, other: Effects) -> None:
        self.acks.update(other.acks)
        self.rebirths |= other.rebirths
        self.births += [b for b in other.births if b not in self.births]
        self.rejections.update(other.rejections)
        self.persisted += other.persisted
        self.duplicates += other.duplicates
        self.touched |= other.touched


def public_device(dev: dict[str, Any], watermark: int | None = None) -> dict[str, Any]:
    out = {k: dev[k] for k in ("id", "kind", "fw", "caps", "cfg", "session", "epoch", "boot",
                               "reset", "online", "last_seen", "first_seen")}
    if watermark is not None:
        out["acked"] = watermark
    return out


def _announce_device(store: Store, device: str, change: str) -> None:
    dev = store.get_device(device)
    if dev is not None:
        store.append_stream("device", {"change": change, **public_device(dev)})


def apply_birth(store: Store, b: Birth, now: int, eff: Effects) -> None:
    prev = store.get_device(b.dev)
    store.upsert_device(id=b.dev, kind=b.kind, fw=b.fw, caps=b.caps, cfg=b.cfg,
                        session=b.session, epoch=b.epoch, boot=b.boot, reset=b.reset,
                        online=True, now=now)
    watermark = store.get_watermark(b.dev, b.epoch) or 0
    settled = b.first - 1
    if settled > watermark:
        lost = (settled - watermark) - store.count_events_between(b.dev, b.epoch, watermark + 1,
                                                                  settled)
        if lost > 0:
            store.insert_event(b.dev, b.epoch, None, OVERFLOW_EVENT, b.t, now,
                               {"lost": lost, "from": watermark + 1, "to": settled,
                                "epoch": b.epoch})
            log.warning("journal overflow device=%s epoch=%s lost=%d seqs=%d..%d", b.dev,
                        b.epoch, lost, watermark + 1, settled)
    upto = store.advance_watermark(b.dev, b.epoch, start=settled)
    eff.acks[b.dev] = (b.epoch, upto)
    eff.births.append(b.dev)
    change = "online" if prev is None or not prev["online"] else "birth"
    if prev is not None and prev["epoch"] != b.epoch:
        log.warning("device epoch changed device=%s old=%s new=%s (journal wiped?)", b.dev,
                    prev["epoch"], b.epoch)
    _announce_device(store, b.dev, change)
    log.info("birth device=%s kind=%s fw=%s session=%d epoch=%s first=%d next=%d acked=%d",
             b.dev, b.kind, b.fw, b.session, b.epoch, b.first, b.next, upto)


def apply_status(store: Store, s: Status, now: int, eff: Effects) -> None:
    dev = store.get_device(s.dev)
    if dev is None:
        if s.online:  # a device we have no birth for is up: ask it to introduce itself
            eff.rebirths.add(s.dev)
        return
    if not s.online:
        if s.session < dev["session"]:
            log.info("late will ignored device=%s will_session=%d session=%d", s.dev,
                     s.session, dev["session"])
            return
        if dev["online"]:
            store.set_online(s.dev, False, now)
            _announce_device(store, s.dev, "offline")
            log.info("offline device=%s session=%d", s.dev, s.session)
        return
    if s.session > dev["session"]:
        eff.rebirths.add(s.dev)  # a newer connection whose birth we missed
    elif s.session == dev["session"] and not dev["online"]:
        store.set_online(s.dev, True, now)
        _announce_device(store, s.dev, "online")


def apply_event(store: Store, e: Event, now: int, eff: Effects) -> None:
    dev = store.get_device(e.dev)
    if dev is None:
        eff.rejections["unknown-device"] += 1
        eff.rebirths.add(e.dev)
        return
    epoch = dev["epoch"]
    if store.insert_event(e.dev, epoch, e.seq, e.type, e.t, now, e.body) is None:
        eff.duplicates += 1
    else:
        eff.persisted += 1
    upto = store.advance_watermark(e.dev, epoch)
    eff.acks[e.dev] = (epoch, upto)
    eff.touched.add(e.dev)


def apply_reply_message(store: Store, r: Reply, now: int, eff: Effects) -> None:
    if store.get_device(r.dev) is None:
        eff.rejections["unknown-device"] += 1
        eff.rebirths.add(r.dev)
        return
    _, rejection = apply_reply(store, r, now)
    if rejection:
        eff.rejections[rejection] += 1
        log.warning("reply rejected device=%s command=%s reason=%s", r.dev, r.id, rejection)
    eff.touched.add(r.dev)


def apply_message(store: Store, msg: Message, now: int, eff: Effects) -> None:
    if isinstance(msg, Event):
        apply_event(store, msg, now, eff)
    elif isinstance(msg, Birth):
        apply_birth(store, msg, now, eff)
    elif isinstance(msg, Status):
        apply_status(store, msg, now, eff)
    else:
        apply_reply_message(store, msg, now, eff)


def apply_batch(store: Store, messages: Sequence[tuple[str, bytes]], now: int) -> Effects:
    """Decode and apply raw `(topic, payload)` messages in one transaction."""
    eff = Effects()
    with store.transaction():
        for topic, payload in messages:
            eff.received += 1
            try:
                msg = protocol.decode(topic, payload)
            except ProtocolError as exc:
                eff.rejections[exc.reason] += 1
                log.warning("message rejected topic=%s reason=%s detail=%r bytes=%d", topic,
                            exc.reason, exc.detail, len(payload))
                continue
            one = Effects()
            try:
                with store.transaction():  # savepoint
                    apply_message(store, msg, now, one)
            except Exception:
                log.exception("message failed topic=%s; rolled back alone", topic)
                eff.rejections["internal-error"] += 1
                continue
            if one.rejections:
                log.warning("message rejected topic=%s reason=%s", topic,
                            ",".join(one.rejections))
            eff.merge(one)
        store.bump("messages_received", eff.received)
        store.bump("events_persisted", eff.persisted)
        store.bump("duplicates", eff.duplicates)
        for reason, n in eff.rejections.items():
            store.bump_rejection(reason, n)
        store.touch(sorted(eff.touched), now)
    return eff


class IngestWorker:
    """Batch inbound messages into transactions; acknowledge after each commit."""

    def __init__(self, db: Database, publish: Publisher, *,
                 on_birth: Callable[[str], Any] | None = None, batch_max: int = 256,
                 linger_s: float = 0.0, queue_max: int = 10_000,
                 rebirth_interval_s: float = 2.0, clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        self.publish = publish
        self.on_birth = on_birth
        self.batch_max = max(1, batch_max)
        self.linger_s = linger_s
        self.rebirth_interval_s = rebirth_interval_s
        self.clock = clock
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(queue_max)
        self.ack_failures = 0
        self.batches = 0
        self._last_rebirth: dict[str, float] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        # metrics: called with the arrival times (monotonic) of a committed, acked batch
        self.on_processed: Callable[[list[float], float], None] | None = None
        self._arrivals: deque[float] = deque()  # parallel to `queue` (FIFO)

    async def put(self, topic: str, payload: bytes) -> None:
        """Queue one message (waits when the queue is full: backpressure on the bus)."""
        self._idle.clear()
        await self.queue.put((topic, payload))
        self._arrivals.append(time.monotonic())  # same step as the put: order matches

    async def drained(self, timeout: float) -> bool:
        """Wait until everything queued so far is committed and acknowledged."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            if self.linger_s > 0:
                await asyncio.sleep(self.linger_s)
            while len(batch) < self.batch_max and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            arrivals = [self._arrivals.popleft() for _ in batch if self._arrivals]
            try:
                await self._process(batch)
                if self.on_processed is not None:
                    self.on_processed(arrivals, time.monotonic())
            except asyncio.CancelledError:
                raise
            except Exception:  # the device re-sends what we did not acknowledge
                log.exception("ingest batch failed size=%d; not acknowledged", len(batch))
            if self.queue.empty():
                self._idle.set()

    async def _process(self, batch: list[tuple[str, bytes]]) -> None:
        eff = await self.db.write(apply_batch, batch, self.clock())
        self.batches += 1
        now = self.clock()
        sends: list[Awaitable[Any]] = [self._publish_ack(dev, epoch, upto, now)
                                       for dev, (epoch, upto) in eff.acks.items()]
        mono = time.monotonic()
        for dev in eff.rebirths:
            if mono - self._last_rebirth.get(dev, -1e9) >= self.rebirth_interval_s:
                self._last_rebirth[dev] = mono
                log.info("rebirth requested device=%s", dev)
                sends.append(self._publish(protocol.topic(dev, "ctl"),
                                           protocol.encode_ctl_rebirth(dev, now)))
        if sends:
            await asyncio.gather(*sends)
        if self.on_birth is not None:
            for dev in eff.births:
                result = self.on_birth(dev)
                if asyncio.iscoroutine(result):
                    await result

    async def _publish_ack(self, dev: str, epoch: str, upto: int, now: int) -> None:
        ok = await self._publish(protocol.topic(dev, "ctl"),
                                 protocol.encode_ack(dev, epoch, upto, now))
        if not ok:
            self.ack_failures += 1

    async def _publish(self, topic: str, payload: bytes) -> bool:
        try:
            await self.publish(topic, payload, qos=1, retain=False)
            return True
        except Exception as exc:  # noqa: BLE001 - the device re-sends and we ack again
            log.warning("publish failed topic=%s error=%r", topic, exc)
            return False
