"""Fault injection: a virtual store under scripted faults, then invariants checked from the
database and the devices' own flash.

    python -m hil.faults                 # the CI sequence: every fault once (~1-2 min)
    python -m hil.faults --soak 600      # random faults for 10 minutes, then the same checks

The store: sample pads, a locker bank and a small tube line (two stations and a line
controller, hil/fault_tube.py) on the real firmware (MicroPython), the gateway as a process
(`python -m gateway`), a real Mosquitto running the production configuration that
`phygital provision` writes: no anonymous clients, a password per device and per gateway
connection, the ACL, client ids bound to users, persistence saved every `autosave_interval`
(10 s) as deployed. The gateway connects over TLS with the store CA; the devices use the
provisioned loopback listener (same passwords, ACL and id binding, no TLS): with TLS the
firmware cannot reconnect within a board's 96 KB heap (MemoryError in the handshake after a
broker restart; docs/operations.md, "Fault injection"). The one addition to the config: a
user for the fault injector itself (`clock_jump` forges a gateway ack), which may only write
`ctl`. Between faults a scripted world keeps placing tags on pads, staff keep opening locker
doors and dispatching capsules through the API.

Faults: broker SIGKILLed and restarted, broker SIGSTOPped past the devices' keepalive,
gateway SIGKILLed right after a command was submitted, gateway SIGKILLed while a carrier is in
the tube (it arrives while the gateway is down), the sending tube station power-cut while its
carrier is in the tube (lost, then located and resent by staff), locker rebooted while its lock
is powered, a device's clock jumped by an hour, the gateway's disk full (`PRAGMA
max_page_count`), the database locked by another process past the busy timeout.

Invariants: every event a device journaled is in the database exactly once and every tag
placed was reported once; every command finished exactly once (done / rejected / expired /
failed), each was answered by the device from one actuation at most (lock pulses vs.
commands); no locker door opened without a staff command (this suite enters no codes) and
none was forced; no tube segment ever held two carriers (the line model's own record AND the
gateway's persisted dispatch records); every capsule dispatched ended delivered, or cancelled /
failed with a reason, none left in the tube. `INVARIANTS` is the hook for more.
"""
from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from gateway import provision
from gateway.storage.store import commands_path
from hil.fault_tube import LINE, STATIONS, TubeLine, no_capsule_lost, one_carrier_per_segment
from hil.fault_tube import NETWORK as TUBE_NETWORK
from hil.harness import GatewayProcess, ProvisionedMosquitto, free_port, wait_for
from hil.sim.mfrc522 import NtagTag
from hil.sim.store import VirtualStore

BANK = "lk-f1"
LOCKER_APP = {"occupancy": True, "pulse_ms": 300, "verify_ms": 300, "retry_ms": 200,
              "gap_ms": 100, "door_poll_ms": 50}
KEEPALIVE = 5          # devices' MQTT keepalive (s): SIGSTOP lasts longer than 1.5x this
FINAL = ("done", "rejected", "expired", "failed")
INJECTOR = "fault.injector"  # the fault injector's broker user (`.`: never a device id)


def provision_store(store: Path, devices: dict[str, str]) -> dict:
    """A store as `phygital provision` makes it (TLS listener and the plain loopback one on
    free ports), the devices' credentials (`devices`: id -> kind) and the fault injector's
    user; returns the injector's connection settings."""
    provision.init_store(store, store="faults", port=free_port(), bind="127.0.0.1",
                         local_port=free_port())
    for dev, kind in devices.items():
        provision.add_device(store, dev, kind, host="127.0.0.1")
    password = provision.new_password()
    users = provision._read_passwd(store)
    provision._write_passwd(store, users | {INJECTOR: provision.hash_password(password)})
    acl = store / "mosquitto" / "acl"
    acl.write_text(acl.read_text() + f"\n# the fault suite's injector (hil/faults.py)\n"
                   f"user {INJECTOR}\ntopic write pe/1/+/ctl\n")
    return {"user": INJECTOR, "password": password, "ca": str(store / "ca.crt")}


