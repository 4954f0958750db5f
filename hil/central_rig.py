"""Head office on loopback, for tests and benchmarks: a 3-node NATS cluster (JetStream, MQTT),
a PostgreSQL server in a temp directory, simulated stores (a Mosquitto bridged to the cluster
with the generated bridge section, fed real chain envelopes) and `phygital central` as a
subprocess (SIGKILL-able). docs/chain.md "Head office"."""
from __future__ import annotations

import json
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

from gateway.integrations.chain import bridge_config, chain_payload
from hil.harness import ROOT, Mosquitto, free_port, wait_for


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
                 max_ack_pending: int = 1000) -> None:
        self.workdir = Path(workdir)
        self.n = n
        self.ack_wait_s, self.max_ack_pending = ack_wait_s, max_ack_pending
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
        ack_wait: "{self.ack_wait_s}s", max_ack_pending: {self.max_ack_pending} }}
"""
        (d / "nats.conf").write_text(text)
        return d / "nats.conf"

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

    @staticmethod
    def _session_ok(port: int) -> bool:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{port}", clean_session=True)
        ok = threading.Event()
        c.on_subscribe = lambda *a: ok.set()
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

    def __init__(self, workdir: Path, store_id: str, nodes: list[int]) -> None:
        super().__init__(workdir)
        self.bridge = bridge_config(store_id, "127.0.0.1", nodes[0], keepalive_s=5,
                                    restart_backoff=(1, 2),
                                    also=[("127.0.0.1", p) for p in nodes[1:]])

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
