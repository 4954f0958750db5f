"""Over-the-air updates, the gateway's running part (docs/ota.md): the bundle store, the chunk
server on `pe/1/+/ota`, and the staged rollouts (gateway/devices/rollout.py) driven by the
journaled `ota.*` events.

* **Bundles** are files next to the database (`<db>.firmware/<version>.zip`), each checked
  whole by `ota.read_bundle` on upload and again at start (a file that fails is logged and
  left out). A version is uploaded once: the same bytes again is a no-op, other bytes under
  a known version are refused (give the build a new version).
* **Chunks**: a device asks on `pe/1/{dev}/ota` (`get` `{id, f, o, n}`; `id` = the rollout's
  id, the offer's); the answer goes on its `ctl` (`ota.chunk`, `ota.chunk_message`). Only a
  device of that rollout gets chunks, and only while the rollout runs: a halted rollout
  answers `err: halted`, so a download in progress stops (the device reports `ota.failed`).
  Requests are answered from memory in a task each, at most `MAX_IN_FLIGHT` at once (beyond
  that a request is dropped: the device asks again after 4 s).
* **Rollouts**: one task follows the `ota.*` events in `events.id` order from a cursor
  (set to the events' end when a rollout starts; woken by commits, at least every `tick_s`),
  and the offers' command outcomes and the devices' births; applies them to the running
  rollout (at most one runs at a time); saves a changed rollout and the cursor in ONE
  transaction, then submits the offers it asks for
  (`ota` commands, idempotency key `ota-<rollout id>`: an offer saved but not sent before a
  crash is sent by the next step, never twice).

The device keys come from a lookup `app.py` injects (the CoAP keys, coap-keys.json): they
are used for the offers' MACs and never leave this module.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.devices import ota, protocol, rollout
from gateway.devices.commands import CommandRejected, CommandService, IdempotencyConflict, UnknownDevice
from gateway.devices.ticker import tick_loop
from gateway.storage.db import Database
from gateway.storage.store import FINAL_STATUSES, Store

log = logging.getLogger("gateway.ota")

EVENT_PAGE = 500
MAX_IN_FLIGHT = 64        # chunk answers being published at once
DEFAULT_DEADLINE_S = 600  # a device must be back on the new version within this of its offer
MAX_DEADLINE_S = 24 * 3600

KeyLookup = Callable[[str], "bytes | None"]


class OtaError(Exception):
    """A request the gateway refuses: `status` is the HTTP status, the message what to do."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def bundle_dir(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".firmware")


# -- writer/reader thread functions ---------------------------------------------------------------

def _load_tx(store: Store) -> tuple[list[rollout.Rollout], int]:
    rows = store.conn.execute("SELECT state FROM fw_rollouts ORDER BY created, id").fetchall()
    cur = store.conn.execute("SELECT cursor FROM fw_cursor WHERE id = 1").fetchone()
    return [rollout.Rollout.from_json(json.loads(r[0])) for r in rows], (cur[0] if cur else 0)


