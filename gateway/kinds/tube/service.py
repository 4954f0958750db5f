"""Pneumatic tube (`kind: tube-station`, `kind: tube-line`): the I/O around the pure arbiter
(`gateway.kinds.tube.core.TubeArbiter`, docs/tube.md).

* **network**: one JSON file (`GatewayConfig.tube_network`, default
  `boards/tube/store-demo.json`), validated at start (`TubeConfigError` stops the gateway with
  the field that is wrong). Its `devices` object says which device drives each station and
  diverter (`{"stockroom": "tube-stockroom", "DV1": "tube-line", ...}`).
* **one task**: `run()` applies the tube devices' persisted events in `events.id` order (woken
  by each commit), calls `tick()` at the arbiter's next deadline, and serialises API calls
  with the same lock: the core is never called concurrently.
* **storage**: table `tube_state` (one row: `{"arbiter": to_dict(), "meta": ...}` and `cursor`,
  the id of the last device event applied) and `tube_jobs` (the public record of every
  dispatch, kept after the arbiter forgets a finished one; memory holds the live ones and the
  last `RECENT_KEEP` finished, older ones are read on demand). Like the locker service, a batch of
  events, the snapshot, the cursor, the stream items and the device commands the batch caused
  are written in ONE transaction: ingest has already persisted each event before acknowledging
  it (decision 2), and the cursor makes applying it exactly-once across crashes and restarts.
  On start: `from_dict` + `resume(now)`, then the events journaled meanwhile are applied.
* **actions -> device commands**, inserted as queued commands in that transaction (and sent
  right after the commit, `CommandService.send_soon`), with the
  arbiter's `command_id` as the idempotency key (`tube:<command_id>:<device>`): a re-emitted
  action (after a restart) finds its command and sends nothing twice. `SetDiverter` ->
  `set_diverter` on the diverter's device; `StartBlower`/`StopBlower` -> `air` on the origin
  and destination stations (blower at one end, air gate at the other); `LoadCarrier` -> `load`
  on the origin station. Moving commands carry a `seq` so a late one never undoes a newer one.
* **device events -> arbiter inputs**: `door.*`, `carrier.arrived/removed` (bin),
  `send.pressed` (with the job shown), `carrier.unloaded`, `station.boot`, `eye`,
  `diverter.position`, `estop.*` (the line is stopped while any board reports its e-stop).
  Time is the gateway's receive time of the event (`t_gateway`).
* **stream**: kind `tube`: `{"type": "dispatch.<state>", "job", "state", "reason", ...}` for
  every job state change and `{"type": "alert.<kind>", "kind", "severity", "message", ...}`
  (the staff alerts service raises and resolves dashboard alerts from these).
"""
from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.devices.commands import CommandService, now_ms
from gateway.kinds.base import Batch, StatefulService
from gateway.kinds.tube.core import (
    FINAL_STATES,
    Action,
    Alert,
    DispatchRequest,
    InvalidCommand,
    InvalidJob,
    JobUpdate,
    LoadCarrier,
    SetDiverter,
    StartBlower,
    StopBlower,
    TubeArbiter,
    action_to_dict,
)
from gateway.kinds.tube.network import NetworkConfigError, TubeNetwork
from gateway.storage.db import Database
from gateway.storage.store import Store

log = logging.getLogger("gateway.tube")

DEFAULT_NETWORK = Path(__file__).resolve().parents[3] / "boards" / "tube" / "store-demo.json"
KINDS = ("tube-station", "tube-line")
DEVICE_CMD_TIMEOUT_S = 60.0
EVENT_PAGE = 200
HISTORY_KEEP = 40
RECENT_KEEP = 1000  # finished dispatches kept in memory (older ones: read from tube_jobs)
JOB_ID_RE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,64}\Z")

class TubeConfigError(RuntimeError):
    """The tube network file is missing or invalid (the gateway does not start)."""


class UnknownJob(LookupError):
    pass


class JobConflict(ValueError):
    pass


@dataclass(frozen=True)
class TubeConfig:
    network: TubeNetwork
    devices: dict[str, str]          # station / diverter id -> device id
    raw: dict[str, Any]


