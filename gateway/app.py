"""The gateway process: wires store, bus, ingest, commands, the device kinds' services
(gateway/kinds/registry.py) and the HTTP API together.

    async with Gateway(GatewayConfig(...)) as gw:   # opens the DB, loads samples, connects
        await gw.run()                              # serves HTTP until gw.stop()

Everything runs on one asyncio loop (uvicorn included); SQLite runs on its own two threads
(`gateway.storage.db`). Shutdown order: stop HTTP (ends SSE streams) → stop command ticks → commit
and acknowledge what is queued → publish retained `offline` → disconnect → close the DB.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import uvicorn

from gateway.aisle import RETENTION as AISLE_RETENTION
from gateway.aisle.service import AisleService
from gateway.analytics.service import AnalyticsService
from gateway.devices.alerts import AlertsService
from gateway.devices.cmdtrace import TRACE
from gateway.devices.commands import CommandService, now_ms
from gateway.devices.ingest import IngestWorker
from gateway.devices.liveness import LivenessMonitor
from gateway.devices.ota_service import OtaService, bundle_dir
from gateway.http.api import create_app
from gateway.http.auth import Limits
from gateway.http.stream import Broadcaster
from gateway.integrations.capacity import CapacitySettings, CapacityWatch
from gateway.integrations.chain import DEFAULT_KINDS as DEFAULT_CHAIN_KINDS
from gateway.integrations.chain import ChainService
from gateway.integrations.metrics import GatewayMetrics
from gateway.integrations.webhooks import WebhookService, WebhookSettings
from gateway.kinds.base import DeviceKind, KindContext, KindService
from gateway.kinds.registry import KINDS, build_order, migrations, retention_rules
from gateway.storage.db import Database
from gateway.storage.retention import Retention, RetentionPolicy, kind_floor
from gateway.storage.store import Store, StreamItem
from gateway.transport.bus import MqttBus
from gateway.transport.coap import CoapEdge, TransportRouter
from gateway.transport.coap_auth import CoapAuth

log = logging.getLogger("gateway")
LIVENESS_BACKLOG = 100  # queued device messages above which nobody is judged silent
OTA_SUFFIX = "/ota"


@dataclass(frozen=True)
class GatewayConfig:
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    db_path: Path = Path("var/gw.db")
    http_host: str = "127.0.0.1"
    http_port: int = 8080                 # 0: pick a free port (see Gateway.http_port)
    samples_file: Path | None = None
    client_id: str = "pe-gateway"         # MQTT client id; the broker keeps its session
    keepalive_s: int = 30
    publish_timeout_s: float = 5.0        # a QoS 1 publish without PUBACK by then has failed
    ingest_batch_max: int = 2048          # ack coalescing: messages per transaction / ack round
    ack_linger_s: float = 0.005           # a tiny batch waits this long for more (IngestWorker)
    command_resend_s: float = 2.0         # resend pending commands this often while online
    command_grace_s: float = 2.0          # expire this long after the deadline
    stream_keep: int = 100_000            # stream rows kept for Last-Event-ID resume
    # capacity (docs/configuration.md [database], gateway/integrations/capacity.py): disk.low
    # below the larger of the two (10 % of a 32 GB card: 3.2 GB, days of a busy store's writes)
    disk_alert_free_percent: float = 10.0
    disk_alert_free_mb: float = 1024.0
    capacity_check_s: float = 60.0
    # retention (docs/configuration.md [retention], gateway/storage/retention.py); days, 0 = forever
    retention_events_days: float = 30.0
    retention_commands_days: float = 90.0
    retention_audit_days: float = 365.0
    retention_alerts_days: float = 90.0
    retention_webhook_days: float = 30.0
    retention_event_hours_days: float = 730.0  # the hourly rollups: far longer than the events
    retention_aisle_days: float = 90.0
    retention_fitting_days: float = 365.0  # the kinds' keys (DeviceKind.retention)
    retention_lockers_days: float = 365.0
    retention_door_counts_days: float = 365.0
    retention_batch_rows: int = 500
    retention_vacuum_pages: int = 500
    retention_interval_s: float = 3600.0
    locker_tick_s: float = 1.0            # locker banks: expiry tick / event catch-up period
    locker_reserve_s: float = 4 * 3600    # locker banks: an unloaded reservation lasts this long
    locker_pickup_window_s: float = 3 * 24 * 3600  # locker banks: a pickup code works this long
    locker_keys_file: Path | None = None  # locker banks' code keys (tools/provision.py, locker-keys.json)
    device_silent_s: float = 300.0        # an online MQTT device silent this long is asked for
    device_answer_s: float = 30.0         # a rebirth, and marked offline if it does not answer
                                          # in this long (gateway/devices/liveness.py); 0 = off
    coap_host: str = "127.0.0.1"
    coap_port: int | None = None          # CoAP device edge (UDP): None = off, 0 = a free port
    coap_heartbeat_s: float = 30.0        # CoAP devices that do not say: offline after 3 missed
    coap_dedupe_max: int = 8192           # bound of the CoAP duplicate table (docs/coap.md)
    coap_options: dict = field(default_factory=dict)  # further CoapEdge keywords (tests, tuning)
    coap_keys_file: Path | None = None    # per-device CoAP keys (tools/provision.py, coap-keys.json)
    coap_allow_unauthenticated: bool = False  # serve CoAP devices that have no key (docs/security.md)
    shutdown_timeout_s: float = 5.0
    stock_file: Path | None = None        # fitting rooms: stock JSON (docs/fitting-rooms.md)
    stock_url: str | None = None          # ... or a store system's stock API
    fitting_swap_n: int = 3               # back-and-forth alert: swaps ...
    fitting_swap_window_s: float = 600.0  # ... within this long
    screens_language: str = "en"          # customer screens: default language (docs/configuration.md)
    screens_texts_file: Path | None = None  # ... and the store's own words (JSON)
    # integrations (docs/configuration.md): webhooks, chain of stores
    webhook_backoff_min_s: float = 1.0    # first retry after ~this, doubling ...
    webhook_backoff_max_s: float = 300.0  # ... up to this (jittered)
    webhook_timeout_s: float = 10.0       # one HTTP attempt
    webhook_max_pending: int = 100_000    # undelivered per subscription; past it, drop-oldest
    store_id: str | None = None           # chain of stores: this store's id; None = off
    chain_kinds: tuple[str, ...] = DEFAULT_CHAIN_KINDS
    chain_outbox_alert_rows: int = 500_000  # chain.backlog alert above this (never dropped)
    chain_central_url: str | None = None  # head office's availability (docs/chain.md); None: the
    chain_central_token_file: Path | None = None  # stock source's own `nearby` figures
    tube_network: Path | None = None      # tube network file (None: boards/tube/store-demo.json)
    tube_tick_s: float = 0.5              # tube arbiter: longest sleep between ticks
    fitting_tube_station: str | None = None  # sizes by tube to this station; None: "fitting-rooms" if any, "off": never
    aisle_stations: tuple[str, ...] = ()  # endless aisle: "<device>=<tube station>" nearest each screen
    aisle_backoff_min_s: float = 1.0      # endless aisle outbox: first retry after ~this, doubling ...
    aisle_backoff_max_s: float = 300.0    # ... up to this (jittered)
    aisle_max_attempts: int = 8           # ... then the message is `failed` (staff see it)
    mqtt_user: str | None = None          # broker credentials (tools/provision.py gateway.json)
    mqtt_password: str | None = None
    mqtt_ca: str | None = None            # store CA file: connect with TLS, verify the broker
    mqtt_cmd_user: str | None = None      # the command lane's own user (None: the main one's);
    mqtt_cmd_password: str | None = None  # a provisioned broker binds client ids to users


class _Server(uvicorn.Server):
    """uvicorn inside our loop: the gateway owns signal handling, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Gateway:
    def __init__(self, config: GatewayConfig, *, clock: Callable[[], int] = now_ms) -> None:
        self.config = config
        self.clock = clock
        self.limits = Limits.from_env()  # PHYGITAL_RATE_LIMITS: a bad value fails here, at start
        self.broadcaster = Broadcaster(max_per_key=self.limits.streams_per_token,
                                       max_total=self.limits.streams_total)
        self.db = Database(config.db_path, on_commit=self._on_commit,
                           kind_migrations=migrations(KINDS))
        self.bus = MqttBus(config.broker_host, config.broker_port, self._on_message,
                           client_id=config.client_id, keepalive=config.keepalive_s,
                           publish_timeout=config.publish_timeout_s, clock=clock,
                           username=config.mqtt_user, password=config.mqtt_password,
                           tls_ca=config.mqtt_ca, lane_username=config.mqtt_cmd_user,
                           lane_password=config.mqtt_cmd_password)
        self.coap = None if config.coap_port is None else CoapEdge(
            config.coap_host, config.coap_port, self._on_coap_message, clock=clock,
            heartbeat_s=config.coap_heartbeat_s, dedupe_max=config.coap_dedupe_max,
            state_path=config.db_path.with_name(config.db_path.name + ".coap.json"),
            keys_file=config.coap_keys_file,
            allow_unauthenticated=config.coap_allow_unauthenticated,
            **config.coap_options)
        # one publisher for everything the gateway sends a device: CoAP devices get theirs
        # from the CoAP edge, the others (and the gateway state) from the MQTT bus
        self.router = TransportRouter(self.bus.publish, *([self.coap] if self.coap else []),
                                     fallback_many=self.bus.publish_many)
        self.commands = CommandService(self.db, self.router.publish,
                                       resend_s=config.command_resend_s,
                                       grace_s=config.command_grace_s, clock=clock)
        self.ingest = IngestWorker(self.db, self.router.publish, on_birth=self._on_birth,
                                   publish_many=self.router.publish_many,
                                   batch_max=config.ingest_batch_max,
                                   linger_s=config.ack_linger_s, clock=clock)
        self.commands.on_submit = self.ingest.expedite  # small batches while commands wait
        self.commands.on_settled = self.ingest.relax    # ... and only while they wait
        # devices whose last will does not cover them (none set, or lost): gateway/devices/liveness.py
        self.liveness = None if config.device_silent_s <= 0 else LivenessMonitor(
            self.db, self.router.publish, idle_s=config.device_silent_s,
            answer_s=config.device_answer_s, clock=clock,
            skip=lambda dev: self.coap is not None and self.coap.handles(dev),
            ready=lambda: self.bus.connected and self.ingest.queue.qsize() < LIVENESS_BACKLOG)
        self.alerts = AlertsService(self.db, clock)
        # over-the-air updates (docs/ota.md): the offers are signed with each device's key,
        # the CoAP key tools/provision.py gives every device (the CoAP edge's, or the file's)
        keys = self.coap.auth if self.coap is not None else (
            CoapAuth(config.coap_keys_file) if config.coap_keys_file is not None else None)
        self.ota = OtaService(self.db, self.commands, self.router.publish,
                              keys.key_of if keys is not None else (lambda dev: None),
                              bundle_dir(config.db_path), clock=clock)
        if self.coap is not None:  # CoAP devices fetch chunks over CoAP (docs/ota.md)
            self.coap.chunks = self.ota.coap_answer
        # the device kinds' services, by kind name; also attributes (gw.lockers, gw.tube...)
        self.kinds: tuple[DeviceKind, ...] = KINDS
        self.services: dict[str, KindService] = {}
        for kind in build_order(self.kinds):
            self.services[kind.name] = kind.build(KindContext(
                self.db, self.commands, clock,
                {name: getattr(config, name) for name in kind.settings}, dict(self.services)))
            setattr(self, kind.name, self.services[kind.name])
        # the analytics tier reads the kinds' stream items; receipts and door counts go to the
        # fitting rooms too (their try-on attribution and their own footfall figure); the
        # kinds' entries hooks (the door counter's minutes) feed the funnel's entries
        fitting: Any = self.services.get("fitting")
        self.analytics = AnalyticsService(
            self.db, clock, attribute=fitting.purchases if fitting is not None else None,
            door_count=fitting.door_count if fitting is not None else None,
            entries={k.name: k.entries for k in self.kinds if k.entries is not None},
            # the chain on: hour reports of the funnel for head office (docs/chain.md)
            report_hours=config.store_id is not None and "analytics" in config.chain_kinds)
        # the endless aisle (gateway/aisle/): the tube, the lockers and the fitting rooms' stock
        # and tube station, handed over (it is a tier, not a kind)
        self.aisle = AisleService(
            self.db, clock, stock=lambda: getattr(fitting, "stock", None),
            tube=self.services.get("tube"), lockers=self.services.get("lockers"),
            fitting_station=getattr(getattr(fitting, "dispatcher", None), "station", None),
            stations=dict(s.split("=", 1) for s in config.aisle_stations),
            backoff=(config.aisle_backoff_min_s, config.aisle_backoff_max_s),
            max_attempts=config.aisle_max_attempts, language=config.screens_language)
        # an event a kind has not applied yet is never pruned (DeviceKind.event_cursor); the
        # kinds' history tables and the aisle's go by their own rules (DeviceKind.retention,
        # gateway.aisle.RETENTION), each with the age its [retention] key sets
        self.retention = Retention(self.db, RetentionPolicy(
            events_days=config.retention_events_days, commands_days=config.retention_commands_days,
            audit_days=config.retention_audit_days, alerts_days=config.retention_alerts_days,
            webhook_days=config.retention_webhook_days,
            event_hours_days=config.retention_event_hours_days,
            batch_rows=config.retention_batch_rows,
            vacuum_pages=config.retention_vacuum_pages, interval_s=config.retention_interval_s),
            clock, floors=[functools.partial(kind_floor, device_kinds=tuple(k.apps),
                                             cursor=k.event_cursor)
                           for k in self.kinds if k.event_cursor is not None],
            rules=[(rule, float(getattr(config, rule.days)))
                   for rule in (*retention_rules(self.kinds), *AISLE_RETENTION)])
        self.metrics = GatewayMetrics()
        self.ingest.on_processed = self.metrics.observe_ingest
        # command outcomes counted as the command file commits them (before the caller hears
        # them), not when their stream items reach the main stream a little later
        self.db.command_listeners.append(self.metrics.on_commit)
        self.webhooks = WebhookService(self.db, WebhookSettings(
            config.webhook_backoff_min_s, config.webhook_backoff_max_s, config.webhook_timeout_s,
            max_pending=config.webhook_max_pending),
            clock=clock, on_attempt=self.metrics.observe_webhook)
        # a subscription with include_secrets gets secrets, e.g. the plain pickup code
        # (gateway/http/redact.py): each kind adds its own
        self.webhooks.reveal = self._reveal
        self.chain = None if config.store_id is None else ChainService(
            self.db, self.bus.publish, self.bus.wait_connected, config.store_id,
            kinds=config.chain_kinds)
        # the disk, the webhook queues and the chain outbox: alerts before they hurt
        self.capacity = CapacityWatch(self.db, CapacitySettings(
            free_percent=config.disk_alert_free_percent, free_mb=config.disk_alert_free_mb,
            webhook_max_pending=config.webhook_max_pending,
            chain_alert_rows=config.chain_outbox_alert_rows, interval_s=config.capacity_check_s),
            chain_enabled=self.chain is not None)
        self.app = create_app(self)
        self.http_port: int | None = None
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    # lifetime -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.db.__aenter__()
        try:
            for service in self.services.values():
                await service.load()
            await self.ota.load()
            await self.aisle.load()
            self.broadcaster.last_id = await self.db.read(Store.last_stream_id)
            await self.webhooks.start()  # before ingest: the outbox hooks see every item
            if self.chain is not None:
                await self.chain.start()
            if self.coap is not None:
                await self.coap.start()
        except BaseException:
            await self.db.close()
            raise
        self._spawn("ingest", self.ingest.run())
        self._spawn("bus", self.bus.run())
        self._spawn("commands", self.commands.run())
        if TRACE is not None:  # diagnostics (bench/command_rtt.py): the loop's busy stretches
            self._spawn("loop-probe", TRACE.probe_loop())
        for name, service in self.services.items():
            self._spawn(name, service.run())
        self._spawn("alerts", self.alerts.run())
        self._spawn("ota", self.ota.run())
        self._spawn("analytics", self.analytics.run())
        self._spawn("aisle", self.aisle.run())
        self._spawn("housekeeping", self._housekeeping())
        self._spawn("retention", self.retention.run())
        self._spawn("rollups", self.retention.run_folds())   # event_hours follows the events
        self._spawn("capacity", self.capacity.run())
        if self.liveness is not None:
            self._spawn("liveness", self.liveness.run())
        self._spawn("webhooks", self.webhooks.run())
        if self.chain is not None:
            self._spawn("chain", self.chain.run())
        log.info("gateway started broker=%s:%d db=%s client_id=%s coap=%s",
                 self.config.broker_host, self.config.broker_port, self.config.db_path,
                 self.config.client_id, self.coap.port if self.coap else "off")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        self.broadcaster.close()
        if self.coap is not None:
            await self.coap.stop()  # in-flight CoAP requests are retransmitted to the next run
        await self._cancel("commands")
        await self._cancel("loop-probe")
        for name in self.services:
            await self._cancel(name)
        await self._cancel("alerts")
        await self._cancel("ota")
        await self._cancel("analytics")
        await self._cancel("aisle")
        await self._cancel("housekeeping")
        await self._cancel("rollups")
        await self._cancel("retention")
        await self._cancel("capacity")
        await self._cancel("liveness")
        await self._cancel("webhooks")
        await self._cancel("chain")
        if self.bus.connected or self.coap is not None:
            await self.ingest.drained(self.config.shutdown_timeout_s)
        await self.bus.announce_offline()
        await self._cancel("bus")
        await self._cancel("ingest")
        await self.db.close()
        log.info("gateway stopped")

    def stop(self) -> None:
        """Ask `run()` to return (safe to call from a signal handler on the loop)."""
        self._stop.set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        return await self.bus.wait_connected(timeout)

    async def run(self) -> None:
        """Serve the HTTP API until `stop()`."""
        host, port = self.config.http_host, self.config.http_port
        try:
            sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on http://{host}:{port}: {exc.strerror}"
                                     " (is another gateway running? use --http host:port)"
                          ) from exc
        # Nagle off for every accepted connection (Linux copies it from the listening socket):
        # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
        # create_server makes proto 0, so uvicorn's separate header/body writes would wait
        # for the client's delayed ACK: ~40 ms on every keep-alive response.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.http_port = sock.getsockname()[1]
        server = _Server(uvicorn.Config(self.app, host=host, port=self.http_port,
                                        log_level="warning", access_log=False, lifespan="off",
                                        timeout_graceful_shutdown=2))
        serve = asyncio.create_task(server.serve(sockets=[sock]), name="http")
        stop = asyncio.create_task(self._stop.wait())
        log.info("http listening url=http://%s:%d", host, self.http_port)
        try:
            await asyncio.wait({serve, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            server.should_exit = True
            self.broadcaster.close()  # ends open SSE responses so uvicorn can finish
            try:
                await asyncio.wait_for(asyncio.shield(serve), self.config.shutdown_timeout_s)
            except TimeoutError:
                server.force_exit = True
                await serve
            finally:
                stop.cancel()
                sock.close()
        if serve.done() and not serve.cancelled() and serve.exception() is not None:
            raise serve.exception()  # type: ignore[misc]

    # internals ------------------------------------------------------------------------------

    def _spawn(self, name: str, coro: Any) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks[name] = task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("task died task=%s error=%r; stopping", task.get_name(), task.exception(),
                      exc_info=task.exception())
            self.stop()

    async def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _on_commit(self, items: list[StreamItem]) -> None:
        self.broadcaster.publish(items)
        self.webhooks.notify()
        self.analytics.notify()
        if self.chain is not None:
            self.chain.notify()
        for item in items:
            if item.kind != "command":  # commands: `CommandService` hears the command file
                for service in self.services.values():
                    service.on_commit_item(item.kind, item.data)
            self.alerts.on_commit_item(item.kind, item.data)
            self.ota.on_commit_item(item.kind, item.data)
            self.aisle.on_commit_item(item.kind, item.data)

    async def _on_birth(self, device: str) -> None:
        await self.commands.on_birth(device)
        for service in self.services.values():
            service.on_birth(device)

    def render(self, kind: str, data: dict[str, Any], reveal: bool = False) -> dict[str, Any]:
        """A stream item (or a listed event) as an HTTP client sees it: each kind adds what
        it shows (a sample's content, a pickup code only with `reveal`)."""
        for k in self.kinds:
            if k.render is not None:
                data = k.render(self.services[k.name], kind, data, reveal)
        return data

    def _reveal(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        for k in self.kinds:
            if k.reveal is not None:
                data = k.reveal(self.services[k.name], kind, data)
        return data

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if self.coap is not None:
            self.coap.mqtt_seen(topic)  # a device that moved to MQTT is routed there again
        if TRACE is not None and topic.endswith("/reply"):  # diagnostics (bench/command_rtt.py)
            TRACE.reply_read(topic.split("/")[2])
        if topic.endswith(OTA_SUFFIX):  # a firmware chunk request: answered, never journaled
            self.ota.handle_request(topic, payload)
            return
        await self.ingest.put(topic, payload)

    async def _on_coap_message(self, topic: str, payload: bytes) -> None:
        await self.ingest.put(topic, payload)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                n = await self.db.write(_prune, self.config.stream_keep)
                if n:
                    log.info("stream pruned rows=%d", n)
            except Exception:
                log.exception("housekeeping failed")


def _prune(store: Store, keep: int) -> int:
    with store.transaction():
        return store.prune_stream(keep)