def _events_tx(store: Store, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    hi = store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    rows = store.conn.execute(
        "SELECT id, device, type, body FROM events WHERE id > ? AND id <= ? "
        "AND type IN ('ota.installed', 'ota.failed', 'ota.rolled_back') ORDER BY id LIMIT ?",
        (after, hi, limit)).fetchall()
    events = [{"id": r[0], "device": r[1], "type": r[2], "body": json.loads(r[3])} for r in rows]
    return events, (events[-1]["id"] if len(events) == limit else hi)


def _facts_tx(store: Store, r: rollout.Rollout) -> tuple[dict[str, str], dict[str, dict[str, Any] | None]]:
    """The targets' running versions (their latest births) and their offers' commands."""
    fw: dict[str, str] = {}
    cmds: dict[str, dict[str, Any] | None] = {}
    for t in r.targets:
        row = store.conn.execute("SELECT fw FROM devices WHERE id = ?", (t.dev,)).fetchone()
        if row is not None:
            fw[t.dev] = row[0]
        if t.state == "offered":
            cmds[t.dev] = store.find_command(t.dev, offer_key(r.id))
    return fw, cmds


def _save_tx(store: Store, r: rollout.Rollout | None, cursor: int | None) -> None:
    with store.transaction():
        if r is not None:
            store.conn.execute(
                """INSERT INTO fw_rollouts (id, version, status, state, created, updated)
                   VALUES (?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET status = excluded.status,
                     state = excluded.state, updated = excluded.updated""",
                (r.id, r.version, r.status, json.dumps(r.to_json(), separators=(",", ":")),
                 r.created, r.updated))
        if cursor is not None:
            store.conn.execute("UPDATE fw_cursor SET cursor = ? WHERE id = 1", (cursor,))


def _start_tx(store: Store, r: rollout.Rollout) -> int:
    """Save a new rollout; its events start now (the cursor moves to the events' end)."""
    hi = int(store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
    _save_tx(store, r, hi)  # the writer thread: no event is inserted in between
    return hi


def _devices_tx(store: Store) -> list[dict[str, Any]]:
    return store.list_devices()


def offer_key(rid: str) -> str:
    return f"ota-{rid}"


class OtaService:
    def __init__(self, db: Database, commands: CommandService,
                 publish: Callable[..., Any], key_of: KeyLookup, store_dir: Path, *,
                 clock: Callable[[], int], tick_s: float = 1.0) -> None:
        self.db = db
        self.commands = commands
        self.publish = publish
        self.key_of = key_of
        self.store_dir = Path(store_dir)
        self.clock = clock
        self.tick_s = tick_s
        self.bundles: dict[str, ota.Bundle] = {}
        self.uploaded: dict[str, int] = {}     # version -> unix ms of the file
        self.rollouts: dict[str, rollout.Rollout] = {}
        self.cursor = 0
        self.served = 0                        # chunks answered
        self.dropped = 0                       # chunk requests refused or dropped
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifetime ---------------------------------------------------------------------------------

    async def load(self) -> None:
        if self.store_dir.is_dir():
            for path in sorted(self.store_dir.glob("*.zip")):
                try:
                    b = ota.read_bundle(path.read_bytes())
                except (ota.BundleError, OSError) as exc:
                    log.error("firmware bundle left out file=%s error=%s", path, exc)
                    continue
                if path.stem != b.version:
                    log.error("firmware bundle left out file=%s: its manifest says version %s",
                              path, b.version)
                    continue
                self.bundles[b.version] = b
                self.uploaded[b.version] = int(path.stat().st_mtime * 1000)
        rollouts, self.cursor = await self.db.read(_load_tx)
        self.rollouts = {r.id: r for r in rollouts}
        running = self._running()
        log.info("ota loaded bundles=%d rollouts=%d running=%s", len(self.bundles), len(rollouts),
                 running.id if running is not None else None)

    async def run(self) -> None:
        try:
            await tick_loop(self._wake, self.tick_s, self.step, log, "ota step")
        finally:
            for task in list(self._tasks):
                task.cancel()

    def on_commit_item(self, kind: str, data: dict[str, Any]) -> None:
        """Cheap: wake the step for what a rollout follows."""
        if self._running() is None:
            return
        if (kind == "event" and str(data.get("type", "")).startswith("ota.")) \
                or (kind == "command" and data.get("name") == "ota" and data.get("final")) \
                or kind == "device":
            self._wake.set()

    def _running(self) -> rollout.Rollout | None:
        return rollout.running(list(self.rollouts.values()))

    # -- the chunk server -------------------------------------------------------------------------

    def handle_request(self, topic: str, payload: bytes) -> None:
        """A device's chunk request over MQTT (the handler: must not wait); the answer goes on
        its `ctl`."""
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self.dropped += 1
            return
        answer = self.answer(topic, payload)
        if answer is None:
            return
        dev, msg, ok = answer
        task = asyncio.get_running_loop().create_task(self._answer(dev, msg, ok))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def coap_answer(self, topic: str, payload: bytes) -> bytes | None:
        """A CoAP device's chunk request (POST /pe/1/{dev}/ota): the answer is the response's
        payload (gateway/transport/coap.py); None: not a request (4.00)."""
        answer = self.answer(topic, payload)
        if answer is None:
            return None
        _dev, msg, ok = answer
        if ok:
            self.served += 1
        else:
            self.dropped += 1
        return msg

    def answer(self, topic: str, payload: bytes) -> tuple[str, bytes, bool] | None:
        """(device, the answer: a chunk or a refusal, whether it is a chunk) for a chunk
        request; None (counted as dropped) if it is not one."""
        try:
            dev, oid, f, o, n = ota.parse_request(topic, payload)
        except ValueError as exc:
            self.dropped += 1
            log.debug("ota request dropped topic=%s error=%s", topic, exc)
            return None
        r = self.rollouts.get(oid)
        err = None
        if r is None or r.target(dev) is None:
            err = "unknown-offer"
        elif r.status == "halted":
            err = "halted"
        bundle = self.bundles.get(r.version) if r is not None else None
        if bundle is None and err is None:
            err = "no-bundle"
        msg = ota.chunk_message(bundle, dev, oid, f, o, n, self.clock(), err)
        return dev, msg, err is None and msg[:1] == b"\0"

    async def _answer(self, dev: str, msg: bytes, ok: bool) -> None:
        try:
            await self.publish(protocol.topic(dev, "ctl"), msg, qos=1, retain=False)
        except Exception as exc:  # noqa: BLE001 - the device asks again
            self.dropped += 1
            log.warning("ota chunk not sent device=%s error=%r", dev, exc)
            return
        if ok:
            self.served += 1
        else:
            self.dropped += 1

    # -- bundles ----------------------------------------------------------------------------------

    async def upload(self, data: bytes) -> tuple[dict[str, Any], bool]:
        """Keep a bundle; returns (its view, created). OtaError 422 / 409."""
        try:
            b = ota.read_bundle(data)
        except ota.BundleError as exc:
            raise OtaError(422, str(exc)) from None
        async with self._lock:
            known = self.bundles.get(b.version)
            if known is not None:
                if known.sha == b.sha and known.files == b.files:
                    return self.bundle_view(b.version), False
                raise OtaError(409, f"version {b.version} is already uploaded with other content: "
                                    "build the new firmware with a new --version")
            await asyncio.to_thread(self._write, b.version, data)
            self.bundles[b.version] = b
            self.uploaded[b.version] = self.clock()
        log.info("firmware bundle uploaded version=%s files=%d sha256=%s", b.version, len(b.files), b.sha)
        return self.bundle_view(b.version), True

    def _write(self, version: str, data: bytes) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        path = self.store_dir / f"{version}.zip"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def bundle_view(self, version: str) -> dict[str, Any]:
        return self.bundles[version].summary() | {"uploaded": self.uploaded.get(version)}

    def bundle_views(self) -> list[dict[str, Any]]:
        return [self.bundle_view(v) for v in sorted(self.bundles)]

    # -- rollouts ---------------------------------------------------------------------------------

    def rollout_views(self) -> list[dict[str, Any]]:
        return [rollout.summary(r) for r in sorted(self.rollouts.values(), key=lambda r: r.created)]

    def rollout_view(self, rid: str) -> dict[str, Any] | None:
        r = self.rollouts.get(rid)
        return None if r is None else rollout.summary(r)

    async def start(self, version: str, devices: list[str] | None, canary: str | None,
                    percent: int, deadline_s: int) -> dict[str, Any]:
        """Plan and start a rollout; OtaError 404 (no such bundle), 409 (one runs), 422."""
        async with self._lock:
            bundle = self.bundles.get(version)
            if bundle is None:
                raise OtaError(404, f"no bundle {version!r}: upload it first (phygital firmware "
                                    "upload), GET /firmware lists the bundles")
            running = self._running()
            if running is not None:
                raise OtaError(409, f"rollout {running.id} of {running.version} is running: wait "
                                    "for it or halt it (POST /firmware/rollouts/{id}/halt)")
            known = {d["id"]: d for d in await self.db.read(_devices_tx)}
            kinds = bundle.manifest["kinds"]
            if devices is None:
                devices = [d for d, v in known.items() if v["kind"] in kinds and "ota" in v["caps"]]
            problems = []
            for d in devices:
                if d not in known:
                    problems.append(f"{d}: unknown device (never connected)")
                elif known[d]["kind"] not in kinds:
                    problems.append(f"{d}: a {known[d]['kind']}, not a kind of this bundle ({', '.join(kinds)})")
                elif "ota" not in known[d]["caps"]:
                    problems.append(f"{d}: its firmware ({known[d]['fw']}) cannot update over the air: "
                                    "deploy a firmware with OTA by USB (tools/deploy.py)")
                elif self.key_of(d) is None:
                    problems.append(f"{d}: the gateway has no key for it: provision it "
                                    "(phygital provision device) and start the gateway with --coap-keys")
            if problems:
                raise OtaError(422, "cannot roll out to " + "; ".join(problems[:10]))
            rid = "ro-" + secrets.token_hex(6)
            try:
                r = rollout.plan(rid, version, {d: known[d]["fw"] for d in devices}, canary, percent,
                                 deadline_s * 1000, self.clock())
            except rollout.PlanError as exc:
                raise OtaError(422, str(exc)) from None
            self.cursor = await self.db.write(_start_tx, r)
            self.rollouts[rid] = r
        log.info("rollout started id=%s version=%s devices=%d canary=%s percent=%d", rid, version,
                 len(r.targets), r.targets[0].dev, percent)
        await self.step()
        return rollout.summary(self.rollouts[rid])

    async def halt(self, rid: str, who: str) -> dict[str, Any] | None:
        async with self._lock:
            r = self.rollouts.get(rid)
            if r is None:
                return None
            if r.status == "running":
                r = rollout.halt(r, f"halted by {who}", self.clock())
                await self.db.write(_save_tx, r, None)
                self.rollouts[rid] = r
                log.warning("rollout halted id=%s by=%s", rid, who)
        return rollout.summary(r)

    async def step(self) -> None:
        """Apply new ota.* events, offer outcomes and births to the running rollout; offer the
        next devices; save; then send the offers not sent yet."""
        async with self._lock:
            while True:  # events page by page (the cursor moves even without a running rollout)
                events, upto = await self.db.read(_events_tx, self.cursor, EVENT_PAGE)
                before = r = self._running()
                if r is not None:
                    for e in events:
                        r = rollout.on_event(r, e["device"], e["type"], e["body"], self.clock())
                    r = await self._settle(r)
                changed = r is not None and r is not before
                if changed:  # the rollout and the cursor in one transaction
                    await self.db.write(_save_tx, r, upto)
                    if r is not None and before is not None:
                        self._announce(before, r)
                        self.rollouts[r.id] = r
                # unchanged: the cursor moves in memory only (no write per tick; applying an
                # event again after a restart changes nothing, and a new rollout starts at
                # the events' end)
                self.cursor = upto
                if len(events) < EVENT_PAGE:
                    break
            r = self._running()
            if r is None:
                return
            _fw, cmds = await self.db.read(_facts_tx, r)
            unsent = [t.dev for t in r.targets if t.state == "offered" and cmds.get(t.dev) is None]
        for dev in unsent:
            await self._offer(r, dev)

    async def _settle(self, r: rollout.Rollout) -> rollout.Rollout:
        fw, cmds = await self.db.read(_facts_tx, r)
        now = self.clock()
        for dev, cmd in cmds.items():
            if cmd is not None and cmd["status"] in FINAL_STATUSES:
                r = rollout.on_offer_outcome(r, dev, cmd["status"], cmd["reason"], cmd["result"], now)
        r, _offers = rollout.advance(r, fw, now)
        return r

    def _announce(self, before: rollout.Rollout, after: rollout.Rollout) -> None:
        if before.status != after.status:
            (log.warning if after.status == "halted" else log.info)(
                "rollout %s id=%s version=%s reason=%s", after.status, after.id, after.version,
                after.reason)
        elif before.stage != after.stage:
            log.info("rollout stage id=%s stage=%s", after.id, rollout.STAGE_NAMES[after.stage])

    async def _offer(self, r: rollout.Rollout, dev: str) -> None:
        key = self.key_of(dev)
        bundle = self.bundles.get(r.version)
        why = None
        if key is None or bundle is None:
            why = f"{dev}: no key for it any more" if key is None else f"bundle {r.version} is gone"
        else:
            try:
                await self.commands.submit(dev, "ota", ota.offer_args(bundle, dev, key, r.id),
                                           offer_key(r.id), r.deadline_ms / 1000, wait_send=False)
                log.info("ota offered rollout=%s device=%s version=%s", r.id, dev, r.version)
                return
            except (UnknownDevice, CommandRejected, IdempotencyConflict) as exc:
                why = f"{dev}: the offer could not be made: {exc}"
        async with self._lock:
            cur = self.rollouts.get(r.id)
            if cur is not None and cur.status == "running":
                halted = rollout.halt(cur, why, self.clock())
                await self.db.write(_save_tx, halted, None)
                self.rollouts[r.id] = halted