def load_network(path: Path) -> TubeConfig:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TubeConfigError(f"tube network file {path} not found (--tube-network)") from None
    except ValueError as exc:
        raise TubeConfigError(f"tube network file {path}: not valid JSON ({exc})") from None
    try:
        net = TubeNetwork.from_dict(raw)
    except NetworkConfigError as exc:
        raise TubeConfigError(f"tube network file {path}: {exc}") from None
    devices = raw.get("devices")
    if not isinstance(devices, dict):
        raise TubeConfigError(f"tube network file {path}: devices: missing; map each station and "
                              'diverter to the device that drives it, e.g. {"stockroom": "tube-stockroom"}')
    for node in list(net.stations) + list(net.diverters):
        if not isinstance(devices.get(node), str):
            raise TubeConfigError(f"tube network file {path}: devices.{node}: which device drives "
                                  f"{node}? (a device id, e.g. \"tube-{node.lower()}\")")
    return TubeConfig(net, {k: v for k, v in devices.items() if isinstance(v, str)}, raw)


# -- store operations (writer thread) -------------------------------------------------------

def _load_tx(store: Store, network: str) -> tuple[dict[str, Any] | None, int]:
    row = store.conn.execute("SELECT state, cursor FROM tube_state WHERE network = ?",
                             (network,)).fetchone()
    return (json.loads(row[0]), row[1]) if row else (None, 0)


def _put_state(network: str, state: dict[str, Any], cursor: int, jobs: dict[str, dict[str, Any]],
               now: int) -> Callable[[Store], None]:
    """The arbiter's snapshot, the cursor and the changed job records (`tube_jobs`)."""
    def put(store: Store) -> None:
        store.conn.execute(
            """INSERT INTO tube_state (network, state, cursor, updated) VALUES (?,?,?,?)
               ON CONFLICT (network) DO UPDATE SET state=excluded.state, cursor=excluded.cursor,
                 updated=excluded.updated""", (network, json.dumps(state), cursor, now))
        for jid, rec in jobs.items():
            store.conn.execute(
                """INSERT INTO tube_jobs (id, data, updated) VALUES (?,?,?)
                   ON CONFLICT (id) DO UPDATE SET data=excluded.data, updated=excluded.updated""",
                (jid, json.dumps(rec), now))
    return put


def _events_tx(store: Store, devices: tuple[str, ...], after: int, limit: int) -> list[dict[str, Any]]:
    marks = ",".join("?" * len(devices))
    rows = store.conn.execute(
        f"SELECT id, device, type, t_gateway, body FROM events WHERE id > ? AND device IN ({marks}) "
        "ORDER BY id LIMIT ?", (after, *devices, limit)).fetchall()
    return [{"id": r[0], "device": r[1], "type": r[2], "t": r[3] / 1000, "body": json.loads(r[4])}
            for r in rows]


def _jobs_tx(store: Store, job: str | None = None) -> list[dict[str, Any]]:
    """One record, or the live ones and the `RECENT_KEEP` last finished, oldest update first."""
    if job is not None:
        rows = store.conn.execute("SELECT data FROM tube_jobs WHERE id = ?", (job,)).fetchall()
    else:
        rows = store.conn.execute(
            "SELECT data FROM tube_jobs WHERE json_extract(data, '$.final') = 0 OR id IN "
            "(SELECT id FROM tube_jobs WHERE json_extract(data, '$.final') = 1 "
            " ORDER BY updated DESC, rowid DESC LIMIT ?) "
            "ORDER BY updated, rowid", (RECENT_KEEP,)).fetchall()
    return [json.loads(r[0]) for r in rows]


class _Batch(Batch):
    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, dict[str, Any]] = {}  # job records changed