@dataclass
class FaultRecord:
    name: str
    seconds: float
    note: str


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class FaultRig:
    workdir: Path
    pads: int = 2
    seed: int = 0
    log: Callable[[str], None] = print
    placed: Counter = field(default_factory=Counter)
    opens: dict = field(default_factory=dict)      # command id -> compartment
    commands: list = field(default_factory=list)   # every command id submitted
    faults: list = field(default_factory=list)

    # -- lifetime ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.rng = random.Random(self.seed)
        self.pad_ids = [f"pad-f{i + 1}" for i in range(self.pads)]
        prov = self.workdir / "provisioned"
        kinds = {**dict.fromkeys(self.pad_ids, "sample-pad"), BANK: "locker-bank",
                 **dict.fromkeys(STATIONS.values(), "tube-station"), LINE: "tube-line"}
        self.injector = provision_store(prov, kinds)
        self.broker = ProvisionedMosquitto(prov).start()   # its port: the TLS listener
        local = json.loads((prov / "store.json").read_text())["local_port"]  # devices' listener
        self.tube = TubeLine(self.workdir / "tube", local, KEEPALIVE, provisioned=prov)
        self.gw = GatewayProcess(self.workdir / "gw", self.broker.port, extra_args=[
            *self.tube.gateway_args(), "--mqtt-auth", str(prov / "gateway.json")],
            locker_keys=prov / provision.LOCKER_KEYS).start()
        self.store = VirtualStore(self.workdir / "store", broker_port=local,
                                  keepalive=KEEPALIVE, provisioned=prov)
        for dev in self.pad_ids:
            self.store.add_pad(dev)
        self.locker = self.store.add_locker(BANK, ["S", "M", "L"], **LOCKER_APP)
        self.tags = {dev: NtagTag.with_text(bytes([4, 0xFA, 0x17, 0, 0, 0, i + 1]), f"S-{i}")
                     for i, dev in enumerate(self.pad_ids)}
        self.store.start()
        self.tube.start()
        self.wait_all_online()
        return self

    def __exit__(self, *exc: object) -> None:
        self.tube.close()
        self.store.stop()
        self.gw.stop()
        self.broker.resume() if self.broker.proc else None
        self.broker.stop()

    def devices(self) -> list[str]:
        return [*self.pad_ids, BANK, *self.tube.devices()]

    def firmware(self, dev: str):
        fw = self.store.devices.get(dev)
        return fw if fw is not None else self.tube.firmware(dev)

    def wait_all_online(self, timeout: float = 60) -> None:
        for dev in self.devices():
            self.gw.wait_online(dev, True, timeout)

    # -- the world ------------------------------------------------------------------------------

    def activity(self, rounds: int = 1) -> None:
        """Customers put a sample on every pad and take it away again."""
        for _ in range(rounds):
            for dev, pad in self.store.pads.items():
                pad.place(self.tags[dev])
                self.placed[dev] += 1
            time.sleep(0.8)
            for pad in self.store.pads.values():
                pad.remove()
            time.sleep(0.6)

    def tube_begin(self) -> tuple[str, str]:
        """A capsule dispatched through the API and sent by staff; alternates direction."""
        n = len(self.tube.dispatched)
        origin, dest = ("stockroom", "floor") if n % 2 == 0 else ("floor", "stockroom")
        key = f"tube-{n + 1}"
        self.tube.begin(self.gw, key, origin, dest)
        return key, dest

    def tube_finish(self, key: str, dest: str) -> dict:
        return self.tube.finish(self.gw, key, dest)

    def between_faults(self) -> None:
        """Tags on pads while a capsule flies."""
        flying = self.tube_begin()
        self.activity(1)
        self.tube_finish(*flying)

    def submit(self, dev: str, name: str, args: dict, timeout_s: float = 10) -> httpx.Response:
        key = f"f-{len(self.commands)}-{self.rng.randrange(1 << 30)}"
        r = httpx.post(f"{self.gw.url}/devices/{dev}/commands", timeout=timeout_s + 15,
                       json={"name": name, "args": args, "idempotency_key": key,
                             "timeout_s": timeout_s, "wait": False})
        if r.status_code in (200, 202):
            self.commands.append(r.json()["id"])
        return r

    def open_door(self, n: int) -> str:
        r = self.submit(BANK, "open", {"compartment": n, "reason": "service"}, timeout_s=15)
        assert r.status_code in (200, 202), r.text
        self.opens[r.json()["id"]] = n
        return r.json()["id"]

    def command(self, cid: str) -> dict:
        r = httpx.get(f"{self.gw.url}/commands/{cid}", timeout=10)
        r.raise_for_status()
        return r.json()

    def finish_open(self, cid: str) -> dict:
        """Wait for the open command's outcome, then staff shut the door again."""
        cmd = wait_for(lambda: (c := self.command(cid))["status"] in FINAL and c, 60,
                       what=f"command {cid} final")
        self.locker.close_door(self.opens[cid])
        return cmd

    # -- faults -----------------------------------------------------------------------------------

    def _fault(self, name: str, fn: Callable[[], str]) -> None:
        t0 = time.monotonic()
        self.log(f"fault: {name} ...")
        note = fn()
        self.faults.append(FaultRecord(name, time.monotonic() - t0, note))

    def broker_killed(self) -> str:
        # a crash does not wait for a save: the broker restarts with what it saved last
        # (every autosave_interval), maybe seconds old, maybe nothing yet
        db = self.broker.workdir / "mosquitto.db"
        saved = f"{time.time() - db.stat().st_mtime:.1f} s" if db.exists() else "never"
        self.broker.proc.kill()
        self.broker.proc.wait()
        self.activity(1)  # devices journal while the broker is gone
        self.broker.start()
        self.wait_all_online()
        return (f"SIGKILL (its last save: {saved} before), 1 round of tags while down, "
                "restarted on its port with what it had saved")

    def broker_paused(self) -> str:
        t0 = time.monotonic()
        self.broker.pause()
        try:
            self.activity(1)
            time.sleep(max(0.0, KEEPALIVE * 1.5 + 1.5 - (time.monotonic() - t0)))
        finally:
            self.broker.resume()
        self.wait_all_online()
        return f"SIGSTOP {time.monotonic() - t0:.1f}s (device keepalive {KEEPALIVE}s)"

    def gateway_killed_mid_command(self) -> str:
        cid = self.open_door(3)
        self.gw.kill()
        self.activity(1)
        self.gw.start()
        cmd = self.finish_open(cid)
        self.wait_all_online()
        return f"SIGKILL right after submit; command {cmd['status']}"

    def gateway_killed_mid_transit(self) -> str:
        key, dest = self.tube_begin()
        self.gw.kill()  # the carrier flies on: the stations keep their air, journal their events
        self.activity(1)
        wait_for(lambda: self.tube.model.held_at("bin", dest), 60, what=f"{key} arrived, gateway down")
        self.gw.start()
        job = self.tube_finish(key, dest)
        self.wait_all_online()
        return f"SIGKILL with capsule {key} in the tube, it arrived meanwhile; dispatch {job['state']}"

    def station_rebooted_mid_transit(self) -> str:
        key, dest = self.tube_begin()
        origin = next(s for s in ("stockroom", "floor") if s != dest)
        self.tube.rig.power_cut(self.tube.station(origin))  # its air stops: the carrier stands
        time.sleep(1.0)
        self.tube.rig.power_on(self.tube.station(origin))
        # the line lost sight of it: the dispatch is `lost` until staff locate it (docs/tube.md)
        job = wait_for(lambda: (j := self.tube.job(self.gw.url, key))["state"] in ("lost", "arrived")
                       and j, 60, what=f"{key} lost or arrived")
        note = f"{job['state']} ({job['reason']})"
        if job["state"] == "lost":
            pulled = self.tube.recover_lost(self.gw, key, origin)
            note += f"; staff pulled {pulled} carrier out, cleared the jam, sent it again"
        job = self.tube_finish(key, dest)
        self.wait_all_online()
        return (f"{origin} station power-cut 1 s with capsule {key} in the tube: {note}; "
                f"dispatch {job['state']} (attempt {job['attempt']})")

    def device_rebooted_mid_actuation(self) -> str:
        fw = self.store.devices[BANK]
        cut = []

        def power_cut(pin: str, value: int) -> None:  # on the rig's thread, as the pin rises
            if pin == "lock_1" and value and not cut:
                cut.append(1)
                fw.kill()

        self.locker.sim.on_output.append(power_cut)
        try:
            cid = self.open_door(1)
            wait_for(lambda: cut, 30, what="lock 1 powered")
        finally:
            self.locker.sim.on_output.remove(power_cut)
        fw.start()
        cmd = self.finish_open(cid)
        self.wait_all_online()
        return f"locker killed with lock 1 powered; command {cmd['status']} ({cmd['reason']})"

    def clock_jump(self) -> str:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        dev = self.pad_ids[0]
        epoch = json.loads((self.store.devices[dev].workdir / "flash" / "journal" /
                            "journal.json").read_text())["epoch"]
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fault-clock")
        c.username_pw_set(self.injector["user"], self.injector["password"])
        c.tls_set(ca_certs=self.injector["ca"])
        c.connect("127.0.0.1", self.broker.port)
        c.loop_start()
        jump = 3_600_000 * self.rng.choice([1, -1])
        now = int(time.time() * 1000) + jump
        c.publish(f"pe/1/{dev}/ctl", json.dumps(
            {"v": 1, "dev": dev, "type": "ack", "t": now,
             "body": {"epoch": epoch, "upto": 0, "now": now}}), qos=1).wait_for_publish(10)
        c.loop_stop()
        c.disconnect()
        self.activity(1)
        r = self.submit(dev, "blink", {"times": 1})
        status = self.command(r.json()["id"])["status"] if r.status_code in (200, 202) else r.status_code
        return f"{dev} clock {jump // 60000:+d} min; a blink right after: {status}"

    def disk_full(self) -> str:
        self.gw.stop()
        with sqlite3.connect(self.gw.db) as c:
            pages = c.execute("PRAGMA page_count").fetchone()[0]
        self.gw.env["PHYGITAL_DB_MAX_PAGES"] = str(pages)
        self.gw.start()
        refused = None
        try:
            for _ in range(200):
                self.activity(1)
                r = self.submit(self.pad_ids[1], "blink", {"times": 1})
                if r.status_code == 507:
                    refused = r.json()["detail"]
                    break
            assert refused and "disk is full" in refused, f"no clear refusal: {refused!r}"
            assert httpx.get(self.gw.url + "/health", timeout=10).status_code == 200
            assert httpx.get(self.gw.url + "/devices", timeout=10).status_code == 200
        finally:
            self.gw.stop()  # the operator frees space
            self.gw.env.pop("PHYGITAL_DB_MAX_PAGES")
            self.gw.start()
        self.wait_all_online()
        return f"max_page_count={pages}: 507 {refused!r}; reads kept working; restarted"

    def db_locked(self, hold_s: float = 12.0) -> str:
        holder = subprocess.Popen(
            [sys.executable, "-c", ("import sqlite3, sys, time\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True)\n"
             "time.sleep(float(sys.argv[2])); c.execute('COMMIT')"),
             str(self.gw.db), str(hold_s)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "locked"
            self.activity(1)
            r = self.submit(self.pad_ids[0], "blink", {"times": 1})
            outcome = f"{r.status_code} {r.json().get('detail', r.json().get('status'))!r}"
            assert r.status_code in (503, 200, 202), r.text
            assert httpx.get(self.gw.url + "/health", timeout=10).status_code == 200
        finally:
            holder.wait(hold_s + 10)
        return f"exclusive lock {hold_s:.0f}s by another process; a command meanwhile: {outcome}"

    def staff_open(self) -> str:
        n = self.rng.choice([1, 2, 3])
        cmd = self.finish_open(self.open_door(n))
        return f"compartment {n}: {cmd['status']}"

    SEQUENCE = ("broker_killed", "gateway_killed_mid_command", "gateway_killed_mid_transit",
                "station_rebooted_mid_transit", "device_rebooted_mid_actuation", "broker_paused", "clock_jump",
                "disk_full", "db_locked")

    def run_sequence(self, names: tuple[str, ...] = SEQUENCE) -> None:
        self.between_faults()
        self._fault("staff_open (baseline)", self.staff_open)
        for name in names:
            self._fault(name, getattr(self, name))
            self.between_faults()

    def soak(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.activity(1)
        while time.monotonic() < end:
            name = self.rng.choice((*self.SEQUENCE, "staff_open"))
            self._fault(name, getattr(self, name))
            self.between_faults()
            self.activity(self.rng.randint(0, 2))

    # -- invariants ---------------------------------------------------------------------------------

    def quiesce(self, timeout: float = 90) -> None:
        """Every command final, every device's journal acknowledged up to its last event."""
        for cid in self.commands:
            wait_for(lambda cid=cid: self.command(cid)["status"] in FINAL, timeout,
                     what=f"command {cid} final")
        for dev in self.devices():
            wait_for(lambda dev=dev: (self.gw.device(dev) or {}).get("acked") ==
                     self.journal(dev)["next"] - 1, timeout,
                     what=f"{dev} journal fully acknowledged")

    def journal(self, dev: str) -> dict:
        """The device's journal as its flash holds it. The meta file is written on acks only,
        so `next` is one past the last seq in the log (events not yet acknowledged)."""
        d = self.firmware(dev).workdir / "flash" / "journal"
        meta = json.loads((d / "journal.json").read_text())
        log = (d / "journal.log").read_text() if (d / "journal.log").exists() else ""
        seqs = [int(ln.split(" ", 1)[0]) for ln in log.splitlines()
                if ln and ln.split(" ", 1)[0].isdigit()]
        return meta | {"next": max([meta["next"], *(s + 1 for s in seqs)])}

    def check(self) -> list[Check]:
        self.quiesce()
        return [inv(self) for inv in INVARIANTS]

    def summary(self, checks: list[Check]) -> str:
        w = max([len(f.name) for f in self.faults] + [len(c.name) for c in checks] + [10])
        out = ["", f"{'fault injected':<{w}}  {'s':>6}  what happened", "-" * (w + 60)]
        out += [f"{f.name:<{w}}  {f.seconds:6.1f}  {f.note}" for f in self.faults]
        out += ["", f"{'invariant':<{w}}  {'':>6}  result", "-" * (w + 60)]
        out += [f"{c.name:<{w}}  {'OK' if c.ok else 'FAIL':>6}  {c.detail}" for c in checks]
        return "\n".join(out)


def _db(rig: FaultRig) -> sqlite3.Connection:
    """The gateway's file, read-only, with its command file (`gw.commands.db`) attached."""
    conn = sqlite3.connect(f"file:{rig.gw.db}?mode=ro", uri=True)
    conn.execute("ATTACH DATABASE ? AS cmds", (f"file:{commands_path(rig.gw.db)}?mode=ro",))
    conn.row_factory = sqlite3.Row
    return conn


def events_exactly_once(rig: FaultRig) -> Check:
    bad, total = [], 0
    with _db(rig) as db:
        for dev in rig.devices():
            j = rig.journal(dev)
            seqs = [r[0] for r in db.execute(
                "SELECT seq FROM events WHERE device = ? AND epoch = ? AND seq IS NOT NULL "
                "ORDER BY seq", (dev, j["epoch"]))]
            total += len(seqs)
            if seqs != list(range(1, j["next"])):
                bad.append(f"{dev}: db has {len(seqs)} seqs, device journaled {j['next'] - 1}")
        for dev in rig.pad_ids:
            n = db.execute("SELECT COUNT(*) FROM events WHERE device = ? AND type = 'tag.placed'",
                           (dev,)).fetchone()[0]
            if n != rig.placed[dev]:
                bad.append(f"{dev}: {rig.placed[dev]} tags placed, {n} tag.placed stored")
    return Check("every journaled event stored exactly once", not bad,
                 "; ".join(bad) or f"{total} events of {len(rig.devices())} devices; tags "
                                    f"placed {sum(rig.placed.values())} = stored")


def commands_exactly_once(rig: FaultRig) -> Check:
    with _db(rig) as db:
        rows = {r["id"]: r["status"] for r in db.execute("SELECT id, status FROM commands")}
    missing = [c for c in rig.commands if c not in rows]
    open_ = [c for c in rig.commands if rows.get(c) not in FINAL]
    # the devices' own command logs: an id is started at most once, never redone
    redone = []
    for dev in rig.devices():
        cmds = rig.firmware(dev).workdir / "flash" / "cmds.json"
        if cmds.exists():
            raw = cmds.read_text()
            redone += [cid for cid in rig.commands if raw.count(f'"{cid}"') > 1]
    statuses = Counter(rows[c] for c in rig.commands if c in rows)
    # locker: one lock pulse per started open command at most (no door needs a retry here)
    pulses = {n: rig.locker.pulses(n) for n in (1, 2, 3)}
    started = Counter(n for cid, n in rig.opens.items() if rows.get(cid) in ("done", "failed"))
    twice = {n: (pulses[n], started[n]) for n in pulses if pulses[n] > started[n]}
    ok = not (missing or open_ or redone or twice)
    return Check("every command finished once, never actuated twice", ok,
                 f"missing {missing} open {open_} redone {redone} pulses>commands {twice}"
                 if not ok else f"{len(rig.commands)} commands {dict(statuses)}; lock pulses "
                                f"{pulses} <= started opens {dict(started)}")


def doors_only_by_staff_or_code(rig: FaultRig) -> Check:
    with _db(rig) as db:
        rows = [json.loads(r[1]) | {"type": r[0]} for r in db.execute(
            "SELECT type, body FROM events WHERE device = ? AND type IN "
            "('door.opened', 'door.forced')", (BANK,))]
        done = Counter(rig.opens[r["id"]] for r in db.execute(
            "SELECT id FROM commands WHERE status IN ('done', 'failed')") if r["id"] in rig.opens)
    forced = [r for r in rows if r["type"] == "door.forced"]
    opened = Counter(r["compartment"] for r in rows if r["type"] == "door.opened"
                     and not r.get("boot"))
    bad = {n: (k, done[n]) for n, k in opened.items() if k > done[n]}
    whys = Counter(r.get("why") for r in rows if r["type"] == "door.opened")
    ok = not forced and not bad and set(whys) <= {"service", "load", "retrieve", "pickup"}
    return Check("no door opened without a code or staff command", ok,
                 f"opened {dict(opened)} by reason {dict(whys)}; staff opens {dict(done)}; "
                 f"forced {len(forced)}")


def _tube_records(rig: FaultRig) -> list[dict]:
    with _db(rig) as db:
        return [json.loads(r[0]) for r in db.execute("SELECT data FROM tube_jobs")]


def tube_one_carrier_per_segment(rig: FaultRig) -> Check:
    m = rig.tube.model
    ok, detail = one_carrier_per_segment(TUBE_NETWORK, dict(m.max_occupancy), list(m.crowded),
                                         _tube_records(rig))
    return Check("no tube segment held two carriers", ok, detail)


def tube_no_capsule_lost(rig: FaultRig) -> Check:
    m = rig.tube.model
    ok, detail = no_capsule_lost(rig.tube.dispatched, _tube_records(rig), list(m.arrivals),
                                 len(m.in_tube()))
    return Check("every capsule delivered or ended with a reason", ok, detail)


INVARIANTS: list[Callable[[FaultRig], Check]] = [
    events_exactly_once, commands_exactly_once, doors_only_by_staff_or_code,
    tube_one_carrier_per_segment, tube_no_capsule_lost]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil.faults", description=__doc__.split("\n\n")[0])
    ap.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                    help="random faults for this long (default: the CI sequence once)")
    ap.add_argument("--pads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="keep logs and databases here")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"seed {seed}")
    with tempfile.TemporaryDirectory(prefix="pe-faults-") as tmp:
        work = args.workdir or Path(tmp)
        with FaultRig(work, pads=args.pads, seed=seed) as rig:
            if args.soak:
                rig.soak(args.soak)
            else:
                rig.run_sequence()
            checks = rig.check()
            print(rig.summary(checks))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
