"""Webhooks: store systems subscribe to event types and get signed HTTP POSTs.

Nothing is lost, nothing is reordered:
* **Outbox in the event's transaction.** A stream hook (`Store.stream_hooks`) runs inside the
  transaction that appends a stream item (a device event, a command change, a device going
  offline ...) and inserts one `webhook_deliveries` row per matching subscription. The event
  and its deliveries commit together or not at all, so a gateway crash between the two is
  impossible and a restart resumes from the table.
* **At least once, with an id.** A delivery is `pending` until the receiver answers 2xx.
  Every attempt carries the same `X-Phygital-Delivery` id (also `delivery` in the body) for
  the receiver to deduplicate on: a crash after the receiver's 2xx but before the gateway
  recorded it means a second delivery of the same id.
* **Per-subscription order.** Only the oldest pending delivery of a subscription is ever in
  flight; a failing receiver holds back its own queue and nobody else's.
* **Retries** back off exponentially with jitter (`backoff_min_s` doubling up to
  `backoff_max_s`, each delay drawn from [50 %, 100 %]) and never give up; deleting the
  subscription drops its queue.
* **A bounded queue** (issue 17): a subscription holds at most `max_pending` undelivered
  deliveries (`[webhooks] max_pending`). While its receiver stays down, each new delivery past
  the cap drops the **oldest** pending one, in the same transaction, and counts it in the
  subscription's `dropped` (`pe_webhook_dropped_total`); `gateway/integrations/capacity.py`
  raises an alert when that count moves. Drop-oldest, because what a store system wants when
  it comes back is the current state of the store; a receiver sees the gap in `stream_id` and
  may fetch device events again from `GET /events` (within `[retention] events_days`).

Signature (docs/webhooks.md): `X-Phygital-Signature: sha256=<hex>` where hex is
HMAC-SHA256(secret, f"{timestamp}." + body) and `X-Phygital-Timestamp` is the Unix time in
seconds of the attempt; receivers reject timestamps older than a few minutes (replay).
`verify_signature` is the reference check.
"""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import httpx

from gateway.devices.commands import now_ms
from gateway.http.redact import redact_item
from gateway.storage.db import Database
from gateway.storage.store import Store, StreamItem

log = logging.getLogger("gateway.webhooks")

PATTERN_RE = re.compile(r"[a-z0-9_.*-]{1,64}\Z")
SIGNATURE_HEADER = "X-Phygital-Signature"
TIMESTAMP_HEADER = "X-Phygital-Timestamp"
DELIVERY_HEADER = "X-Phygital-Delivery"
EVENT_HEADER = "X-Phygital-Event"


class UnknownSubscription(LookupError):
    pass


# -- pure parts -------------------------------------------------------------------------------

def event_type(item: StreamItem) -> str:
    """The type a subscriber filters on: `event.<device event type>` (`event.tag.placed`),
    `device.<online|offline|birth>`, `alert.<raised|repeated|acked|resolved>`,
    `command.<status>` (`command.late.<status>` for a device answer that came after
    `expired`: the status stays `expired`), `<kind>.<type>` for the rest
    (`locker.order.ready`)."""
    d = item.data
    if item.kind == "event":
        return f"event.{d.get('type')}"
    if item.kind in ("device", "alert"):
        return f"{item.kind}.{d.get('change')}"
    if item.kind == "command":
        return f"command.{d.get('change') or d.get('status')}"
    return f"{item.kind}.{d.get('type', 'changed')}"