class TubeService(StatefulService):
    stream_kind = "tube"
    log = log
    step_label = "tube step"

    def __init__(self, db: Database, commands: CommandService, network_file: Path | None = None, *,
                 tick_s: float = 0.5, clock: Callable[[], int] = now_ms) -> None:
        super().__init__(db, tick_s=tick_s, clock=clock)
        self.commands = commands
        self.cfg = load_network(network_file or DEFAULT_NETWORK)  # fail at construction
        self.net = self.cfg.network
        self.station_of = {dev: node for node, dev in self.cfg.devices.items() if node in self.net.stations}
        self.devices = tuple(sorted(set(self.cfg.devices.values())))
        self.arbiter = TubeArbiter(self.net)
        self.meta: dict[str, Any] = {"seq": 0, "estop": []}
        self.cursor = 0
        self._records: dict[str, dict[str, Any]] = {}

    # -- lifetime ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Restore the arbiter and resume it (re-emitting what must be in force, with the
        same command ids)."""
        state, self.cursor = await self.db.read(_load_tx, self.net.name)
        self._remember(await self.db.read(_jobs_tx))
        if state is None:
            log.info("tube network %s: fresh arbiter (%d stations, %d diverters)", self.net.name,
                     len(self.net.stations), len(self.net.diverters))
            return
        try:
            self.arbiter = TubeArbiter.from_dict(self.net, state["arbiter"])
        except ValueError as exc:
            raise TubeConfigError(f"tube state cannot be restored: {exc}") from None
        self.meta = state.get("meta") or self.meta
        async with self._lock:
            await self._decide(lambda a, now: a.resume(now))
        live = [j.request.id for j in self.arbiter.jobs() if j.state not in FINAL_STATES]
        log.info("tube network %s resumed cursor=%d live_jobs=%s", self.net.name, self.cursor,
                 ",".join(live) or "-")

    def _sleep_s(self) -> float:
        """Until the arbiter's next deadline (just after it: deadlines fire strictly later),
        at most `tick_s`."""
        due = self.arbiter.next_deadline()
        if due is None:
            return self.tick_s
        return min(self.tick_s, max(0.01, due - self._now() + 0.01))

    async def step(self) -> None:
        async with self._lock:
            while True:
                rows = await self.db.read(_events_tx, self.devices, self.cursor, EVENT_PAGE)
                if not rows:
                    break
                await self._decide(functools.partial(self._apply_page, rows), cursor=rows[-1]["id"])
            await self._decide(lambda a, now: a.tick(now), only_if_changed=True)

    def _apply_page(self, rows: list[dict[str, Any]], a: TubeArbiter, now: float) -> list[Action]:
        return [x for e in rows for x in self._apply(a, e)]

    def on_commit_item(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "event" and data.get("device") in self.devices:
            self._wake.set()

    # -- the arbiter ----------------------------------------------------------------------------

    async def _decide(self, fn: Callable[[TubeArbiter, float], list[Action]], *,
                      cursor: int | None = None, only_if_changed: bool = False) -> list[Action]:
        """Run `fn` on the arbiter, carry out its actions and persist everything in one
        transaction; on failure the arbiter goes back to where it was. Call under the lock."""
        before, meta_before = self.arbiter.to_dict(), json.loads(json.dumps(self.meta))
        try:
            actions = fn(self.arbiter, self._now())
        except InvalidCommand as exc:
            actions = exc.actions  # what moving the clock produced still happens
            if actions:
                await self._commit(before, meta_before, actions, cursor)
            raise
        except BaseException:
            self.arbiter = TubeArbiter.from_dict(self.net, before)
            raise
        if only_if_changed and not actions:
            return actions
        await self._commit(before, meta_before, actions, cursor)
        return actions

    async def _commit(self, before: dict[str, Any], meta_before: dict[str, Any],
                      actions: list[Action], cursor: int | None) -> None:
        batch = _Batch()
        for action in actions:
            self._carry_out(action, batch)
        state = {"arbiter": self.arbiter.to_dict(), "meta": self.meta}
        try:
            inserted = await self._save(_put_state(
                self.net.name, state, self.cursor if cursor is None else cursor, batch.jobs,
                self.clock()), batch)
        except BaseException:
            self.arbiter = TubeArbiter.from_dict(self.net, before)
            self.meta = meta_before
            raise
        self.commands.send_soon(inserted)
        if cursor is not None:
            self.cursor = cursor
        self._remember(batch.jobs.values())
        self.arbiter.forget_finished()  # their records are in tube_jobs now

    def _apply(self, a: TubeArbiter, e: dict[str, Any]) -> list[Action]:
        """One persisted device event as arbiter input(s)."""
        etype, body, now, dev = e["type"], e["body"] or {}, e["t"], e["device"]
        st = self.station_of.get(dev)
        try:
            if etype == "eye" and isinstance(body.get("eye"), str):
                return a.on_photo_eye(body["eye"], now)
            if etype == "diverter.position":
                return a.on_diverter_confirmed(str(body.get("diverter")), str(body.get("position")), now)
            if etype in ("estop.pressed", "estop.released"):
                return self._estop(a, dev, etype == "estop.pressed", now)
            if st is None:
                return []
            if etype == "station.boot":
                out = a.on_station(st, now=now, door_open=bool(body.get("door")),
                                   carrier_present=bool(body.get("bin")))
                return out + self._estop(a, dev, bool(body.get("estop")), now)
            kw: dict[str, Any] = {
                "door.opened": {"door_open": True}, "door.closed": {"door_open": False},
                "carrier.arrived": {"carrier_present": True},
                "carrier.removed": {"carrier_present": False},
                "carrier.unloaded": {"send_ready": False},
                "send.pressed": {"send_ready": body.get("job") or True},
            }.get(etype, {})
            return a.on_station(st, now=now, **kw) if kw else []
        except (InvalidCommand, InvalidJob, KeyError, ValueError) as exc:
            log.warning("tube event not applied event=%d device=%s type=%s: %s", e["id"], dev, etype, exc)
            return []

    def _estop(self, a: TubeArbiter, dev: str, active: bool, now: float) -> list[Action]:
        pressed = set(self.meta.get("estop") or [])
        (pressed.add if active else pressed.discard)(dev)
        self.meta["estop"] = sorted(pressed)
        return a.on_estop(bool(pressed), now, source=dev)

    # -- actions -> commands, stream, records ----------------------------------------------------

    def _seq(self) -> int:
        self.meta["seq"] = int(self.meta.get("seq", 0)) + 1
        return self.meta["seq"]

    def _cmd(self, batch: _Batch, node: str, name: str, args: dict[str, Any], command_id: str) -> None:
        device = self.cfg.devices[node]
        batch.cmds.append((device, name, args, f"tube:{command_id}:{device}",
                           self.clock() + int(DEVICE_CMD_TIMEOUT_S * 1000)))

    def _carry_out(self, action: Action, batch: _Batch) -> None:
        if isinstance(action, SetDiverter):
            self._cmd(batch, action.diverter_id, "set_diverter",
                      {"diverter": action.diverter_id, "position": action.position,
                       "seq": self._seq()}, action.command_id)
        elif isinstance(action, StartBlower):
            for node, role in ((action.origin, "origin"), (action.destination, "destination")):
                self._cmd(batch, node, "air", {"on": True, "dir": action.direction, "role": role,
                                               "job": action.job_id, "seq": self._seq()},
                          action.command_id)
        elif isinstance(action, StopBlower):
            req = self.arbiter.job(action.job_id).request
            for node in (req.origin, req.destination):
                self._cmd(batch, node, "air", {"on": False, "job": action.job_id, "seq": self._seq()},
                          action.command_id)
        elif isinstance(action, LoadCarrier):
            self._cmd(batch, action.station_id, "load",
                      {"job": action.job_id, "item": action.item, "to": action.destination},
                      action.command_id)
        elif isinstance(action, Alert):
            d = action_to_dict(action)
            d["type"] = f"alert.{action.kind}"  # staff alerts match on it (services/alerts.py)
            d["at"] = self._now()
            batch.items.append(d)
            log.log(logging.ERROR if action.severity == "error" else logging.INFO,
                    "tube alert kind=%s %s", action.kind, action.message)
        elif isinstance(action, JobUpdate):
            rec = self._record(action, batch)
            batch.items.append({"type": f"dispatch.{action.state}", "job": action.job_id,
                                "state": action.state, "reason": action.reason,
                                "from": rec["from"], "to": rec["to"], "priority": rec["priority"],
                                "item": rec["item"], "attempt": rec["attempt"], "at": self._now()})

    def _record(self, u: JobUpdate, batch: _Batch) -> dict[str, Any]:
        old = batch.jobs.get(u.job_id) or self._records.get(u.job_id) or {}
        js = self.arbiter.job(u.job_id)
        req = js.request
        hist = list(old.get("history") or [])
        if not hist or hist[-1][1] != u.state or hist[-1][2] != u.reason:
            hist.append([round(self._now(), 3), u.state, u.reason])
        rec = {"job": req.id, "from": req.origin, "to": req.destination, "priority": req.priority,
               "item": req.item, "created": req.created, "state": js.state, "reason": js.reason,
               "attempt": js.attempt, "final": js.state in FINAL_STATES,
               "history": hist[-HISTORY_KEEP:]}
        batch.jobs[u.job_id] = rec
        return rec

    # -- API ------------------------------------------------------------------------------------

    async def dispatch(self, *, origin: str, destination: str, priority: str, item: str,
                       key: str) -> tuple[dict[str, Any], bool]:
        """Create a dispatch whose id is the caller's idempotency key. Returns (record, created);
        the same key with the same request returns the existing record."""
        if not JOB_ID_RE.match(key):
            raise InvalidJob("idempotency_key must be 1-64 characters of A-Z a-z 0-9 . _ : @ / + = -")
        async with self._lock:
            try:
                old: dict[str, Any] | None = await self.get_job(key)
            except UnknownJob:
                old = None
            if old is not None:
                if (old["from"], old["to"], old["priority"], old["item"]) != (origin, destination, priority, item):
                    raise JobConflict(f"idempotency key {key!r} was already used for dispatch "
                                      f"{old['from']} -> {old['to']} ({old['priority']}, {old['item']}); "
                                      "use a new key for a different dispatch")
                return old, False
            req = DispatchRequest(key, origin, destination, priority, item, self._now())
            await self._decide(lambda a, now: a.submit(req, now))
            return self.job(key), True

    async def cancel(self, job: str) -> dict[str, Any]:
        async with self._lock:
            rec = await self.get_job(job)
            if job not in {j.request.id for j in self.arbiter.jobs()}:
                return rec  # finished (and forgotten by the arbiter): nothing to cancel
            await self._decide(lambda a, now: a.cancel(job, now, "cancelled by the API"))
            return self.job(job)

    async def clear_jam(self, target: str, resend: bool = True) -> list[dict[str, Any]]:
        """Staff recovery (job, segment or diverter id): returns the alerts/updates it caused."""
        async with self._lock:
            actions = await self._decide(lambda a, now: a.clear_jam(target, now, resend=resend))
            return [action_to_dict(x) for x in actions if isinstance(x, (Alert, JobUpdate))]

    def _remember(self, recs: Any) -> None:
        """Keep every live record and the `RECENT_KEEP` last finished ones in memory."""
        for rec in recs:
            self._records.pop(rec["job"], None)
            self._records[rec["job"]] = rec  # most recently updated last
        extra = sum(1 for r in self._records.values() if r["final"]) - RECENT_KEEP
        for jid in [j for j, r in self._records.items() if r["final"]][:max(0, extra)]:
            del self._records[jid]

    def job(self, job: str) -> dict[str, Any]:
        """A live or recent dispatch (memory only; `get_job` also reads older ones)."""
        rec = self._records.get(job)
        if rec is None:
            raise UnknownJob(job)
        return rec

    async def get_job(self, job: str) -> dict[str, Any]:
        rec = self._records.get(job)
        if rec is None:
            found = await self.db.read(_jobs_tx, job)
            if not found:
                raise UnknownJob(job)
            rec = found[0]
        return rec

    def jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        """Live dispatches and the `RECENT_KEEP` last finished, oldest update first."""
        return [r for r in self._records.values() if state is None or r["state"] == state]

    def view(self) -> dict[str, Any]:
        a = self.arbiter
        return {"network": self.net.name, "estop": a.estop_active, "estop_devices": self.meta.get("estop", []),
                "reservations": a.reservations(), "blocked": a.blocked(),
                "stations": {s: a.station_state(s) for s in self.net.stations},
                "segments": [{"id": g.id, "from": g.from_node, "to": g.to_node}
                             for g in self.net.segments.values()],
                "diverters": sorted(self.net.diverters),
                "devices": self.cfg.devices, "cursor": self.cursor,
                "live": [r for r in self._records.values() if not r["final"]]}
