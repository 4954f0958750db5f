"""Head office on loopback, for tests and benchmarks: a 3-node NATS cluster (JetStream, MQTT),
a PostgreSQL server in a temp directory, simulated stores (a Mosquitto bridged to the cluster
with the generated bridge section, fed real chain envelopes) and `phygital central` as a
subprocess (SIGKILL-able). docs/chain.md "Head office"."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.integrations.chain import bridge_config, chain_payload, check_store_id
from hil.harness import ROOT, Mosquitto, free_port, wait_for

log = logging.getLogger("hil.central_rig")


def _exe(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name)
    for d in extra_dirs:
        if not found and Path(d, name).exists():
            found = str(Path(d, name))
    if not found:
        raise RuntimeError(f"{name} not installed: run .ci/run (apt-get install nats-server "
                           "postgresql)")
    return found


class NatsCluster:
    """`n` nats-server nodes (JetStream + MQTT) clustered by routes on loopback. MQTT streams
    are replicated on every node (`stream_replicas`), so sessions, QoS 1 messages and retained
    messages survive the loss of one node."""

    def __init__(self, workdir: Path, n: int = 3, *, ack_wait_s: int = 5,
                 max_ack_pending: int = 1000, users: dict[str, str] | None = None,
                 tls_dir: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.n = n
        self.ack_wait_s, self.max_ack_pending = ack_wait_s, max_ack_pending
        # per-store bridge users (store id -> password; `authorization` below), None: open
        self.users = users
        self.central_password = f"central-{os.urandom(8).hex()}" if users is not None else None
        self._probe_password = os.urandom(8).hex()
        # TLS on the MQTT listeners: a test CA and a certificate for 127.0.0.1
        # (gateway.provision.make_certs: ca.crt, server.crt, server.key)
        self.tls_dir = tls_dir
        self.client_ports = [free_port() for _ in range(n)]
        self.route_ports = [free_port() for _ in range(n)]
        self.mqtt_ports = [free_port() for _ in range(n)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n

    def conf(self, i: int) -> Path:
        d = self.workdir / f"n{i}"
        d.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f"nats://127.0.0.1:{p}" for p in self.route_ports)
        text = f"""server_name: n{i}
listen: 127.0.0.1:{self.client_ports[i]}
jetstream {{ store_dir: "{d}/js" }}
cluster {{ name: central, listen: 127.0.0.1:{self.route_ports[i]}, routes: [{routes}] }}
mqtt {{ listen: 127.0.0.1:{self.mqtt_ports[i]}, stream_replicas: {min(self.n, 3)},
        ack_wait: "{self.ack_wait_s}s", max_ack_pending: {self.max_ack_pending}{self._tls()} }}
{authorization(self.users, self.central_password, self._probe_password)}"""
        (d / "nats.conf").write_text(text)
        return d / "nats.conf"

    def _tls(self) -> str:
        if self.tls_dir is None:
            return ""
        return (f'\n        tls {{ cert_file: "{self.tls_dir}/server.crt", '
                f'key_file: "{self.tls_dir}/server.key", timeout: 5 }}')

    @property
    def cafile(self) -> str | None:
        return None if self.tls_dir is None else str(self.tls_dir / "ca.crt")

    def start_node(self, i: int) -> None:
        exe = _exe("nats-server")
        conf = self.conf(i)
        self.procs[i] = subprocess.Popen([exe, "-c", str(conf), "-l", str(conf.parent / "nats.log")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log(self, i: int) -> str:
        p = self.workdir / f"n{i}" / "nats.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def start(self, timeout: float = 60) -> Self:
        for i in range(self.n):
            self.start_node(i)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Until an MQTT client can get a persistent session with a QoS 1 subscription (the
        JetStream meta leader elected and the MQTT streams created) through every live node."""
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            wait_for(lambda i=i: self._session_ok(self.mqtt_ports[i]), timeout, interval=0.5,
                     what=f"nats node n{i} serving MQTT sessions (log: {self.workdir}/n{i})")

    def _session_ok(self, port: int) -> bool:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{port}", clean_session=True)
        if self.users is not None:
            c.username_pw_set("probe", self._probe_password)
        if self.cafile:
            c.tls_set(ca_certs=self.cafile)
        ok = threading.Event()
        c.on_subscribe = lambda _c, _u, _mid, codes, _p: ok.set() if not any(
            r.is_failure for r in codes) else None
        try:
            c.connect("127.0.0.1", port, 5)
        except OSError:
            return False
        c.loop_start()
        try:
            c.subscribe("probe/#", 1)
            return ok.wait(5)
        finally:
            c.disconnect()
            c.loop_stop()

    def kill(self, i: int) -> None:
        """SIGKILL node i (no clean shutdown)."""
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        self.procs[i] = None

    def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.procs[i] = None