def matches(patterns: list[str] | tuple[str, ...], etype: str) -> bool:
    """Shell-style wildcards: `*` matches anything, dots included (`event.*`, `*.offline`)."""
    return any(fnmatchcase(etype, p) for p in patterns)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str | int | None, body: bytes, signature: str, *,
                     tolerance_s: int = 300, now: float | None = None) -> bool:
    """Reference check for receivers: right HMAC and a timestamp within `tolerance_s`."""
    if timestamp is None:  # no timestamp header
        return False
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def backoff_s(attempts: int, lo: float, hi: float, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempts` (1 = after the first failure): `lo * 2**(n-1)`
    capped at `hi`, then drawn from [50 %, 100 %] of that so receivers coming back up are
    not hit by every gateway at the same instant."""
    base = min(hi, lo * 2 ** min(attempts - 1, 30))
    return base * (rng or random).uniform(0.5, 1.0)


Reveal = Callable[[str, dict[str, Any]], dict[str, Any]]


def delivery_data(d: dict[str, Any], reveal: Reveal | None = None) -> dict[str, Any]:
    """The `data` of a delivery: the stream item as committed, secrets redacted
    (gateway/http/redact.py); for a subscription with `include_secrets`, `reveal(kind, data)` adds
    what only it may get (the plain pickup code of `locker.order.ready`/`.code`, while the
    gateway still holds it in memory)."""
    kind = d["type"].partition(".")[0]
    data = redact_item(kind, json.loads(d["data"]))
    if reveal is not None and d.get("include_secrets"):
        data = reveal(kind, data)
    return data


def delivery_body(d: dict[str, Any], reveal: Reveal | None = None) -> bytes:
    """The POST body: the same bytes on every attempt of a delivery (with `include_secrets`,
    a pickup code becomes null once the gateway no longer holds it: 10 min, or a restart)."""
    return json.dumps({"delivery": d["id"], "subscription": d["sub"], "type": d["type"],
                       "stream_id": d["stream_id"], "created": d["created"],
                       "data": delivery_data(d, reveal)},
                      separators=(",", ":"), ensure_ascii=False).encode()


def validate_patterns(events: list[str]) -> list[str]:
    if not events:
        raise ValueError("events: give at least one event type pattern, e.g. [\"event.*\"]")
    bad = [p for p in events if not PATTERN_RE.match(p)]
    if bad:
        raise ValueError(f"events: invalid pattern(s) {bad}: use lower-case types with `*` "
                         "wildcards, e.g. event.tag.*, device.offline, command.*")
    return list(dict.fromkeys(events))


# -- store operations (writer thread) ---------------------------------------------------------

class Fanout:
    """The stream hook: one pending delivery per matching subscription, in the item's
    transaction, and the cap: past `max_pending` pending deliveries of a subscription, its
    oldest pending ones go (counted in `dropped`). Holds the subscriptions in memory (writer
    thread only), reloaded by every write that changes them."""

    def __init__(self, max_pending: int = 100_000) -> None:
        self.subs: list[tuple[str, list[str]]] = []
        self.max_pending = max_pending

    def load(self, store: Store) -> None:
        self.subs = [(r[0], json.loads(r[1])) for r in store.conn.execute(
            "SELECT id, events FROM webhook_subscriptions ORDER BY id")]

    def __call__(self, store: Store, item: StreamItem) -> None:
        if not self.subs:
            return
        etype = event_type(item)
        targets = [sid for sid, pats in self.subs if matches(pats, etype)]
        if targets:
            data = json.dumps(item.data, separators=(",", ":"), ensure_ascii=False)
            now = now_ms()
            store.conn.executemany(
                "INSERT INTO webhook_deliveries (sub, stream_id, type, data, created, next_at) "
                "VALUES (?,?,?,?,?,?)", [(sid, item.id, etype, data, now, now) for sid in targets])
            for sid in targets:  # `pending` is kept by the triggers of migration 20
                over = store.conn.execute("SELECT pending FROM webhook_subscriptions WHERE id = ?",
                                          (sid,)).fetchone()[0] - self.max_pending
                if over > 0:
                    drop_oldest(store, sid, over)


def drop_oldest(store: Store, sub: str, n: int) -> int:
    """Drop the `n` oldest pending deliveries of `sub` (an index walk on webhook_pending) and
    count them in the subscription's `dropped`. In the caller's transaction."""
    gone = store.conn.execute(
        "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries "
        "WHERE sub = ? AND status = 'pending' ORDER BY id LIMIT ?)", (sub, n)).rowcount
    store.conn.execute("UPDATE webhook_subscriptions SET dropped = dropped + ? WHERE id = ?",
                       (gone, sub))
    return gone


def install(store: Store, fanout: Fanout) -> None:
    fanout.load(store)
    if fanout not in store.stream_hooks:
        store.stream_hooks.append(fanout)


def _create_tx(store: Store, fanout: Fanout, sub: dict[str, Any]) -> None:
    with store.transaction():
        store.conn.execute(
            "INSERT INTO webhook_subscriptions (id, url, secret, events, description, created, "
            "include_secrets) VALUES (?,?,?,?,?,?,?)",
            (sub["id"], sub["url"], sub["secret"], json.dumps(sub["events"]),
             sub["description"], sub["created"], int(sub.get("include_secrets", False))))
    fanout.load(store)


def _delete_tx(store: Store, fanout: Fanout, sub_id: str) -> bool:
    with store.transaction():
        gone = store.conn.execute("DELETE FROM webhook_subscriptions WHERE id = ?",
                                  (sub_id,)).rowcount > 0
    fanout.load(store)
    return gone


def _record_tx(store: Store, delivery: int, sub: str, ok: bool, code: int | None,
               error: str | None, now: int, next_at: int) -> None:
    with store.transaction():
        if ok:
            store.conn.execute(
                "UPDATE webhook_deliveries SET status='delivered', attempts=attempts+1, "
                "last_attempt=?, last_code=?, last_error=NULL, delivered_at=? WHERE id=?",
                (now, code, now, delivery))
            store.conn.execute(
                "UPDATE webhook_subscriptions SET delivered=delivered+1, failing=0, "
                "last_attempt=?, last_success=? WHERE id=?", (now, now, sub))
        else:
            store.conn.execute(
                "UPDATE webhook_deliveries SET attempts=attempts+1, last_attempt=?, "
                "last_code=?, last_error=?, next_at=? WHERE id=?",
                (now, code, error, next_at, delivery))
            store.conn.execute(
                "UPDATE webhook_subscriptions SET failures=failures+1, failing=failing+1, "
                "last_attempt=?, last_error=? WHERE id=?", (now, error, sub))


def _prune_tx(store: Store, keep: int) -> int:
    with store.transaction():
        return store.conn.execute(
            "DELETE FROM webhook_deliveries WHERE status='delivered' AND id <= "
            "(SELECT MAX(id) FROM webhook_deliveries WHERE status='delivered') - ?",
            (keep,)).rowcount


# -- queries (reader thread) ------------------------------------------------------------------

def due_heads(store: Store) -> list[dict[str, Any]]:
    """The oldest pending delivery of every subscription, with where to send it."""
    rows = store.conn.execute(
        "SELECT d.*, s.url, s.secret, s.include_secrets FROM webhook_deliveries d "
        "JOIN webhook_subscriptions s ON s.id = d.sub WHERE d.id IN "
        "(SELECT MIN(id) FROM webhook_deliveries WHERE status='pending' GROUP BY sub)")
    return [dict(r) for r in rows]


def backlog(store: Store) -> int:
    """Pending deliveries of every subscription (the triggers' counts: no scan)."""
    return int(store.conn.execute(
        "SELECT COALESCE(SUM(pending), 0) FROM webhook_subscriptions").fetchone()[0])


def queues(store: Store) -> list[dict[str, Any]]:
    """Each subscription's queue: `id`, `pending`, `dropped` (no URL: a URL may hold a
    credential, and this is shown to the `read` scope)."""
    return [{"id": r[0], "pending": r[1], "dropped": r[2]} for r in store.conn.execute(
        "SELECT id, pending, dropped FROM webhook_subscriptions ORDER BY id")]


def _public_sub(row: sqlite3.Row, stats: dict[str, Any]) -> dict[str, Any]:
    d = dict(row)
    d.pop("secret")  # shown once, in the answer that created it; never again
    d["events"] = json.loads(d["events"])
    d["include_secrets"] = bool(d.get("include_secrets"))
    return d | stats


def list_subscriptions(store: Store, sub_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM webhook_subscriptions"
    args: tuple[Any, ...] = ()
    if sub_id is not None:
        sql += " WHERE id = ?"
        args = (sub_id,)
    out = []
    for row in store.conn.execute(sql + " ORDER BY created, id", args).fetchall():
        nxt = store.conn.execute(
            "SELECT next_at, attempts, created FROM webhook_deliveries "
            "WHERE sub = ? AND status = 'pending' ORDER BY id LIMIT 1", (row["id"],)).fetchone()
        out.append(_public_sub(row, {
            "pending": row["pending"], "oldest_pending_created": None if nxt is None else nxt[2],
            "next_attempt": None if nxt is None else nxt[0],
            "head_attempts": None if nxt is None else nxt[1]}))
    return out


def list_deliveries(store: Store, sub_id: str, status: str | None, after: int,
                    limit: int) -> list[dict[str, Any]]:
    sql = "SELECT * FROM webhook_deliveries WHERE sub = ? AND id > ?"
    args: list[Any] = [sub_id, after]
    if status is not None:
        sql += " AND status = ?"
        args.append(status)
    rows = store.conn.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
    return [dict(r) | {"data": delivery_data(dict(r))} for r in rows]  # never a code


# -- the asynchronous edge --------------------------------------------------------------------

@dataclass(frozen=True)
class WebhookSettings:
    backoff_min_s: float = 1.0
    backoff_max_s: float = 300.0
    timeout_s: float = 10.0
    delivered_keep: int = 10_000      # delivered rows kept for GET .../deliveries
    max_pending: int = 100_000        # undelivered rows per subscription; past it, drop-oldest


class WebhookService:
    """Subscriptions (create/list/delete) and the dispatcher task (`run`)."""

    def __init__(self, db: Database, settings: WebhookSettings = WebhookSettings(), *,
                 clock: Callable[[], int] = now_ms,
                 on_attempt: Callable[[bool, float], None] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.on_attempt = on_attempt      # metrics: (ok, seconds)
        self.reveal: Reveal | None = None  # include_secrets: adds plain codes (gateway/app.py)
        self.fanout = Fanout(settings.max_pending)
        self._wake = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        await self.db.write(install, self.fanout)

    def notify(self) -> None:
        """Something committed: look for new deliveries."""
        self._wake.set()

    async def create(self, url: str, events: list[str], secret: str | None = None,
                     description: str | None = None,
                     include_secrets: bool = False) -> dict[str, Any]:
        sub: dict[str, Any] = {"id": "wh-" + secrets.token_hex(6), "url": url,
               "secret": secret or secrets.token_urlsafe(32),
               "events": validate_patterns(events), "description": description,
               "created": self.clock(), "include_secrets": include_secrets}
        await self.db.write(_create_tx, self.fanout, sub)
        log.info("webhook subscribed id=%s url=%s events=%s include_secrets=%s", sub["id"], url,
                 ",".join(sub["events"]), include_secrets)
        return (await self.get(sub["id"])) | {"secret": sub["secret"]}

    async def delete(self, sub_id: str) -> None:
        if not await self.db.write(_delete_tx, self.fanout, sub_id):
            raise UnknownSubscription(sub_id)
        log.info("webhook deleted id=%s", sub_id)

    async def list(self) -> list[dict[str, Any]]:
        return await self.db.read(list_subscriptions)

    async def get(self, sub_id: str) -> dict[str, Any]:
        got = await self.db.read(list_subscriptions, sub_id)
        if not got:
            raise UnknownSubscription(sub_id)
        return got[0]

    async def deliveries(self, sub_id: str, status: str | None = None, after: int = 0,
                         limit: int = 100) -> builtins.list[dict[str, Any]]:  # `list` is a method here
        await self.get(sub_id)
        return await self.db.read(list_deliveries, sub_id, status, after, limit)

    async def backlog(self) -> int:
        return await self.db.read(backlog)

    async def queues(self) -> builtins.list[dict[str, Any]]:
        return await self.db.read(queues)

    async def run(self) -> None:
        last_prune = time.monotonic()
        async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
            try:
                while True:
                    self._wake.clear()
                    now = self.clock()
                    next_due: int | None = None
                    # no subscription, no delivery (they cascade): skip the query on the
                    # ingest hot path (every commit wakes this loop)
                    heads = await self.db.read(due_heads) if self.fanout.subs else []
                    for head in heads:
                        if head["sub"] in self._inflight:
                            continue
                        if head["next_at"] <= now:
                            task = asyncio.create_task(self._attempt(client, head))
                            self._inflight[head["sub"]] = task
                        else:
                            next_due = min(next_due or head["next_at"], head["next_at"])
                    timeout = None if next_due is None else max(0.0, (next_due - now) / 1000)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    if time.monotonic() - last_prune > 60:
                        last_prune = time.monotonic()
                        await self.db.write(_prune_tx, self.settings.delivered_keep)
            finally:
                for task in self._inflight.values():
                    task.cancel()
                await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _attempt(self, client: httpx.AsyncClient, d: dict[str, Any]) -> None:
        try:
            body = delivery_body(d, self.reveal)
            ts = int(time.time())
            headers = {"content-type": "application/json", DELIVERY_HEADER: str(d["id"]),
                       EVENT_HEADER: d["type"], TIMESTAMP_HEADER: str(ts),
                       SIGNATURE_HEADER: sign(d["secret"], ts, body)}
            t0 = time.monotonic()
            code: int | None = None
            try:
                r = await client.post(d["url"], content=body, headers=headers)
                code = r.status_code
                ok, error = 200 <= code < 300, None if 200 <= code < 300 else f"HTTP {code}"
            except httpx.HTTPError as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"[:500]
            if self.on_attempt is not None:
                self.on_attempt(ok, time.monotonic() - t0)
            now = self.clock()
            delay = backoff_s(d["attempts"] + 1, self.settings.backoff_min_s,
                              self.settings.backoff_max_s)
            await self.db.write(_record_tx, d["id"], d["sub"], ok, code, error, now,
                                now + int(delay * 1000))
            if not ok:
                log.warning("webhook attempt failed id=%s delivery=%d attempts=%d error=%s "
                            "retry_in=%.1fs", d["sub"], d["id"], d["attempts"] + 1, error, delay)
        except Exception:  # recorded nowhere else; the dispatcher retries
            log.exception("webhook attempt crashed delivery=%s", d.get("id"))
            await asyncio.sleep(self.settings.backoff_min_s)  # no hot loop on a persistent bug
        finally:
            self._inflight.pop(d["sub"], None)
            self._wake.set()
