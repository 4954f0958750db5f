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
  number lost; then ack `first - 1` (not what we hold above it: the device shows us its
  journal again, see events); a `next` at or below a seq we have seals the epoch (below).
* status: a will/status belongs to the connection `(epoch, session)` of a birth: `offline`
  marks the device offline only if it is the last birth's (its epoch, or the epoch that
  connection left with `new_epoch`, and the same session); a retained `online` of it marks
  it online again, a newer session or an unknown epoch asks for a rebirth.
* event: persist (deduplicated by device, epoch, seq), then ack `upto` = highest seq with no
  gap below it that this session of the device has shown us (its birth's `first - 1`, then
  seqs it sent that we stored or that matched what we had). A duplicate is a seq we already
  have with the same content (type, t, body): not stored, acknowledged again. The same seq
  with other content is new data under a reused seq (a journal rolled back: the device was
  restored from an older copy of its flash): never dropped, never acked; the epoch is
  sealed at that seq and the device is told `new_epoch` (docs/protocol.md "Journal rolled
  back"). Unknown device → rejected and rebirth.
* reply: update the command (see `gateway.devices.commands`).

Rejected messages are counted per reason (`GET /stats`) one by one, and logged per batch and
reason with one example, at most one line per reason every 5 s (`IngestWorker.rejection_log`,
a `gateway.logs.RateLimitedLog`): a flood of garbage cannot flood the log, and the lines
still add up to every rejected message (`count` + `suppressed`).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.devices import protocol
from gateway.devices.commands import Publisher, apply_reply, now_ms
from gateway.devices.protocol import Birth, Event, Message, ProtocolError, Reply, Status
from gateway.logs import RateLimitedLog
from gateway.storage.db import Database
from gateway.storage.store import MidwayCommitError, Store

log = logging.getLogger("gateway.ingest")

OVERFLOW_EVENT = "journal.overflow"
REBIRTH_MEMORY = 10_000  # devices remembered for the rebirth interval (pruned beyond)
ROLLBACK_EVENT = "journal.rollback"


@dataclass
class Effects:
    """What a batch asks for once it has committed."""
    acks: dict[str, tuple[str, int]] = field(default_factory=dict)  # device → (epoch, upto)
    # device → (epoch, upto, new epoch): a `new_epoch` to publish instead of an ack
    new_epochs: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    rebirths: set[str] = field(default_factory=set)
    births: list[str] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # reason → one example, for the log
    received: int = 0
    persisted: int = 0
    duplicates: int = 0
    conflicts: int = 0  # events refused: a seq of this epoch we have with other content, or sealed
    touched: set[str] = field(default_factory=set)

    def reject(self, reason: str, sample: str) -> None:
        """Count one rejected message; `sample` (`key=value` text) describes the first one of
        its reason in the log line (see `IngestWorker.rejection_log`)."""
        self.rejections[reason] += 1
        self.samples.setdefault(reason, sample)

    def ack(self, dev: str, epoch: str, upto: int) -> None:
        self.new_epochs.pop(dev, None)
        self.acks[dev] = (epoch, upto)

    def new_epoch(self, dev: str, epoch: str, upto: int, new: str) -> None:
        self.acks.pop(dev, None)
        self.new_epochs[dev] = (epoch, upto, new)

    def merge(self, other: Effects) -> None:
        for dev, (epoch, upto) in other.acks.items():
            self.ack(dev, epoch, upto)
        for dev, (epoch, upto, new) in other.new_epochs.items():
            self.new_epoch(dev, epoch, upto, new)
        self.conflicts += other.conflicts
        self.rebirths |= other.rebirths
        self.births += [b for b in other.births if b not in self.births]
        self.rejections.update(other.rejections)
        for reason, sample in other.samples.items():
            self.samples.setdefault(reason, sample)
        self.persisted += other.persisted
        self.duplicates += other.duplicates
        self.touched |= other.touched


def public_device(dev: dict[str, Any], watermark: int | None = None) -> dict[str, Any]:
    out = {k: dev[k] for k in ("id", "kind", "fw", "caps", "cfg", "session", "epoch", "boot",
                               "reset", "online", "last_seen", "first_seen")}
    if watermark is not None:
        out["acked"] = watermark
    return out


def device_views(store: Store, device: str | None = None) -> list[dict[str, Any]]:
    """Devices as `GET /devices` and `GET /devices/{device}` show them (one model, `DeviceOut`
    in gateway/http/api.py): `public_device` plus `acked` and `pending_commands`
    (`Store.devices_with_acks`: a fixed number of queries however many devices)."""
    return [public_device(d, d["acked"]) | {"pending_commands": d["pending_commands"]}
            for d in store.devices_with_acks(device)]


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
    # this session has shown us nothing yet: acks start from `first - 1`, never from what we
    # hold above it (a journal restored from an older copy may hold other events there)
    store.set_verified(b.dev, b.epoch, settled, mark=store.last_event_id())
    st = store.epoch_state(b.dev, b.epoch)
    assert st is not None
    if b.next <= store.max_seq(b.dev, b.epoch):  # its next seq is one we already have
        _seal(store, b.dev, b.epoch, st, b.next, now, b.t, "behind", eff)
    _answer(b.dev, b.epoch, st, settled, eff)
    eff.births.append(b.dev)
    change = "online" if prev is None or not prev["online"] else "birth"
    if prev is not None and prev["epoch"] != b.epoch:
        log.warning("device epoch changed device=%s old=%s new=%s (journal wiped?)", b.dev,
                    prev["epoch"], b.epoch)
    _announce_device(store, b.dev, change)
    log.info("birth device=%s kind=%s fw=%s session=%d epoch=%s first=%d next=%d stored=%d",
             b.dev, b.kind, b.fw, b.session, b.epoch, b.first, b.next, upto)


def _seal(store: Store, dev: str, epoch: str, st: dict[str, Any], seq: int, now: int,
          t: int | None, why: str, eff: Effects) -> None:
    """Close `epoch` of `dev` from `seq` on (its journal was rolled back): nothing at or above
    `seq` is stored in it any more, the device is told to go on in a new epoch (made here,
    with its watermark at `seq - 1`), and a `journal.rollback` event (an alert) is recorded."""
    if st["sealed"] is not None and st["sealed"] <= seq:
        return
    while True:
        fork = secrets.token_hex(4)
        if fork != epoch and not store.epoch_known(dev, fork):
            break
    store.seal_epoch(dev, epoch, seq, fork)
    store.set_watermark(dev, fork, seq - 1)
    had = store.max_seq(dev, epoch)
    st["sealed"], st["fork"] = seq, fork
    store.insert_event(dev, epoch, None, ROLLBACK_EVENT, t, now,
                       {"epoch": epoch, "from": seq, "had": had, "new_epoch": fork,
                        "reason": why})
    log.warning("journal rolled back device=%s epoch=%s reason=%s from_seq=%d stored_upto=%d "
                "new_epoch=%s (restored from an older flash copy? nothing is dropped: the "
                "device goes on in the new epoch)", dev, epoch, why, seq, had, fork)


def _answer(dev: str, epoch: str, st: dict[str, Any], verified: int, eff: Effects) -> None:
    """Ack `verified`, or, once everything below a seal is verified, send `new_epoch`."""
    sealed = st["sealed"]
    if sealed is not None and verified >= sealed - 1:
        eff.new_epoch(dev, epoch, sealed - 1, st["fork"])
    else:
        eff.ack(dev, epoch, verified)


def apply_status(store: Store, s: Status, now: int, eff: Effects) -> None:
    dev = store.get_device(s.dev)
    if dev is None:
        if s.online:  # a device we have no birth for is up: ask it to introduce itself
            eff.rebirths.add(s.dev)
        return
    # a status belongs to one connection: its epoch (when it names one) and its session.
    # The connection that moved to a new epoch (`new_epoch`) keeps the will it connected with
    ours = s.epoch is None or s.epoch == dev["epoch"] or store.forked_into(s.dev, s.epoch,
                                                                          dev["epoch"])
    if not s.online:
        if not ours or s.session != dev["session"]:
            log.info("late will ignored device=%s will_epoch=%s will_session=%d epoch=%s "
                     "session=%d", s.dev, s.epoch, s.session, dev["epoch"], dev["session"])
            return
        if dev["online"]:
            store.set_online(s.dev, False, now)
            _announce_device(store, s.dev, "offline")
            log.info("offline device=%s session=%d", s.dev, s.session)
        return
    if not ours:
        if not store.epoch_known(s.dev, s.epoch or ""):
            eff.rebirths.add(s.dev)  # a journal we have no birth for (wiped since?)
        return  # a retained status of an older epoch
    if s.session > dev["session"]:
        eff.rebirths.add(s.dev)  # a newer connection whose birth we missed
    elif s.session == dev["session"] and not dev["online"]:
        store.set_online(s.dev, True, now)
        _announce_device(store, s.dev, "online")


def apply_event(store: Store, e: Event, now: int, eff: Effects) -> None:
    dev = store.get_device(e.dev)
    if dev is None:
        eff.reject("unknown-device", _no_birth(e.dev, "evt"))
        eff.rebirths.add(e.dev)
        return
    epoch = dev["epoch"]
    track = _Track(store.epoch_state(e.dev, epoch))
    _insert_checked(store, e, epoch, track, now, eff)
    store.advance_watermark(e.dev, epoch)
    _finish(store, e.dev, epoch, track, eff)
    eff.touched.add(e.dev)


class _Track:
    """One device's events of one epoch in a batch: which seqs it showed us (stored new, or a
    true duplicate), in order."""

    __slots__ = ("new", "shown", "st")

    def __init__(self, st: dict[str, Any] | None) -> None:
        # no acks row (cannot happen after a birth): trust what is stored, as before
        self.st: dict[str, Any] = st if st is not None else {"upto": 0, "verified": None, "mark": 0,
                                                             "sealed": None, "fork": None}
        self.shown: list[int] = []
        self.new: set[int] = set()


def _same(stored: tuple[int, str, int | None, Any], e: Event) -> bool:
    _, type_, t, body = stored
    return type_ == e.type and t == e.t and body == e.body


def _insert_checked(store: Store, e: Event, epoch: str, track: _Track, now: int,
                    eff: Effects) -> None:
    """Store one event unless its epoch is sealed at or below its seq; a seq we have with other
    content seals the epoch there."""
    sealed = track.st["sealed"]
    if sealed is not None and e.seq >= sealed:
        eff.conflicts += 1
        return
    if store.insert_event(e.dev, epoch, e.seq, e.type, e.t, now, e.body) is not None:
        eff.persisted += 1
        track.new.add(e.seq)
        track.shown.append(e.seq)
        return
    have = store.stored_event(e.dev, epoch, e.seq)
    if have is not None and _same(have, e):
        eff.duplicates += 1
        track.shown.append(e.seq)
        return
    eff.conflicts += 1
    _seal(store, e.dev, epoch, track.st, e.seq, now, e.t, "seq-reused", eff)


def _finish(store: Store, dev: str, epoch: str, track: _Track, eff: Effects,
            event_id: Callable[[int], int | None] | None = None,
            verified: list[tuple[int, str, str]] | None = None) -> None:
    """Advance and store the session's verified prefix, then answer (ack or `new_epoch`).
    `event_id(seq)`: the id of the event stored at `seq` (a batch's memo; default: the store);
    `verified`: where to put the `(verified, dev, epoch)` update to write later (default: now)."""
    st = track.st
    v = st["verified"] if st["verified"] is not None else st["upto"]
    mark = st["mark"] or 0
    sealed = st["sealed"]
    start = v
    if event_id is None:
        def event_id(seq: int) -> int | None:
            return store.event_id(dev, epoch, seq)

    def advance(v: int) -> int:
        while sealed is None or v + 1 < sealed:
            if (v + 1) in track.new:
                v += 1
                continue
            eid = event_id(v + 1)
            if eid is None or eid <= mark:
                break
            v += 1  # stored earlier in this session (a gap now filled)
        return v

    for seq in track.shown:
        if seq == v + 1:
            v = advance(seq)
    v = advance(v)
    if v != start or st["verified"] is None:
        if verified is None:
            store.set_verified(dev, epoch, v)
        else:
            verified.append((v, dev, epoch))
        st["verified"] = v
    _answer(dev, epoch, st, v, eff)


def apply_replies(store: Store, decoded: list[tuple[str, Message]], rejections: Counter[str],
                  received: int, now: int) -> Effects:
    """The command file's writer: apply device replies (each in its savepoint: one that trips
    a bug rolls back alone), in one transaction. The main file's part (counters, last seen)
    follows with `book_replies`."""
    eff = Effects(received=received)
    eff.rejections.update(rejections)
    with store.transaction():
        for topic, msg in decoded:
            try:
                with store.transaction():  # savepoint
                    if not isinstance(msg, Reply):
                        raise TypeError(f"not a reply: {type(msg).__name__}")
                    apply_reply_message(store, msg, now, eff)
            except Exception:
                log.exception("reply failed topic=%s; rolled back alone", _printable(topic))
                eff.reject("internal-error", f"topic={_printable(topic)}")
    return eff


def book_replies(store: Store, eff: Effects, now: int) -> None:
    """The main file's part of a batch of replies: the counters and the devices' last seen."""
    with store.transaction():
        store.bump("messages_received", eff.received)
        for reason, n in eff.rejections.items():
            store.bump_rejection(reason, n)
        store.touch(sorted(eff.touched), now)


def apply_reply_message(store: Store, r: Reply, now: int, eff: Effects) -> None:
    """A device reply, on the command file (`CommandStore`: `devices` is the gateway's file,
    attached read-only)."""
    if store.get_device(r.dev) is None:
        eff.reject("unknown-device", _no_birth(r.dev, "reply"))
        eff.rebirths.add(r.dev)
        return
    _, rejection = apply_reply(store, r, now)
    if rejection:
        eff.reject(rejection, f"device={r.dev} channel=reply command={r.id!r}")
    eff.touched.add(r.dev)


def _no_birth(dev: str, channel: str) -> str:
    return f"device={dev} channel={channel} (no birth from it yet: rebirth requested)"


def apply_message(store: Store, msg: Message, now: int, eff: Effects) -> None:
    if isinstance(msg, Event):
        apply_event(store, msg, now, eff)
    elif isinstance(msg, Birth):
        apply_birth(store, msg, now, eff)
    elif isinstance(msg, Status):
        apply_status(store, msg, now, eff)
    else:  # (the gateway's `IngestWorker` sends replies to the command file: `apply_replies`;
        # a store that sees both files, as in tools and tests, takes them here too)
        apply_reply_message(store, msg, now, eff)


_UNREAD: Any = object()


RELAX_GRACE_S = 0.25  # small batches this long after the last command's outcome (`relax`)
# events per insert; between two, a waiting command write cuts in (`_Batch.flush`). 32, not
# 128: at saturation the ingest commits batches of ~90 events (the writer is the bottleneck:
# docs/benchmarks.md, "Issue 18, session 9"), which 128 never cut; the writer's CPU per event
# did not move (18.5 against 18.99 us, 6 rounds), lone commands' p50 fell 6 rounds of 6
CHUNK = 32


class _Batch:
    """Per-batch caches for the event fast path: device rows and ack states read for every
    device of the batch in one query (`prefetch`), events inserted together
    (`Store.insert_events_many`, `CHUNK` at a time), the ack watermark advanced once per device
    per batch (not once per event), and the acks rows written with one `executemany` per batch.

    The command lane (issue 18): between two chunks, when a command's write waits for the
    writer (`Store.lane_waiting`), the command's write joins the transaction, which commits
    midway (`Store.lane_join`), and the rest of the batch goes on in the next transaction. The
    per-device work (watermark, verified prefix, acks rows) is done once per batch, at the end,
    cut or not: a cut costs a commit, not a pass over the devices (session 7's writer slices
    paid that pass per slice, 2.5x the writer's CPU)."""

    def __init__(self, store: Store, now: int, progress: _Progress | None = None) -> None:
        self.store = store
        self.now = now
        self.progress = progress
        self.devices: dict[str, dict[str, Any] | None] = {}
        # (device, epoch) -> its acks row as read by `prefetch`; dropped by `_settle` (which
        # writes them) and never used after a birth or status changed them
        self.states: dict[tuple[str, str], dict[str, Any] | None] = {}
        # (event, epoch or None: an unknown device, its index in the batch) not inserted yet
        self.events: list[tuple[Event, str | None, int]] = []
        self.seqs: dict[tuple[str, str], set[int]] = {}
        self.tracks: dict[tuple[str, str], _Track] = {}

    def device(self, dev: str) -> dict[str, Any] | None:
        try:
            return self.devices[dev]
        except KeyError:
            row = self.devices[dev] = self.store.get_device(dev)
            return row

    def prefetch(self, devices: set[str]) -> None:
        got = self.store.devices_with_epoch_state(sorted(devices))
        for dev in devices:
            row, st = got.get(dev, (None, None))
            self.devices[dev] = row
            if row is not None:
                self.states[(dev, row["epoch"])] = st

    def add_event(self, e: Event, index: int) -> None:
        dev = self.device(e.dev)
        self.events.append((e, None if dev is None else dev["epoch"], index))

    def flush(self, eff: Effects) -> None:
        """Insert the pending events (`CHUNK` at a time, in one savepoint: a waiting command
        write cuts in between two, see the class docstring), then advance and store the
        watermark of every device with events in this batch."""
        store = self.store
        now = self.now
        tracks = self.tracks
        states = self.states
        events = self.events
        known: list[tuple[int, Event, str]] = []  # (index in `events`, event, epoch)
        for i, (e, epoch, _) in enumerate(events):
            if epoch is None:
                continue
            known.append((i, e, epoch))
            if (e.dev, epoch) not in tracks:
                st = states.pop((e.dev, epoch), _UNREAD)
                tracks[(e.dev, epoch)] = _Track(store.epoch_state(e.dev, epoch)
                                                if st is _UNREAD else st)
        rows = [(e.dev, epoch, e.seq, e.type, e.t, now, e.body) for _, e, epoch in known
                if (s := tracks[(e.dev, epoch)].st["sealed"]) is None or e.seq < s]
        counted = [0, 0]  # events and known events (= rows) accounted for in `eff`

        def account(ev_end: int, row_end: int) -> None:
            """Count events[:ev_end], whose rows[:row_end] are inserted, in `eff`."""
            ev, row = counted
            for i in range(ev, ev_end):
                e, epoch, _ = events[i]
                if epoch is None:
                    eff.reject("unknown-device", _no_birth(e.dev, "evt"))
                    eff.rebirths.add(e.dev)
            for k in range(row, row_end):
                _, e, epoch = known[k]
                eff.persisted += 1
                t = tracks[(e.dev, epoch)]
                t.new.add(e.seq)
                t.shown.append(e.seq)
            counted[:] = [ev_end, row_end]

        def cut(n: int) -> bool:
            """After `n` rows: when a command write waits, it joins and the transaction
            commits here (no per-device work: the watermarks and acks rows are written once,
            at the end; a crash after this commit leaves them behind the stored events, which
            is safe: the device re-sends, the duplicates are acked)."""
            if store.lane_waiting is None or not store.lane_waiting():
                return False
            join = store.lane_join
            assert join is not None  # set with `lane_waiting`
            ev_end = known[n - 1][0] + 1
            account(ev_end, n)
            if self.progress is not None:
                self.progress.midway(events[ev_end - 1][2], eff)
            join()
            return True

        # all new (the common case): `CHUNK` rows per executemany pair; else one by one, in
        # order, each duplicate compared with what we have (a reused seq seals the epoch at
        # once, so nothing above it is stored)
        all_new = len(rows) == len(known)  # else some are at or above a seal: one by one
        inserted = store.insert_events_cut(rows, CHUNK, cut) if all_new else []
        if all_new and len(inserted) == len(rows):
            account(len(events), len(rows))
        else:  # a duplicate: what a cut committed stays, the rest one by one
            assert counted[1] == len(inserted)
            for i in range(counted[0], len(events)):
                e, epoch, _ = events[i]
                if epoch is None:
                    eff.reject("unknown-device", _no_birth(e.dev, "evt"))
                    eff.rebirths.add(e.dev)
                else:
                    _insert_checked(store, e, epoch, tracks[(e.dev, epoch)], now, eff)
        for _, e, epoch in known:
            self.seqs.setdefault((e.dev, epoch), set()).add(e.seq)
            eff.touched.add(e.dev)
        events.clear()
        self._settle(eff)

    def _settle(self, eff: Effects) -> None:
        """Advance and store the watermark and verified prefix of every device with events
        inserted since the last call, and answer them (ack or `new_epoch`)."""
        store = self.store
        tracks = self.tracks
        self.states.clear()  # what this writes makes them stale
        watermarks: list[tuple[str, str, int]] = []
        verified: list[tuple[int, str, str]] = []
        for dev, epoch in self.seqs:
            track = tracks[(dev, epoch)]
            seqs = track.new
            probe = _Probe(store, dev, epoch)  # the watermark and the prefix look at one seq
            w = start = track.st["upto"] or 0  # the watermark (no acks row: 0)
            while (w + 1) in seqs or probe(w + 1) is not None:
                w += 1
            if w != start or start == 0:
                watermarks.append((dev, epoch, w))
            _finish(store, dev, epoch, track, eff, probe, verified)
        store.set_acks_many(watermarks, verified)
        self.seqs.clear()
        tracks.clear()


class _Progress:
    """What an apply has committed midway (the command lane cut in, `_Batch.flush`): how many
    of its messages, their effects (a copy), and the counters bumped for them, so that a
    failure after that point re-applies only the rest, and the counters add up once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.done = 0  # the first messages of the batch, committed
        self.effects: Effects | None = None
        self.bumped: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()

    def midway(self, last: int, eff: Effects) -> None:
        """Messages up to index `last` are applied (effects `eff`) and about to commit."""
        self.done = last + 1
        self.effects = Effects()
        self.effects.merge(eff)
        self.bump(eff, self.done)

    def bump(self, eff: Effects, received: int) -> None:
        """Bring the counters to `eff`'s figures (and `received` messages)."""
        store = self.store
        for name, n in (("messages_received", received), ("events_persisted", eff.persisted),
                        ("duplicates", eff.duplicates), ("seq_conflicts", eff.conflicts)):
            store.bump(name, n - self.bumped[name])
            self.bumped[name] = n
        for reason, n in eff.rejections.items():
            store.bump_rejection(reason, n - self.rejections[reason])
            self.rejections[reason] = n


class _Probe:
    """`Store.event_id` of one (device, epoch), each seq asked once per flush."""

    __slots__ = ("dev", "epoch", "memo", "store")

    def __init__(self, store: Store, dev: str, epoch: str) -> None:
        self.store, self.dev, self.epoch = store, dev, epoch
        self.memo: dict[int, int | None] = {}

    def __call__(self, seq: int) -> int | None:
        try:
            return self.memo[seq]
        except KeyError:
            eid = self.memo[seq] = self.store.event_id(self.dev, self.epoch, seq)
            return eid


def _apply_fast(store: Store, messages: list[tuple[str, Message]], now: int, eff: Effects,
                progress: _Progress | None = None) -> None:
    """All messages in one savepoint, no savepoint per message (the common case)."""
    batch = _Batch(store, now, progress)
    devices = {msg.dev for _, msg in messages if type(msg) is Event}
    if devices:
        batch.prefetch(devices)
    for index, (topic, msg) in enumerate(messages):
        if isinstance(msg, Event):
            batch.add_event(msg, index)
            continue
        batch.flush(eff)  # births/status read the watermark and change the device row
        batch.devices.pop(msg.dev, None)
        one = Effects()
        apply_message(store, msg, now, one)
        eff.merge(one)
    batch.flush(eff)


def _apply_careful(store: Store, messages: list[tuple[str, Message]], now: int,
                   eff: Effects) -> None:
    """Each message in its own savepoint, so a message that trips a bug rolls back alone."""
    for topic, msg in messages:
        one = Effects()
        try:
            with store.transaction():  # savepoint
                apply_message(store, msg, now, one)
        except Exception:
            log.exception("message failed topic=%s; rolled back alone", topic)
            eff.reject("internal-error", f"topic={_printable(topic)}")
            continue
        eff.merge(one)


def _printable(text: str) -> str:
    """`text` for a `key=value` log field (a topic is any UTF-8: newlines included)."""
    text = text[:200]
    return text if text.isprintable() and " " not in text else ascii(text)


def decode_batch(messages: Sequence[tuple[str, bytes]], samples: dict[str, str] | None = None
                 ) -> tuple[list[tuple[str, Message]], Counter[str]]:
    """Validate raw messages (pure, no store access). `samples` gets one example per
    rejection reason, for the log."""
    decoded: list[tuple[str, Message]] = []
    rejections: Counter[str] = Counter()
    for topic, payload in messages:
        try:
            decoded.append((topic, protocol.decode(topic, payload)))
        except ProtocolError as exc:
            rejections[exc.reason] += 1
            if samples is not None and exc.reason not in samples:
                samples[exc.reason] = (f"topic={_printable(topic)} detail={exc.detail[:200]!r} "
                                       f"bytes={len(payload)}")
    return decoded, rejections


def apply_batch(store: Store, messages: Sequence[tuple[str, bytes]], now: int) -> Effects:
    """Decode and apply raw `(topic, payload)` messages in one transaction."""
    decoded, rejections = decode_batch(messages)
    return apply_decoded(store, decoded, rejections, len(messages), now)


def apply_decoded(store: Store, decoded: list[tuple[str, Message]], rejections: Counter[str],
                  received: int, now: int) -> Effects:
    """Apply validated messages in one transaction.

    Fast path first (one savepoint for the whole batch, per-batch caches); if any message
    raises, that savepoint is rolled back and the batch is applied again message by message,
    each in its own savepoint, as before."""
    eff = Effects(received=received)
    eff.rejections.update(rejections)
    with store.transaction():
        applied = Effects()
        progress = _Progress(store)  # a command write may cut in and commit midway
        try:
            with store.transaction():  # savepoint
                _apply_fast(store, decoded, now, applied, progress)
        except MidwayCommitError:
            raise  # the transaction is lost: the batch fails (not acked, re-sent)
        except Exception:
            log.exception("batch fast path failed size=%d; applying message by message",
                          len(decoded))
            # what committed midway stays; the rest again, message by message
            applied = progress.effects or Effects()
            _apply_careful(store, decoded[progress.done:], now, applied)
        eff.merge(applied)
        progress.bump(eff, eff.received)
        store.touch(sorted(eff.touched), now)
    return eff


@dataclass
class _Next:
    """The next batch, gathered and decoded while the writer works on the one before."""
    raw: list[tuple[str, bytes]] = field(default_factory=list)
    decoded: list[tuple[str, Message]] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # reason -> one example, for the log
    arrivals: list[float] = field(default_factory=list)  # of its queued (not reply) messages


PublishMany = Callable[[list[tuple[str, bytes]]], list[asyncio.Future[None]]]


class IngestWorker:
    """Batch inbound messages into transactions; acknowledge after each commit.

    Command replies never wait for events: every reply goes to a lane of its own (a second
    task applies it at once on the command file's writer, `apply_replies`: the commands live
    in a file of their own, `Database.commands`), so a caller waiting for an outcome waits
    neither for the event backlog nor for the batch in progress; the counters and last-seen of
    the replies follow on the gateway's writer (`book_replies`), not waited for. While
    commands are in progress (`expedite`, until the last one's outcome: `relax`), batches are
    kept small (`urgent_batch_max`): a kind's change that sends commands still goes through
    this writer (`Database.write_first`), and waits for the batch in progress, or, in a batch
    of more than `CHUNK` events, for the chunk in progress (it then commits with what the
    batch applied so far, midway: `_Batch.flush`, `Database._lane_join`).

    The event loop decodes the next batch `slice_max` messages at a time, yielding between
    two, and hands a batch's acks to `publish_many` (the gateway's router) in one call, as
    futures settled by the PUBACKs, without a task per ack (issue 18: an HTTP request, that
    is a command, waits for whatever step the loop is running).

    Linger (`linger_s`, 0 = off): when a batch would be tiny (fewer than `linger_below`
    messages queued) and no reply waits, wait up to `linger_s` for more before committing, so
    a moderate load makes fewer, larger commits (less per-commit CPU and fewer fsyncs for a
    little more event latency; docs/benchmarks.md). A reply or `linger_below` queued messages
    end the wait at once. Command writes do not wait for it: they go to the writer thread
    directly, which is idle while the ingest lingers. A message alone (none in the `alone_s`
    before it, default 4 × `linger_s`) does not linger: no companion is likely to come, and a
    device that waits for the gateway's reaction to it (a tube eye, a locker door) would only
    wait longer."""

    def __init__(self, db: Database, publish: Publisher, *,
                 on_birth: Callable[[str], Any] | None = None, batch_max: int = 256,
                 linger_s: float = 0.0, queue_max: int = 10_000,
                 rebirth_interval_s: float = 2.0, urgent_batch_max: int = 64,
                 linger_below: int = 32, acks_in_flight_max: int = 8192,
                 alone_s: float | None = None, clock: Callable[[], int] = now_ms,
                 publish_many: PublishMany | None = None, slice_max: int = 128) -> None:
        self.db = db
        self.publish = publish
        # acks without a task each (`TransportRouter.publish_many`); None: a task per ack
        self.publish_many = publish_many
        # the loop decodes the next batch this many messages at a time (`_fill`)
        self.slice_max = max(1, slice_max)
        self.on_birth = on_birth
        self.batch_max = max(1, batch_max)
        self.urgent_batch_max = max(1, min(urgent_batch_max, self.batch_max))
        self.linger_s = linger_s
        self.linger_below = max(1, linger_below)
        self.alone_s = 4 * linger_s if alone_s is None else alone_s
        self._last_arrival: float | None = None
        self._gap: float | None = None  # between the last two messages queued
        self._linger: asyncio.Future[None] | None = None  # set while lingering
        # set while the loop waits for more to decode during the writer's work on a batch
        self._more: asyncio.Future[None] | None = None
        self._inflight: asyncio.Task[None] | None = None  # the batch at the writer, then its acks
        # acks/rebirths published, PUBACK not yet in: the next batch does not wait for them
        self._sending: set[asyncio.Future[Any]] = set()
        self.acks_in_flight_max = acks_in_flight_max
        self.rebirth_interval_s = rebirth_interval_s
        self.clock = clock
        self.queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(queue_max)
        self.priority: deque[tuple[str, bytes]] = deque()
        self._replies: deque[tuple[str, bytes]] = deque()  # the reply lane (`_run_replies`)
        self._reply_wake = asyncio.Event()
        self._reply_busy = False
        self.ack_failures = 0
        self.batches = 0
        self._urgent_until = 0.0
        self._last_rebirth: dict[str, float] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        # rejected messages: one line per batch and reason, at most one per reason every 5 s
        self.rejection_log = RateLimitedLog(log, "messages rejected", 5.0)
        self.rebirth_log = RateLimitedLog(log, "rebirths requested", 5.0, level=logging.INFO)
        self._flush_timer: asyncio.TimerHandle | None = None
        # metrics: called with the arrival times (monotonic) of a committed, acked batch
        self.on_processed: Callable[[list[float], float], None] | None = None
        self._arrivals: deque[float] = deque()  # parallel to `queue` (FIFO)

    def expedite(self, seconds: float = 2.0) -> None:
        """Keep batches small for the next `seconds` (a command is waiting for its reply)."""
        self._urgent_until = max(self._urgent_until, time.monotonic() + seconds)
        # a linger in progress goes on: the writer is idle meanwhile, so the command's own
        # write runs at once instead of after a commit of the lingering events

    def relax(self, grace_s: float = RELAX_GRACE_S) -> None:
        """No command waits any more: full-size batches again `grace_s` from now, rather than
        when the `expedite` window ends (a lone command's outcome comes in ~50 ms; its window
        was up to 5 s of small batches, which halved the ingest at saturation; the grace keeps
        a caller's next command, sent right after the outcome, on small batches:
        docs/benchmarks.md, "Issue 18, session 9")."""
        self._urgent_until = min(self._urgent_until, time.monotonic() + grace_s)

    def _wake_more(self) -> None:
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    def _end_linger(self) -> None:
        if self._linger is not None and not self._linger.done():
            self._linger.set_result(None)

    async def put(self, topic: str, payload: bytes) -> None:
        """Queue one message (waits when the queue is full: backpressure on the bus)."""
        self._idle.clear()
        if topic.endswith("/reply"):  # the reply lane: the command file's writer, at once
            self._replies.append((topic, payload))
            self._reply_wake.set()
            return
        await self.queue.put((topic, payload))
        now = time.monotonic()
        self._arrivals.append(now)  # same step as the put: order matches
        self._gap = None if self._last_arrival is None else now - self._last_arrival
        self._last_arrival = now
        if self._more is not None:
            self._wake_more()
        if self._linger is not None and self.queue.qsize() >= self.linger_below:
            self._end_linger()

    async def drained(self, timeout: float) -> bool:
        """Wait until everything queued so far is committed and acknowledged."""
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        if self._sending:
            _, pending = await asyncio.wait(set(self._sending),
                                            timeout=max(0.0, deadline - time.monotonic()))
            return not pending
        return True

    async def run(self) -> None:
        replies = asyncio.get_running_loop().create_task(self._run_replies())
        try:
            await self._run()
        finally:  # cancelled (shutdown, after `drained`): what is still unsent stays unacked
            replies.cancel()
            if self._inflight is not None:
                self._inflight.cancel()
            for task in list(self._sending):
                task.cancel()
            if self._flush_timer is not None:
                self._flush_timer.cancel()
            self.rejection_log.flush(force=True)  # the counts held back, before we go
            self.rebirth_log.flush(force=True)

    async def _run(self) -> None:
        """Batches in a pipeline of two stages: while the writer thread applies and commits
        one batch (SQLite and the fsync release the GIL), the loop decodes and validates what
        arrives for the next one. A batch goes to the writer only once the one before it has
        committed and its acks are out: the writer never holds two ingest batches, so a
        command's write never waits behind more than one; replies that arrive meanwhile go
        to the front of the next batch."""
        loop = asyncio.get_running_loop()
        inflight: asyncio.Task[None] | None = None  # the batch at the writer, then its acks
        while True:
            self._inflight = inflight
            nxt = _Next()
            if inflight is None:
                self._maybe_idle()
                if not self.priority:
                    first = await self.queue.get()
                    if first is not None:
                        self.priority.append(first)  # not a reply: the batch starts with it
                        if self._arrivals:
                            nxt.arrivals.append(self._arrivals.popleft())
                        if self.linger_s > 0:
                            await self._maybe_linger()
            await self._fill(nxt)
            while inflight is not None and not inflight.done():
                # the writer works on the previous batch: decode what comes in meanwhile
                if len(nxt.raw) >= self._limit() and not self.priority:
                    break
                if self.queue.empty() and not self.priority:
                    self._more = more = loop.create_future()
                    try:
                        await asyncio.wait((more, inflight), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        self._more = None
                if self._take(nxt, self.slice_max) >= self.slice_max:
                    await asyncio.sleep(0)  # more to decode: let HTTP and replies in first
            if inflight is not None:
                await inflight  # never raises: `_commit` logs what fails
                inflight = None
                await self._fill(nxt)  # replies that came meanwhile go first, then a top-up
            if nxt.raw:
                inflight = loop.create_task(self._commit(nxt))
                self._inflight = inflight

    def _maybe_idle(self) -> None:
        if ((self._inflight is None or self._inflight.done()) and self.queue.empty()
                and not self.priority and not self._replies and not self._reply_busy):
            self._idle.set()

    async def _run_replies(self) -> None:
        """The reply lane: every reply read so far, in one command-lane write, at once."""
        while True:
            await self._reply_wake.wait()
            self._reply_wake.clear()
            while self._replies:
                batch = list(self._replies)
                self._replies.clear()
                self._reply_busy = True
                try:
                    await self._process_replies(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the command is sent again, the device answers it again
                    log.exception("reply batch failed size=%d", len(batch))
                finally:
                    self._reply_busy = False
            self._maybe_idle()

    def _limit(self) -> int:
        return self.urgent_batch_max if time.monotonic() < self._urgent_until else self.batch_max

    def _take(self, nxt: _Next, most: int | None = None) -> int:
        """Move the replies (to the front of `nxt`) and queued messages (up to the batch limit,
        and at most `most`) into `nxt`, decoded; returns how many queued messages it took."""
        replies = list(self.priority)
        self.priority.clear()
        queued: list[tuple[str, bytes]] = []
        room = self._limit() - len(nxt.raw) - len(replies)
        if most is not None:
            room = min(room, most)
        queue, arrivals = self.queue, self._arrivals
        while room > 0 and not queue.empty():
            item = queue.get_nowait()
            if item is not None:
                queued.append(item)
                room -= 1
                if arrivals:
                    nxt.arrivals.append(arrivals.popleft())
        if replies:
            decoded, rejections = decode_batch(replies, nxt.samples)
            nxt.decoded[:0] = decoded
            nxt.rejections.update(rejections)
            nxt.raw[:0] = replies
        if queued:
            decoded, rejections = decode_batch(queued, nxt.samples)
            nxt.decoded += decoded
            nxt.rejections.update(rejections)
            nxt.raw += queued
        return len(queued)

    async def _fill(self, nxt: _Next) -> None:
        """`_take` up to the batch limit, `slice_max` messages at a time with a yield to the
        event loop between two: decoding a full batch (2,048) in one step kept an HTTP request
        (a command) waiting for it."""
        while self._take(nxt, self.slice_max) >= self.slice_max and len(nxt.raw) < self._limit():
            await asyncio.sleep(0)

    async def _commit(self, nxt: _Next) -> None:
        try:
            await self._process(nxt.raw, nxt)
            if self.on_processed is not None:
                self.on_processed(nxt.arrivals, time.monotonic())
        except asyncio.CancelledError:
            raise
        except Exception:  # the device re-sends what we did not acknowledge
            log.exception("ingest batch failed size=%d; not acknowledged", len(nxt.raw))

    async def _maybe_linger(self) -> None:
        """Wait up to `linger_s` for more messages if the batch would be tiny and no reply
        waits (see the class docstring)."""
        if len(self.priority) > 1 or self.queue.qsize() + 1 >= self.linger_below:
            return
        if self.queue.empty() and self._gap is not None and self._gap > self.alone_s:
            return  # alone
        loop = asyncio.get_running_loop()
        self._linger = fut = loop.create_future()
        timer = loop.call_later(self.linger_s, self._end_linger)
        try:
            await fut
        finally:
            timer.cancel()
            self._linger = None

    async def _process_replies(self, batch: list[tuple[str, bytes]]) -> None:
        """Replies, on the command file's writer (none waits for an event batch); the main
        file's bookkeeping (counters, last seen) follows in the background: the next replies
        do not wait for it."""
        samples: dict[str, str] = {}
        decoded, rejections = decode_batch(batch, samples)
        assert self.db.commands is not None
        written: asyncio.Future[Effects]
        if decoded and all(isinstance(m, Reply) and m.status == "accepted" for _, m in decoded):
            # nobody waits for an `accepted`: it shares the final answer's commit, which
            # usually follows at once, instead of taking a commit of its own before it (the
            # lane does not wait for it; the writer keeps the order). A crash before it
            # commits loses a non-final step the device says again when the command is resent.
            written = self.db.commands.defer(apply_replies, decoded, rejections, len(batch),
                                             self.clock())
        else:
            eff = await self.db.commands.write_grouped(apply_replies, decoded, rejections,
                                                       len(batch), self.clock())
            written = asyncio.get_running_loop().create_future()
            written.set_result(eff)
        self.batches += 1
        task = asyncio.get_running_loop().create_task(self._book_replies(written, samples))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _book_replies(self, written: asyncio.Future[Effects], samples: dict[str, str]
                            ) -> None:
        try:
            eff = await written
        except Exception:  # the command is sent again, the device answers it again
            log.exception("reply batch failed")
            return
        try:
            await self.db.write_grouped(book_replies, eff, self.clock())
        except Exception:  # counters only: the replies themselves are stored
            log.exception("reply bookkeeping failed size=%d", eff.received)
        await self._after(eff, samples)

    async def _process(self, batch: list[tuple[str, bytes]], nxt: _Next | None = None) -> None:
        # validate on the loop (`_take`, while the writer works on the batch before): the
        # writer thread (the serial stage) only applies
        if nxt is None:
            nxt = _Next()
            nxt.decoded, nxt.rejections = decode_batch(batch, nxt.samples)
        samples = nxt.samples
        eff = await self.db.write_grouped(apply_decoded, nxt.decoded, nxt.rejections, len(batch),
                                          self.clock())
        self.batches += 1
        await self._after(eff, samples)

    async def _after(self, eff: Effects, samples: dict[str, str]) -> None:
        """What a committed batch asks for: log its rejections, publish its acks, new epochs
        and rebirths, tell its births."""
        if eff.rejections:
            self._log_rejections(eff, samples)
        now = self.clock()
        sends: list[Coroutine[Any, Any, Any]] = []
        if self.publish_many is None:
            sends += [self._publish_ack(dev, epoch, upto, now)
                      for dev, (epoch, upto) in eff.acks.items()]
        elif eff.acks:  # written now, in order; their PUBACKs settle futures, no task each
            for fut in self.publish_many([
                    (protocol.topic(dev, "ctl"), protocol.encode_ack(dev, epoch, upto, now))
                    for dev, (epoch, upto) in eff.acks.items()]):
                self._sending.add(fut)
                fut.add_done_callback(self._ack_done)
        for dev, (epoch, upto, new) in eff.new_epochs.items():
            log.info("new epoch requested device=%s epoch=%s upto=%d new=%s", dev, epoch, upto,
                     new)
            sends.append(self._publish(protocol.topic(dev, "ctl"),
                                       protocol.encode_ctl_new_epoch(dev, epoch, upto, new, now)))
        mono = time.monotonic()
        if len(self._last_rebirth) > REBIRTH_MEMORY:  # a flood of made-up device ids
            self._last_rebirth = {d: t for d, t in self._last_rebirth.items()
                                  if mono - t < self.rebirth_interval_s}
            if len(self._last_rebirth) > REBIRTH_MEMORY:  # at worst a rebirth asked again
                self._last_rebirth.clear()
        asked = []
        for dev in eff.rebirths:
            if mono - self._last_rebirth.get(dev, -1e9) >= self.rebirth_interval_s:
                self._last_rebirth[dev] = mono
                asked.append(dev)
                sends.append(self._publish(protocol.topic(dev, "ctl"),
                                           protocol.encode_ctl_rebirth(dev, now)))
        if asked:  # one line per batch, rate-limited like the rejections that cause most
            self.rebirth_log("rebirth", "device=%s", asked[0], count=len(asked))
        self._schedule_flush()
        # not awaited: the broker's PUBACKs come back behind whatever the broker sends us,
        # and a reply waiting in the priority lane must not wait for them (the acks are
        # written in order now; a failed one is counted and the device re-sends)
        loop = asyncio.get_running_loop()
        for send in sends:
            task = loop.create_task(send)
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        while len(self._sending) > self.acks_in_flight_max:  # bound memory and packet ids
            await asyncio.wait(set(self._sending), return_when=asyncio.FIRST_COMPLETED)
        if self.on_birth is not None:
            for dev in eff.births:
                result = self.on_birth(dev)
                if asyncio.iscoroutine(result):
                    await result

    def _log_rejections(self, eff: Effects, samples: dict[str, str]) -> None:
        """One line per reason of this batch (count + one example), rate-limited per reason;
        what is held back is reported by a flush once the interval has passed."""
        for reason, n in sorted(eff.rejections.items()):
            self.rejection_log(reason, "%s", eff.samples.get(reason) or samples.get(reason, ""),
                               count=n)

    def _schedule_flush(self) -> None:
        if self._flush_timer is None and (self.rejection_log.holding
                                          or self.rebirth_log.holding):
            self._flush_timer = asyncio.get_running_loop().call_later(
                self.rejection_log.every_s, self._flush_rejections)

    def _flush_rejections(self) -> None:
        self._flush_timer = None
        self.rejection_log.flush()
        self.rebirth_log.flush()
        self._schedule_flush()  # keys not due yet

    def _ack_done(self, fut: asyncio.Future[Any]) -> None:
        self._sending.discard(fut)
        if fut.cancelled():
            return  # shutdown
        exc = fut.exception()
        if exc is not None:  # the device re-sends and we ack again
            self.ack_failures += 1
            log.warning("ack publish failed error=%r", exc)

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