def authorization(users: dict[str, str] | None, central_password: str | None,
                  probe_password: str | None = None) -> str:
    """The cluster's `authorization` block: one user per store bridge (`bridge-{store}`), which
    may publish only on its own store's subjects (MQTT `chain/1/{store}/#` is NATS
    `chain.1.{store}.>`) and subscribe to nothing; the consumer (`central`), which may
    subscribe to the chain and publish nothing. A publish outside a user's subjects is
    acknowledged at QoS 1 and dropped, and the node logs a `Publish Violation` naming the user
    and the subject. MQTT subscriptions go through JetStream: a subscribing user also needs
    `$MQTT.sub.>`, and `chain/1/#` subscribes to `chain.1` as well as `chain.1.>`."""
    if users is None:
        return ""
    rows = []
    for store, pw in sorted(users.items()):
        check_store_id(store)
        rows.append(f'{{ user: "bridge-{store}", password: "{pw}", permissions: {{ '
                    f'publish: {{ allow: ["chain.1.{store}.>", "chain-bridge.{store}.>"] }}, '
                    f'subscribe: {{ deny: [">"] }} }} }}')
    rows.append(f'{{ user: "central", password: "{central_password}", permissions: {{ '
                'publish: { deny: [">"] }, subscribe: { allow: ["chain.1", "chain.1.>", '
                '"chain-bridge.*.state", "$MQTT.sub.>"] } } }')
    if probe_password:   # the rig's readiness probe
        rows.append(f'{{ user: "probe", password: "{probe_password}", permissions: {{ '
                    'publish: { deny: [">"] }, subscribe: { allow: ["probe", "probe.>", "$MQTT.sub.>"] } } }')
    return "authorization {\n  users = [\n    " + "\n    ".join(rows) + "\n  ]\n}\n"


class Postgres:
    """A PostgreSQL server (Debian's, `initdb`/`pg_ctl`) in its own temp directory, on a free
    loopback port, its unix socket in that directory. As root it runs as user `postgres`
    (initdb refuses root), so the directory is made outside pytest's private tmp."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pe-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)),
                           Path("/nonexistent"))
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [_exe(args[0], str(self.bindir)), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    @property
    def dsn(self) -> str:
        return f"host={self.dir} port={self.port} dbname=postgres user=central"

    def init(self) -> Self:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "central", "--no-sync",
                  "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\nfsync = on\n")
        return self

    def start(self) -> Self:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-w",
                  "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash: recovery from WAL at the next start)."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _alive(pid), 20, what="postgres gone")
            # its backends exit when the postmaster is gone; wait for them to release the port
            time.sleep(0.5)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class StoreBridge(Mosquitto):
    """A store's Mosquitto with the generated bridge section to every node of the cluster."""

    def __init__(self, workdir: Path, store_id: str, nodes: list[int], *,
                 username: str | None = None, password: str | None = None,
                 cafile: str | None = None, keepalive_s: int = 5) -> None:
        super().__init__(workdir)
        self.bridge = bridge_config(store_id, "127.0.0.1", nodes[0], keepalive_s=keepalive_s,
                                    restart_backoff=(1, 2),
                                    also=[("127.0.0.1", p) for p in nodes[1:]],
                                    username=username, password=password, cafile=cafile)

    def write_conf(self) -> None:
        super().write_conf()
        with open(self.conf, "a") as f:
            f.write(self.bridge)


