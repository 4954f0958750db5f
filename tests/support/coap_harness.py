"""Harness for the CoAP tests: the real gateway in-process with the CoAP edge wired in, a
lossy UDP proxy, and a MicroPython device on the CoAP transport. (No tests here.)

The gateway runs on its own thread and event loop, built by `gateway.app.Gateway` with its
CoAP edge on (`GatewayConfig.coap_port`), so the tests can reach into it (`.gw`, `.edge`).
"""
from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from gateway.app import Gateway, GatewayConfig
from gateway.transport.coap import CoapEdge
from gateway.transport.coap_auth import add_key
from hil.harness import GatewayClient
from hil.sim.firmware import (
    FirmwareProcess,
)
from tests.support.scripted_device import ScriptedDevice


def coap_client() -> str | None:
    """Debian's libcoap3-bin installs coap-client-notls (and -gnutls/-openssl); `coap-client`
    is an alternatives link that may be missing."""
    for name in ("coap-client", "coap-client-notls", "coap-client-gnutls", "coap-client-openssl"):
        found = shutil.which(name)
        if found:
            return found
    return None


class CoapGateway(GatewayClient):
    """Gateway + CoAP edge on a background loop; HTTP API on a free port. Devices need a key
    in `keys_file` (`CoapDevice(..., keys=g.keys_file)`), unless the gateway is made with
    `allow_unauthenticated=True`."""

    def __init__(self, workdir: Path, broker_port: int, allow_unauthenticated: bool = False,
                 **edge_options: Any) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keys_file = self.workdir / "coap-keys.json"
        if not self.keys_file.exists():
            self.keys_file.write_text("{}")
        self.allow_unauthenticated = allow_unauthenticated
        self.broker_port = broker_port
        self.edge_options = edge_options  # further CoapEdge keywords
        self.client_id = f"gw-coap-{secrets.token_hex(3)}"
        self.coap_port = 0
        self.gw: Gateway | None = None
        self.edge: CoapEdge | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.url = ""

    def start(self) -> CoapGateway:
        ready = threading.Event()
        port = self.coap_port

        async def main() -> None:
            options = dict(self.edge_options)
            cfg = GatewayConfig(broker_port=self.broker_port, db_path=self.workdir / "gw.db",
                                http_port=0, client_id=self.client_id, coap_port=port,
                                coap_heartbeat_s=options.pop("heartbeat_s", 2.0),
                                coap_dedupe_max=options.pop("dedupe_max", 8192),
                                coap_keys_file=self.keys_file,
                                coap_allow_unauthenticated=self.allow_unauthenticated,
                                coap_options=options)
            gw = Gateway(cfg)
            self.gw, self.edge, self.loop = gw, gw.coap, asyncio.get_running_loop()
            async with gw:
                http = asyncio.create_task(gw.run())
                while gw.http_port is None and not http.done():
                    await asyncio.sleep(0.01)
                ready.set()
                await http

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - surfaced by start()/stop()
                self._error = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True, name="coap-gateway")
        self._thread.start()
        assert ready.wait(20), "gateway did not start"
        if self._error:
            raise self._error
        self.coap_port = self.edge.port  # a restart keeps the port: devices know it
        self.url = f"http://127.0.0.1:{self.gw.http_port}"
        return self

    def stop(self) -> None:
        if self._thread and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.gw.stop)
            self._thread.join(20)
        self._thread = None
        self.close_http()

    def call(self, fn, *args, timeout: float = 10) -> Any:
        """Run a coroutine function on the gateway's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(timeout)


class LossyProxy:
    """A UDP relay between one device and the gateway that drops, duplicates and reorders.

    Each datagram, in each direction: dropped with `drop`; else sent once, plus a duplicate
    with `dup` (after 0-30 ms); with `reorder` it is held back 5-60 ms so later datagrams
    overtake it. Deterministic per `seed`."""

    def __init__(self, target_port: int, drop: float = 0.2, dup: float = 0.1,
                 reorder: float = 0.2, seed: int = 7) -> None:
        self.target = ("127.0.0.1", target_port)
        self.drop, self.dup, self.reorder = drop, dup, reorder
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # towards the gateway
        self.up.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.client: tuple[str, int] | None = None
        self.counts = {"in": 0, "dropped": 0, "duplicated": 0, "reordered": 0}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        for target in (self._down, self._up):
            threading.Thread(target=target, daemon=True).start()

    def _send(self, sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        with self._lock:
            self.counts["in"] += 1
            r = self.rng.random()
            if r < self.drop:
                self.counts["dropped"] += 1
                return
            delays = [self.rng.uniform(0.005, 0.06) if self.rng.random() < self.reorder else 0.0]
            if self.rng.random() < self.dup:
                self.counts["duplicated"] += 1
                delays.append(self.rng.uniform(0.0, 0.03))
            if delays[0]:
                self.counts["reordered"] += 1
        for d in delays:
            if d == 0:
                sock.sendto(data, addr)
            else:
                t = threading.Timer(d, sock.sendto, (data, addr))
                t.daemon = True
                t.start()

    def _down(self) -> None:  # device → gateway
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.client = addr
            self._send(self.up, data, self.target)

    def _up(self) -> None:  # gateway → device
        self.up.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, _ = self.up.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.client:
                self._send(self.sock, data, self.client)

    def close(self) -> None:
        self._stop.set()
        time.sleep(0.3)
        self.sock.close()
        self.up.close()


class CoapDevice(ScriptedDevice):
    """The real firmware runtime on the CoAP transport with the scripted app
    (tests/support/scripted_device.py), logging its heap; `transport`: CoapTransport keywords."""

    def __init__(self, tmp_path: Path, port: int, dev: str, keepalive: int = 2,
                 app: dict | None = None, keys: Path | None = None, **transport: Any) -> None:
        super().__init__(tmp_path, port, dev, keepalive=keepalive,
                         app={"heap_log": True, **(app or {})}, coap=transport)
        if keys is not None:  # provisioned: the gateway's keys file gets a key for it
            self.config["mqtt"]["key"] = add_key(keys, dev, rotate=True)
            self.write_config()


class CoapFirmware(FirmwareProcess):
    """A real device app (e.g. the sample pad on the virtual rig) on the CoAP transport: its
    config says `"transport": "coap"`, and it boots as a device does (main.py, edge.boot.main).

    It used to boot through a runner script of its own, written before edge.boot read
    `transport`: compiled from source in the device's heap, it kept the boot-only code a
    device drops after boot (edge.config, edge.runtime_boot, edge.boot: ~5.5 KB) and skipped
    the boot's gc.threshold. The sample pad then ran at ~93 KB in use of a 97 KB heap instead
    of ~87.5 KB, on an edge where a few hundred bytes of bytecode decided whether a command's
    answer found a hole (docs/benchmarks.md, session 10)."""

