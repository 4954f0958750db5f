"""Commands with identity: idempotent submission, redelivery, expiry and outcomes.

The pure core is `reply_transition` (what a device reply does to a command's status); the
`apply_reply`/`expire_due` functions apply it to the store inside a transaction, and
`CommandService` is the asynchronous edge (publishing, resend ticks, waiting for outcomes).

Status machine (docs/protocol.md, "Commands"):

    queued ─publish acked by broker─▶ sent ─reply accepted─▶ accepted
       │                               │                       │
       └──────────── final reply (done / rejected / failed) ◀──┘   → final, never overwritten
       └──────────── no final reply by deadline + 2 s ──────▶ expired
    expired ── late final reply ──▶ expired, late = true, late_outcome = {status, reason, result, at}

`final` is final: once a command is reported final, its status, reason and result never change,
so a caller that stops at `final` has seen the last word on it. A device answer that arrives
after `expired` tells what really happened, so it is kept beside it (`late_outcome`, the first
one only), streamed as `command.late.<status>` and, when the device did or started something
(`done`, `failed`), raised as a staff alert (gateway/devices/alerts.py).
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gateway.devices import protocol
from gateway.devices.cmdtrace import TRACE
from gateway.devices.protocol import ProtocolError, Reply
from gateway.http.redact import redact_args
from gateway.storage.db import Database
from gateway.storage.store import (
    FINAL_STATUSES,
    PENDING_STATUSES,
    Store,
    StreamItem,
    public_command,
)

log = logging.getLogger("gateway.commands")

IDEMPOTENCY_KEY_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}\Z")
COMMAND_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")
DEVICE_FINAL = ("done", "rejected", "failed")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- pure core --------------------------------------------------------------------------------

def reply_transition(current: str, incoming: str) -> tuple[str, bool] | None:
    """`(status, late)` for a command in `current` receiving a reply `incoming`: the new status,
    or (`expired`, True) for a final answer that came after `expired` (kept beside it, the
    status stays); None to ignore the reply (a final status never changes; `accepted` never
    follows one)."""
    if current in DEVICE_FINAL:
        return None
    if current == "expired":
        return ("expired", True) if incoming in DEVICE_FINAL else None
    if incoming == "accepted":
        return None if current == "accepted" else ("accepted", False)
    return incoming, False


def is_due_for_send(cmd: dict[str, Any], now: int, resend_ms: int) -> bool:
    """A pending command goes out while its device is online, before its deadline, at most
    every `resend_ms`."""
    return (cmd["status"] in PENDING_STATUSES and cmd.get("device_online", False)
            and now < cmd["deadline"]
            and (cmd["last_sent"] is None or now - cmd["last_sent"] >= resend_ms))


# -- store operations (run on the writer thread, inside a transaction) -----------------------

def apply_reply(store: Store, reply: Reply, now: int) -> tuple[dict[str, Any] | None, str | None]:
    """Apply a device reply. Returns `(updated record or None, rejection reason or None)`."""
    cmd = store.get_command(reply.id)
    if cmd is None or cmd["device"] != reply.dev:
        return None, "unknown-command"
    step = reply_transition(cmd["status"], reply.status)
    if step is None:
        log.info("reply ignored command=%s status=%s reply=%s", reply.id, cmd["status"],
                 reply.status)
        return None, None
    status, late = step
    if late:
        updated = store.record_late_outcome(reply.id, status=reply.status, reason=reply.reason,
                                            result=reply.result, now=now)
        if updated is not None:
            log.warning("late outcome command=%s device=%s name=%s status=expired late=%s "
                        "reason=%s: the device answered after the caller was told it expired",
                        reply.id, reply.dev, cmd["name"], reply.status, reply.reason)
        return updated, None
    final = status in FINAL_STATUSES
    updated = store.update_command(reply.id, status=status, now=now, expect=(cmd["status"],),
                                   reason=reply.reason if final else None,
                                   result=reply.result if final else None)
    if TRACE is not None and final:
        TRACE.reply_applied(reply.id, reply.dev)
    if updated is not None:
        log.info("command status command=%s device=%s status=%s", reply.id, reply.dev, status)
    return updated, None


def expire_due(store: Store, now: int, grace_ms: int) -> list[dict[str, Any]]:
    """Mark `expired` every pending command whose deadline passed `grace_ms` ago."""
    out = []
    with store.transaction():
        rows = store.conn.execute(
            "SELECT id FROM commands WHERE status IN ('queued','sent','accepted') "
            "AND deadline + ? <= ?", (grace_ms, now)).fetchall()
        for (cid,) in rows:
            cmd = store.update_command(cid, status="expired", now=now, expect=PENDING_STATUSES,
                                       reason="timeout")
            if cmd is not None:
                log.info("command expired command=%s device=%s", cid, cmd["device"])
                out.append(cmd)
    return out


class UnknownDevice(LookupError):
    pass


class IdempotencyConflict(ValueError):
    pass


class CommandRejected(ValueError):
    """The request cannot become a command (bad name, bad args, too large)."""


def _submit_tx(store: Store, *, device: str, name: str, args: dict[str, Any], key: str,
               deadline: int, now: int, new_id: str) -> tuple[dict[str, Any], bool, bool]:
    if TRACE is not None:
        TRACE.mark(new_id, "submit_tx")
    with store.transaction():
        dev = store.get_device(device)
        if dev is None:
            raise UnknownDevice(device)
        existing = store.find_command(device, key)
        if existing is not None:
            if existing["name"] != name or existing["args"] != args:
                raise IdempotencyConflict(
                    f"idempotency key {key!r} was already used for command {existing['id']} "
                    f"({existing['name']} {redact_args(existing['name'], existing['args'])}) "
                    f"on {device}; use a new key for a different command")
            return existing, False, dev["online"]
        cmd = store.insert_command(id=new_id, device=device, name=name, args=args, idem_key=key,
                                   deadline=deadline, now=now)
        return cmd, True, dev["online"]


def _record_send(store: Store, command_id: str, now: int) -> None:
    with store.transaction():
        store.record_send(command_id, now)


# -- asynchronous edge ------------------------------------------------------------------------

def _resolve(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class Publisher(Protocol):
    def __call__(self, topic: str, payload: bytes, *, qos: int = 1,
                 retain: bool = False) -> Awaitable[None]: ...


class CommandService:
    """Submit commands, deliver them until a final answer or expiry, and wait for outcomes."""

    def __init__(self, db: Database, publish: Publisher, *, resend_s: float = 2.0,
                 grace_s: float = 2.0, tick_s: float = 0.25, send_wait_s: float = 1.0,
                 clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        # the command file's commits wake the waiters at once (`_committed`)
        listeners = getattr(db, "command_listeners", None)  # (None: a test's bare service)
        if listeners is not None:
            listeners.append(self._committed)
        self.publish = publish
        self.resend_ms = int(resend_s * 1000)
        self.grace_ms = int(grace_s * 1000)
        self.tick_s = tick_s
        self.send_wait_s = send_wait_s
        self.clock = clock
        self.publish_failures = 0
        self._waiters: dict[str, set[asyncio.Future[dict[str, Any]]]] = {}
        self._sending: set[str] = set()
        # command id -> clock of its last publish: a tick must not send it again before
        # `resend_ms` because its `sent` record has not committed yet (the record lags)
        self._published: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_submit: Callable[[float], None] | None = None  # told each command's timeout
        # told when no submitted command is waiting for its outcome any more (the ingest goes
        # back to full-size batches: `IngestWorker.relax`)
        self.on_settled: Callable[[], None] | None = None
        self._urgent: dict[str, float] = {}  # submitted, not final: id → monotonic deadline

    @property
    def cdb(self) -> Database:
        """The command file (issue 18): every command write and read goes there, so none
        waits for the event writer (`Database.commands`, open once `db` is)."""
        cdb = self.db.commands
        if cdb is None:
            raise RuntimeError("the database is not open (no command file)")
        return cdb

    # API side

    async def submit(self, device: str, name: str, args: dict[str, Any], idempotency_key: str,
                     timeout_s: float, *, wait_send: bool = True) -> tuple[dict[str, Any], bool]:
        """Create (or find, for a known `(device, key)`) a command; returns `(record, created)`.

        `wait_send=False`: return once the command is published, without waiting for the
        `sent` record to commit (a caller that waits for the outcome next: that write then
        runs alongside the device's answer instead of before it; the reply's transition
        accepts a `queued` command).

        Raises UnknownDevice, IdempotencyConflict or CommandRejected."""
        if not IDEMPOTENCY_KEY_RE.match(idempotency_key):
            raise CommandRejected("idempotency_key must be 1-128 characters of "
                                  "A-Z a-z 0-9 . _ : @ / + = -")
        if not COMMAND_NAME_RE.match(name):
            raise CommandRejected(f"bad command name {name!r}: use lowercase letters, digits, "
                                  "'_', '.', '-' (e.g. 'blink')")
        if self.on_submit is not None:
            self.on_submit(min(timeout_s, 5.0))
        new_id = "c-" + secrets.token_hex(8)
        self._urgent[new_id] = time.monotonic() + min(timeout_s, 5.0)
        cmd: dict[str, Any] | None = None
        try:
            cmd, created = await self._submit(device, name, args, idempotency_key, timeout_s,
                                              wait_send, new_id)
            return cmd, created
        finally:
            urgent = self._urgent.pop(new_id, None)
            if cmd is not None and urgent is not None and not cmd["final"]:
                self._urgent[cmd["id"]] = urgent  # (an existing command's id, if not new)
            self._maybe_settled()

    def _maybe_settled(self) -> None:
        """Tell `on_settled` when no submitted command waits for its outcome any more (those
        past their deadline count as settled)."""
        now = time.monotonic()
        for cid in [c for c, until in self._urgent.items() if until <= now]:
            del self._urgent[cid]
        if not self._urgent and self.on_settled is not None:
            self.on_settled()

    async def _submit(self, device: str, name: str, args: dict[str, Any], idempotency_key: str,
                      timeout_s: float, wait_send: bool, new_id: str
                      ) -> tuple[dict[str, Any], bool]:
        now = self.clock()
        deadline = now + max(1, round(timeout_s * 1000))
        if TRACE is not None:
            TRACE.mark(new_id, "submit")
        try:  # the device must be able to take it: check the envelope size now
            protocol.encode_cmd(device, new_id, name, args, deadline, now)
        except (ProtocolError, ValueError, TypeError) as exc:
            raise CommandRejected(f"command does not fit the protocol: {exc}") from None
        cmd, created, online = await self.cdb.write_grouped(
            _submit_tx, device=device, name=name, args=args, key=idempotency_key,
            deadline=deadline, now=now, new_id=new_id)
        if TRACE is not None:
            TRACE.mark(new_id, "submit_ok")
        if created:
            log.info("command submitted command=%s device=%s name=%s deadline=%d online=%s",
                     cmd["id"], device, name, deadline, online)
            if online:
                # deliver now, but do not hold the caller longer than `send_wait_s` if the
                # broker is slow: the send goes on in the background, and ticks retry it
                published = asyncio.get_running_loop().create_future()
                send = asyncio.get_running_loop().create_task(
                    self._send(cmd, published, lazy=not wait_send))
                self._tasks.add(send)
                send.add_done_callback(self._tasks.discard)
                await asyncio.wait({send if wait_send else published}, timeout=self.send_wait_s)
                if wait_send:
                    latest = await self.cdb.read(Store.get_command, cmd["id"])
                    cmd = latest if latest is not None else cmd
        return public_command(cmd), created

    async def get(self, command_id: str) -> dict[str, Any] | None:
        cmd = await self.cdb.read(Store.get_command, command_id)
        return None if cmd is None else public_command(cmd)

    async def wait(self, command_id: str, timeout: float) -> dict[str, Any] | None:
        """The record once it is final, or as it is after `timeout` seconds.

        The waiter is registered before the record is read, and the read races the outcome:
        a reply committed meanwhile wakes the caller at once, whatever the reader thread
        (shared with the services' reads) is busy with."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiters.setdefault(command_id, set()).add(fut)
        read: asyncio.Future[dict[str, Any] | None] = loop.create_task(self.get(command_id))
        deadline = loop.time() + timeout
        try:
            waiting: set[asyncio.Future[Any]] = {read, fut}
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not fut.done() and read.done():
                cmd = read.result()
                if cmd is None or cmd["final"]:  # unknown, or final before we registered
                    return self._traced(command_id, cmd)
                await asyncio.wait({fut}, timeout=max(0.0, deadline - loop.time()))
            if fut.done():
                return self._traced(command_id, fut.result())
            return await self.get(command_id)  # timed out: as it is now
        finally:
            read.cancel()
            waiters = self._waiters.get(command_id)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._waiters[command_id]

    @staticmethod
    def _traced(command_id: str, cmd: dict[str, Any] | None) -> dict[str, Any] | None:
        if TRACE is not None and cmd is not None:
            TRACE.finish(command_id)
        return cmd

    def _committed(self, items: list[StreamItem]) -> None:
        """On the loop: the command file committed these changes."""
        for item in items:
            self.notify(item.data)

    def notify(self, record: dict[str, Any]) -> None:
        """Called on the loop for every committed change of a command."""
        if record["final"]:
            self._published.pop(record["id"], None)
            if self._urgent.pop(record["id"], None) is not None:
                self._maybe_settled()
            if TRACE is not None:
                TRACE.mark(record["id"], "notify")
            for fut in self._waiters.get(record["id"], ()):
                if not fut.done():
                    fut.set_result(record)

    # delivery

    async def _send(self, cmd: dict[str, Any], published: asyncio.Future[None] | None = None,
                    force: bool = False, lazy: bool = True) -> None:
        """Publish `cmd`, then record the send (in the command file). `lazy`: the record
        shares the next write's commit (the device's answer, usually) instead of taking one
        of its own before it (`Database.defer`); a crash before it only means the command is
        sent again, which the device answers from its journal. Not lazy when a caller waits
        to see `sent`."""
        cid = cmd["id"]
        now = self.clock()
        last = self._published.get(cid)
        if (cid in self._sending or now >= cmd["deadline"]
                or (not force and last is not None and now - last < self.resend_ms)):
            _resolve(published)  # being sent by another task (a tick), just sent, or too late
            return
        self._sending.add(cid)
        try:
            payload = protocol.encode_cmd(cmd["device"], cid, cmd["name"], cmd["args"],
                                          cmd["deadline"], now)
            if TRACE is not None:
                TRACE.mark(cid, "publish")
            await self.publish(protocol.topic(cmd["device"], "cmd"), payload, qos=1, retain=False)
            if len(self._published) >= 10_000:  # commands that never became final here
                del self._published[next(iter(self._published))]
            self._published[cid] = now
            if TRACE is not None:
                TRACE.mark(cid, "puback")
        except Exception as exc:  # noqa: BLE001 - any failure leaves it pending for the next tick
            self.publish_failures += 1
            log.warning("command publish failed command=%s device=%s error=%r", cid,
                        cmd["device"], exc)
            return
        finally:
            self._sending.discard(cid)
            _resolve(published)
        if lazy:
            await self.cdb.defer(_record_send, cid, self.clock())
        else:
            await self.cdb.write_grouped(_record_send, cid, self.clock())
        log.debug("command sent command=%s device=%s", cid, cmd["device"])

    def _spawn_send(self, cmd: dict[str, Any], force: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(self._send(cmd, force=force))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send_soon(self, cmds: list[dict[str, Any]]) -> None:
        """Deliver commands a service inserted in its own transaction (after it committed) now,
        rather than at the next tick: a tube diverter waits for its command in a time window."""
        for cmd in cmds:
            self._spawn_send(cmd)

    async def on_birth(self, device: str) -> None:
        """A device (re)connected: send it every pending command now."""
        for cmd in await self.cdb.read(Store.pending_commands, device):
            if self.clock() < cmd["deadline"]:
                self._spawn_send(cmd, force=True)  # it may have missed the last one

    async def tick(self) -> None:
        now = self.clock()
        await self.cdb.write(expire_due, now, self.grace_ms)
        for cmd in await self.cdb.read(Store.pending_commands):
            if is_due_for_send(cmd, now, self.resend_ms):
                self._spawn_send(cmd)

    async def run(self) -> None:
        """Resend and expire, forever (cancel to stop)."""
        try:
            while True:
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("command tick failed")
                await asyncio.sleep(self.tick_s)
        finally:
            for task in list(self._tasks):
                task.cancel()