class SimStore:
    """One store's chain traffic without a gateway: the outbox's envelopes (chain_payload,
    seq 1, 2, ...) published at QoS 1 to the store's Mosquitto, each counted as sent once the
    store broker PUBACKed it (the gateway outbox deletes its row at that point)."""

    def __init__(self, store_id: str, broker_port: int) -> None:
        self.store_id = store_id
        self.sent: list[int] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-{store_id}",
                                  clean_session=False)
        self.client.max_inflight_messages_set(20)
        self.client.connect("127.0.0.1", broker_port)
        self.client.loop_start()
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def row(self, seq: int) -> dict[str, Any]:
        data = {"id": seq, "device": f"pad-{seq % 7}", "type": "tag.placed",
                "body": {"uid": f"04{seq:08x}"}, "seq": seq}
        return {"id": seq, "stream_id": 1000 + seq, "type": "event.tag.placed",
                "created": int(time.time() * 1000), "data": json.dumps(data)}

    def publish(self, n: int) -> None:
        with self._lock:   # the background stream and a test's own publish share the seq
            self._publish(n)

    def _publish(self, n: int) -> None:
        infos = []
        for _ in range(n):
            self._seq += 1
            seq = self._seq
            infos.append((seq, self.client.publish(
                f"chain/1/{self.store_id}/event/pad-{seq % 7}",
                chain_payload(self.store_id, self.row(seq)), qos=1)))
        for seq, info in infos:
            info.wait_for_publish(60)
            if not info.is_published():
                raise AssertionError(f"{self.store_id}: seq {seq} not PUBACKed by its broker")
            self.sent.append(seq)

    def start_stream(self, total: int, per_batch: int = 10, pause_s: float = 0.05) -> None:
        """Publish `total` more events in the background, `per_batch` at a time."""
        def run() -> None:
            left = total
            while left > 0 and not self._stop.is_set():
                k = min(per_batch, left)
                self.publish(k)
                left -= k
                time.sleep(pause_s)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self, timeout: float = 120) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), f"{self.store_id} still publishing"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.client.disconnect()
        self.client.loop_stop()


