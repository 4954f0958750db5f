"""Processes a store runs on: a real Mosquitto and the gateway, for tests, benchmarks and rigs."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import httpx

ROOT = Path(__file__).resolve().parents[1]


def authorize_local_clients() -> str:
    """Test and bench rigs: every gateway this process starts gets a bootstrap admin token
    (`PHYGITAL_ADMIN_TOKEN`, gateway/http/auth.py) and every httpx client carries it unless the
    caller sets its own `Authorization` (an empty one sends none). Rate limits are lifted so
    benchmarks measure the gateway, not the limiter (tests of the limits set their own)."""
    token = os.environ.setdefault("PHYGITAL_ADMIN_TOKEN", f"pe_rig_{secrets.token_hex(16)}")
    os.environ.setdefault("PHYGITAL_RATE_LIMITS", "per_token=1e6/1e6")
    for cls in (httpx.Client, httpx.AsyncClient):
        if getattr(cls.__init__, "_rig_token", False):
            continue
        orig = cls.__init__

        def init(self, *args, headers=None, _orig=orig, **kwargs):
            h = httpx.Headers(headers)
            if "authorization" not in h:
                h["Authorization"] = f"Bearer {os.environ['PHYGITAL_ADMIN_TOKEN']}"
            _orig(self, *args, headers=h, **kwargs)

        init._rig_token = True
        cls.__init__ = init
    return token


authorize_local_clients()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


class Mosquitto:
    """A real Mosquitto broker on a free loopback port, stoppable and restartable on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"

    def write_conf(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "max_queued_messages 100000",
            # Nagle off: otherwise a small command/ack waits for the peer's delayed ACK (~40 ms)
            "set_tcp_nodelay true",
            f"log_dest file {self.log}",
            "log_type error", "log_type warning", "log_type notice",
        ]
        if os.environ.get("PE_MOSQUITTO_DEBUG"):  # every packet in the log, to diagnose a test
            lines += ["log_type debug", "log_type information", "log_timestamp_format %H:%M:%S"]
        if os.geteuid() == 0:
            # as root, mosquitto drops to user `mosquitto`, which cannot write this workdir:
            # it would silently run without its log and without persistence
            lines.append("user root")
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/",
                      "autosave_interval 1"]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10) -> Self:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto not installed: apt-get install mosquitto (see README)")
        self.write_conf()
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text() if self.log.exists() else ''}")
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final persistence save (what a crash does)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def wait_persisted(self, after: float, timeout: float = 15) -> None:
        """Until the broker has written its persistence file (every `autosave_interval`) at or
        after `after` (time.time()): what it held then survives a SIGKILL."""
        db = self.workdir / "mosquitto.db"
        wait_for(lambda: db.exists() and db.stat().st_mtime >= after, timeout,
                 what=f"mosquitto on port {self.port} saved its state")

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password file and ACL (new device credentials)."""
        self.proc.send_signal(signal.SIGHUP)


class ProvisionedMosquitto(Mosquitto):
    """The production broker: the config `tools/provision.py init` wrote into `store_dir`
    (TLS listener, no anonymous clients, per-user passwords, the ACL, client id = user name,
    persistence with the deployed autosave interval), run as it is. `port`: the TLS listener
    (`port_name="local_port"`: the plain loopback listener, if provisioned)."""

    def __init__(self, store_dir: Path, port_name: str = "port"):
        self.store_dir = Path(store_dir)
        st = json.loads((self.store_dir / "store.json").read_text())
        super().__init__(self.store_dir / "mosquitto", port=st[port_name])
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"

    def write_conf(self) -> None:  # the tool wrote it; PE_MOSQUITTO_DEBUG: every packet logged
        text = self.conf.read_text()
        debug = "log_type debug\nlog_type information\n"
        if os.environ.get("PE_MOSQUITTO_DEBUG") and debug not in text:
            self.conf.write_text(text + "\n" + debug)


EVENT_PAGE = 1000  # the API's largest /events page
_HTTP_LOCK = threading.Lock()


class GatewayClient:
    """The HTTP API calls tests make of a gateway at `self.url` (a process or in-process).

    The methods open a connection per call; `http` is one kept-open client for a test's own
    requests (httpx's pool; threads may share it)."""

    url: str
    _http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        """A client on `self.url` (a new one when the url changed or it was closed)."""
        with _HTTP_LOCK:  # two threads must not each make one (the loser's would be closed)
            if (self._http is None or self._http.is_closed
                    or str(self._http.base_url).rstrip("/") != self.url.rstrip("/")):
                self.close_http()
                self._http = httpx.Client(base_url=self.url, timeout=30)
            return self._http

    def close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def get(self, path: str, **params):
        r = httpx.get(self.url + path, params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    def events(self, device: str, type: str | None = None, **params) -> list[dict]:
        """Every event of `device` (of `type`), oldest first, read page by page."""
        if type:
            params["type"] = type
        out: list[dict] = []
        after = 0
        while True:
            page = self.get("/events", device=device, after=after, limit=EVENT_PAGE, **params)
            out += page["events"]
            if len(page["events"]) < EVENT_PAGE:
                return out
            after = page["next_after"]

    def device(self, dev: str) -> dict | None:
        r = httpx.get(f"{self.url}/devices/{dev}", timeout=10)
        return r.json() if r.status_code == 200 else None

    def command(self, dev: str, name: str, args: dict, key: str, timeout_s: float = 10,
                wait: bool = True) -> dict:
        r = httpx.post(f"{self.url}/devices/{dev}/commands", timeout=timeout_s + 10,
                       json={"name": name, "args": args, "idempotency_key": key,
                             "timeout_s": timeout_s, "wait": wait})
        assert r.status_code in (200, 202), r.text
        return r.json()

    def wait_online(self, dev: str, online: bool = True, timeout: float = 15) -> dict:
        return wait_for(lambda: (d := self.device(dev)) is not None and d["online"] is online
                        and d, timeout, what=f"{dev} online={online}")


class GatewayProcess(GatewayClient):
    """`python -m gateway` as a child process, so a test can SIGKILL and restart it.

    `samples`: a catalog (written to the workdir) or the path of a samples file. The HTTP
    port, the client id (one broker session per instance, kept across its restarts) and the
    CoAP port stay the same across restarts. `root`: the source tree to run (a patched copy)."""

    def __init__(self, workdir: Path, broker_port: int, samples: dict | Path | None = None,
                 coap_heartbeat_s: float | None = None,
                 extra_args: list[str] | tuple[str, ...] | None = None, *,
                 http_port: int | None = None, client_id: str | None = None,
                 root: Path | None = None, locker_keys: Path | None = None):
        self.extra_args = list(extra_args or [])  # e.g. ["--stock", path]
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker_port = broker_port
        self.http_port = http_port or free_port()
        self.client_id = client_id or f"gw-{self.http_port}"
        self.root = Path(root) if root else ROOT
        self.db = self.workdir / "gateway.db"
        self.log = self.workdir / "gateway.log"
        if isinstance(samples, (str, Path)):
            self.samples = Path(samples)
        else:
            self.samples = self.workdir / "samples.json"
            self.samples.write_text(json.dumps(samples or {}))
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.http_port}"
        # CoAP edge on a fixed free UDP port (kept across restarts: devices know it)
        self.coap_port = None if coap_heartbeat_s is None else free_port(socket.SOCK_DGRAM)
        self.coap_args = [] if self.coap_port is None else [
            "--coap", f"127.0.0.1:{self.coap_port}", "--coap-heartbeat", str(coap_heartbeat_s)]
        # CoAP devices authenticate: their keys go here (hil.sim.store.VirtualStore(coap_keys=))
        self.coap_keys = self.workdir / "coap-keys.json"
        if self.coap_port is not None:
            if not self.coap_keys.exists():
                self.coap_keys.write_text("{}")
            self.coap_args += ["--coap-keys", str(self.coap_keys)]
        # locker banks' code keys (hil.sim.store.VirtualStore(locker_keys=) writes them, or a
        # provisioned store's locker-keys.json)
        self.locker_keys = Path(locker_keys) if locker_keys else self.workdir / "locker-keys.json"
        if not self.locker_keys.exists():
            self.locker_keys.write_text("{}")
        self.env: dict[str, str] = {}   # extra environment (fault injection: hil/faults.py)

    def command_line(self) -> list[str]:
        return [sys.executable, "-m", "gateway", "--broker", f"127.0.0.1:{self.broker_port}",
                "--db", str(self.db), "--http", f"127.0.0.1:{self.http_port}",
                "--samples", str(self.samples), "--client-id", self.client_id,
                "--locker-keys", str(self.locker_keys), *self.coap_args, *self.extra_args]

    def start(self, timeout: float = 20.0, wait_mqtt: bool = True) -> GatewayProcess:
        """Start and wait for `/health` (and, with `wait_mqtt`, its broker connection)."""
        with open(self.log, "ab") as log:  # the child keeps its own fd
            self.proc = subprocess.Popen(
                self.command_line(), cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1", **self.env))
        try:
            wait_for(lambda: self._healthy(wait_mqtt), timeout, what="gateway /health")
        except BaseException:
            self.kill()
            raise
        return self

    def _healthy(self, wait_mqtt: bool = False) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited {self.proc.returncode}:\n" + self.log_text()[-3000:])
        try:
            r = httpx.get(self.url + "/health", timeout=1)
            return r.status_code == 200 and (not wait_mqtt or r.json()["mqtt"] == "connected")
        except (httpx.HTTPError, ValueError):
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (a clean shutdown) and its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()
        self.close_http()