class CentralProcess:
    """`python -m gateway.central` as a subprocess (its log in `workdir/central.log`)."""

    def __init__(self, workdir: Path, dsn: str, mqtt_ports: list[int], *extra: str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "central.log"
        self.args = [sys.executable, "-m", "gateway.central", "--dsn", dsn, "--stats-every", "1",
                     *[a for p in mqtt_ports for a in ("--broker", f"127.0.0.1:{p}")], *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        return self

    def counter(self, name: str) -> int:
        """The consumer's last logged value of a counter (0 if never logged)."""
        last = 0
        for line in self.log.read_text(errors="replace").splitlines():
            if "central counters" in line:
                for kv in line.split("central counters", 1)[1].split():
                    k, _, v = kv.partition("=")
                    if k == name:
                        last = int(v)
        return last

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# --- stores with the gateway's own chain outbox ------------------------------------------------

class OutboxStores:
    """Simulated stores that keep their own SQLite database: per store the gateway's storage
    (`Database`, the core schema, WAL), its chain hook and `ChainService` (the outbox row is
    written in the same transaction as the event; `seq` is the outbox row id) and its MQTT
    client (`MqttBus`) to the store's Mosquitto. Only devices and HTTP are left out: events are
    written as the ingest writes them (`Store.insert_events`). All stores share one event loop
    in one thread (a real gateway per store would be ~10 processes more on a 2-core machine,
    for code the chain tests do not exercise)."""

    def __init__(self, workdir: Path, stores: dict[str, int]) -> None:
        import asyncio
        self.workdir = Path(workdir)
        self.ports = stores                      # store id -> its Mosquitto's port
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="outbox-stores")
        self._thread.start()
        self._parts: dict[str, tuple[Any, Any, Any, list[Any]]] = {}
        self._seq: dict[str, int] = dict.fromkeys(stores, 0)
        self._streams: list[threading.Thread] = []
        self._stop = threading.Event()
        for sid in stores:
            self._call(self._open(sid))

    def _call(self, coro: Any, timeout: float = 60) -> Any:
        import asyncio
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def db_path(self, store_id: str) -> Path:
        return self.workdir / store_id / "gateway.db"

    async def _open(self, sid: str) -> None:
        import asyncio

        from gateway.integrations.chain import ChainService
        from gateway.storage.db import Database
        from gateway.transport.bus import MqttBus
        self.db_path(sid).parent.mkdir(parents=True, exist_ok=True)
        holder: list[Any] = []
        db = Database(self.db_path(sid), lambda items: holder[0].notify() if holder else None)
        await db.__aenter__()

        async def ignore(topic: str, payload: bytes) -> None:
            return None

        bus = MqttBus("127.0.0.1", self.ports[sid], ignore, client_id=f"pe-gateway-{sid}",
                      command_lane=False, subscriptions=("pe/1/gateway/state",),
                      backoff_max=2.0)
        chain = ChainService(db, bus.publish, bus.wait_connected, sid)
        holder.append(chain)
        await chain.start()
        tasks = [asyncio.ensure_future(bus.run()), asyncio.ensure_future(chain.run())]
        self._parts[sid] = (db, bus, chain, tasks)

    def produce(self, store_id: str, n: int) -> None:
        """`n` device events committed in the store's database (one transaction), each with
        its chain outbox row."""
        seq0 = self._seq[store_id]
        self._seq[store_id] += n
        now = int(time.time() * 1000)
        rows = [(f"pad-{q % 7}", "e1", q, "tag.placed", now, now, {"uid": f"04{q:08x}"})
                for q in range(seq0 + 1, seq0 + n + 1)]
        db = self._parts[store_id][0]
        self._call(db.write(lambda s: s.insert_events(rows)))

    def start_stream(self, total: int, per_batch: int = 10, pause_s: float = 0.05) -> None:
        """Every store produces `total` more events in the background, `per_batch` at a time."""
        def run(sid: str) -> None:
            left = total
            while left > 0 and not self._stop.is_set():
                k = min(per_batch, left)
                self.produce(sid, k)
                left -= k
                time.sleep(pause_s)
        for sid in self.ports:
            t = threading.Thread(target=run, args=(sid,), daemon=True, name=f"produce-{sid}")
            t.start()
            self._streams.append(t)

    def join(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        for t in self._streams:
            t.join(max(0.1, deadline - time.monotonic()))
            assert not t.is_alive(), f"{t.name} still producing"
        self._streams.clear()

    def committed(self, store_id: str) -> list[int]:
        """The stream ids of the chain-wanted items in the store's own database."""
        return committed_chain_items(self.db_path(store_id))

    def outbox_left(self, store_id: str) -> int:
        import sqlite3
        con = sqlite3.connect(f"file:{self.db_path(store_id)}?mode=ro", uri=True)
        try:
            return int(con.execute("SELECT COUNT(*) FROM chain_outbox").fetchone()[0])
        finally:
            con.close()

    def close(self) -> None:
        import asyncio
        self._stop.set()
        for t in self._streams:
            t.join(30)

        async def shut() -> None:
            for db, bus, _chain, tasks in self._parts.values():
                bus._stopping = True
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await db.close()
        try:
            self._call(shut(), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


class PartitionProxy:
    """TCP relays between one store's bridge and the cluster's nodes (one listening port per
    node), that can cut the store off: `partition()` drops every byte of the open connections
    in both directions (a link gone dead: no FIN, no RST, the peers find out by their
    keepalives) and refuses new ones (the route is gone); `heal()` takes new connections
    again and closes the dead ones (their TCP state would have timed out by then)."""

    def __init__(self, targets: list[int]) -> None:
        import socket
        self.targets = targets
        self.ports = [free_port() for _ in targets]
        self._listeners: list[socket.socket | None] = [None] * len(targets)
        self._conns: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()
        self.cut = False
        self.dropped_bytes = 0
        self._closed = False

    def start(self) -> Self:
        for i in range(len(self.targets)):
            self._listen(i)
        return self

    def _listen(self, i: int) -> None:
        import socket
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.ports[i]))
        s.listen(16)
        self._listeners[i] = s
        threading.Thread(target=self._accept, args=(i, s), daemon=True).start()

    def _accept(self, i: int, srv: Any) -> None:
        import socket
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.targets[i]), timeout=5)
            except OSError:
                c.close()
                continue
            for s in (c, up):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.append((c, up))
            threading.Thread(target=self._pump, args=(c, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, c), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass
                return
            if self.cut:
                self.dropped_bytes += len(data)
                continue
            try:
                dst.sendall(data)
            except OSError:
                src.close()
                return

    def partition(self) -> None:
        import socket
        self.cut = True
        for i, s in enumerate(self._listeners):
            if s is not None:
                with contextlib.suppress(OSError):   # wakes the thread blocked in accept
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
                self._listeners[i] = None

    def heal(self) -> None:
        import socket
        with self._lock:
            dead, self._conns = self._conns, []
        for pair in dead:
            for s in pair:
                try:   # shutdown wakes the pump blocked in recv; close alone would not
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
        self.cut = False
        for i in range(len(self.targets)):
            self._listen(i)

    def close(self) -> None:
        self.partition()
        self.heal()
        for i, s in enumerate(self._listeners):
            if s is not None:
                s.close()
                self._listeners[i] = None


def committed_chain_items(db_path: Path) -> list[int]:
    """The stream ids of the chain-wanted items (`[chain] kinds`, the defaults) a store's
    gateway database committed, read with a connection of its own (WAL: the gateway keeps
    writing)."""
    import sqlite3

    from gateway.integrations.chain import DEFAULT_KINDS
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(DEFAULT_KINDS))
        rows = con.execute(f"SELECT id, kind, data FROM stream WHERE kind IN ({marks}) ORDER BY id",
                           DEFAULT_KINDS).fetchall()
    finally:
        con.close()
    # only final command outcomes leave the store (gateway.integrations.chain.wanted)
    from gateway.storage.store import FINAL_STATUSES
    return [i for i, kind, data in rows
            if kind != "command" or json.loads(data).get("status") in FINAL_STATUSES]


def differences(stored: list[tuple[int, int]], committed: list[int]) -> str | None:
    """What is wrong with one store's (seq, stream_id) rows in PostgreSQL against the stream
    ids its database committed: None when PostgreSQL holds seq 1..N exactly once, N = the
    committed items, with the same stream ids."""
    seqs = sorted(q for q, _s in stored)
    if len(seqs) != len(set(seqs)):
        return "an event stored twice"
    want = list(range(1, len(committed) + 1))
    if seqs != want:
        return (f"PostgreSQL seqs differ from the store's {len(committed)} committed items "
                f"(lost: {sorted(set(want) - set(seqs))[:10]}, unknown: "
                f"{sorted(set(seqs) - set(want))[:10]})")
    if sorted(s for _q, s in stored) != committed:
        return "stream ids differ"
    return None


class HeadOfficeRig:
    """The whole chain on loopback: `stores` stores (`OutboxStores`: their own SQLite and chain
    outbox) → their Mosquitto → bridge (through a `PartitionProxy` each) → the 3-node NATS
    cluster → `phygital central` → PostgreSQL. `secure`: per-store bridge users on the
    cluster (`authorization`), TLS on its MQTT listeners with a test CA, the consumer with its
    own user. `check()` counts PostgreSQL by (store, seq) against the stores' databases."""

    def __init__(self, workdir: Path, stores: int = 10, *, secure: bool = True) -> None:
        self.workdir = Path(workdir)
        self._parts: list[Any] = []
        try:
            self._start(stores, secure)
        except BaseException:
            self.close()
            raise

    def _start(self, n: int, secure: bool) -> None:
        ids = [f"store-{i:04d}" for i in range(n)]
        self.pg = Postgres().init().start()
        self._parts.append(self.pg)
        tls_dir = None
        self.passwords: dict[str, str] | None = None
        if secure:
            from gateway.provision import make_certs
            tls_dir = self.workdir / "ca"
            tls_dir.mkdir(parents=True, exist_ok=True)
            make_certs(tls_dir, "central", ["localhost"], ["127.0.0.1"])
            self.passwords = {sid: os.urandom(12).hex() for sid in ids}
        self.cluster = NatsCluster(self.workdir / "nats", users=self.passwords,
                                   tls_dir=tls_dir).start()
        self._parts.append(self.cluster)
        ports = self.cluster.mqtt_ports
        self.proxies: dict[str, PartitionProxy] = {}
        self.brokers: dict[str, StoreBridge] = {}
        for i, sid in enumerate(ids):
            order = ports[i % 3:] + ports[:i % 3]     # bridges spread over the nodes
            proxy = PartitionProxy(order).start()
            self._parts.append(proxy)
            self.proxies[sid] = proxy
            b = StoreBridge(self.workdir / sid, sid, proxy.ports,
                            username=f"bridge-{sid}" if secure else None,
                            password=self.passwords[sid] if self.passwords else None,
                            cafile=self.cluster.cafile, keepalive_s=3).start()
            self._parts.append(b)
            self.brokers[sid] = b
        extra: list[str] = []
        if secure:
            pw = self.workdir / "central.pw"
            pw.write_text(str(self.cluster.central_password))
            extra = ["--username", "central", "--password-file", str(pw),
                     "--cafile", str(self.cluster.cafile)]
        self.central = CentralProcess(self.workdir / "central", self.pg.dsn, ports, *extra).start()
        self._parts.append(self.central)
        # the consumer's session must exist before the stores send (MQTT drops what has no
        # subscriber): the bridges' retained notifications arrive once it has subscribed
        wait_for(lambda: self.bridges_up() == n, 90, interval=0.3,
                 what=f"consumer subscribed and {n} bridges up (central log {self.central.log})")
        self.stores = OutboxStores(self.workdir / "gw", {sid: self.brokers[sid].port
                                                         for sid in ids})
        self._parts.append(self.stores)

    def db(self) -> Any:
        import psycopg
        return psycopg.connect(self.pg.dsn, autocommit=True)

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg
        try:
            with self.db() as c:
                return list(c.execute(sql, args).fetchall())
        except psycopg.Error:
            return []

    def bridges_up(self) -> int:
        rows = self._query("SELECT count(*) FROM chain_stores WHERE bridge_up")
        return int(rows[0][0]) if rows else 0

    def bridge_up(self, store_id: str) -> bool | None:
        rows = self._query("SELECT bridge_up FROM chain_stores WHERE store = %s", store_id)
        return rows[0][0] if rows else None

    def stored(self) -> dict[str, list[tuple[int, int]]]:
        """PostgreSQL's (seq, stream_id) per store."""
        out: dict[str, list[tuple[int, int]]] = {}
        for store, seq, sid in self._query("SELECT store, seq, stream_id FROM chain_events"):
            out.setdefault(store, []).append((seq, sid))
        return out

    def missing(self) -> dict[str, int]:
        """Per store, how many committed events PostgreSQL does not hold yet (and outbox rows
        not yet handed to the store broker)."""
        stored = self.stored()
        out = {}
        for sid in self.brokers:
            have = {s for _q, s in stored.get(sid, [])}
            left = len(set(self.stores.committed(sid)) - have) + self.stores.outbox_left(sid)
            if left:
                out[sid] = left
        return out

    def wait_all_stored(self, timeout: float = 180) -> None:
        try:
            wait_for(lambda: not self.missing(), timeout, interval=0.5,
                     what="every store's events in PostgreSQL")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; missing per store: {self.missing()}; central log "
                                 f"{self.central.log}") from None

    def check(self) -> dict[str, int]:
        """Nothing lost, nothing doubled: per store, PostgreSQL holds seq 1..N exactly once,
        N = the chain items committed in the store's own SQLite, with the same stream ids;
        no gap left open. Returns N per store."""
        stored = self.stored()
        counts = {}
        for sid in self.brokers:
            committed = self.stores.committed(sid)
            wrong = differences(stored.get(sid, []), committed)
            assert wrong is None, f"{sid}: {wrong}"
            counts[sid] = len(committed)
        gaps = self._query("SELECT store, first_seq, last_seq FROM chain_gaps WHERE closed IS NULL")
        assert gaps == [], f"open gaps: {gaps}"
        return counts

    def counter(self, name: str) -> int:
        """The consumer's last logged value of a counter (0 if never logged)."""
        return self.central.counter(name)

    def violations(self) -> list[str]:
        """`Publish Violation` lines of every node's log (a user publishing outside its
        subjects: acknowledged and dropped by the cluster)."""
        return [ln for i in range(self.cluster.n) for ln in self.cluster.log(i).splitlines()
                if "Publish Violation" in ln]

    def close(self) -> None:
        for part in reversed(self._parts):
            stop = part.stop if isinstance(part, (CentralProcess, StoreBridge, NatsCluster)) \
                else part.close
            try:
                stop()
            except Exception:  # one part failing must not leave the others running
                log.exception("stopping %r failed", part)
        self._parts.clear()

