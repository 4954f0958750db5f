"""Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).

Two sources:
* live instruments updated as things happen (histograms of ingest latency, command round
  trip and webhook attempts; counters of command outcomes), per gateway process;
* a snapshot read at scrape time from SQLite and the running tasks (devices online, the
  persisted ingest counters, pending commands, queue depths, webhook and chain backlogs).
  The ingest counters live in the `counters` table, so they survive restarts and are
  monotonic across them; `rate(pe_events_persisted_total[1m])` is events/s.

Each `Gateway` has its own registry (several gateways can run in one test process).
"""
from __future__ import annotations

import gc
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.devices.gcpause import PAUSES
from gateway.storage.store import FINAL_STATUSES, Store, StreamItem

if TYPE_CHECKING:
    from gateway.devices.ingest import IngestWorker
    from gateway.http.stream import Broadcaster
    from gateway.storage.db import Database
    from gateway.transport.bus import MqttBus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)


def _db_snapshot(store: Store) -> dict[str, Any]:
    online: dict[str, int] = {}
    known: dict[str, int] = {}
    for kind, on, n in store.conn.execute(
            "SELECT kind, online, COUNT(*) FROM devices GROUP BY kind, online"):
        known[kind] = known.get(kind, 0) + n
        online[kind] = online.get(kind, 0) + (n if on else 0)
    return {"online": online, "known": known, "counters": store.counters(),
            "rejections": store.rejections(), "commands": store.count_commands()}


def _by_label(family: type[GaugeMetricFamily | CounterMetricFamily], name: str,
              help_: str, label: str, values: dict[str, int]) -> Metric:
    fam = family(name, help_, labels=[label])
    for key, n in sorted(values.items()):
        fam.add_metric([key], n)
    return fam


def _capacity_families(snap: dict[str, Any]) -> list[Metric]:
    """The disk under the database and the bounded queues (docs/operations.md)."""
    d, w, c = snap["disk"], snap["webhooks"], snap["chain_outbox"]
    fams: list[Metric] = [
        GaugeMetricFamily("pe_disk_free_bytes", "Free bytes of the database's file system",
                          value=d["free_bytes"]),
        GaugeMetricFamily("pe_disk_total_bytes", "Size of the database's file system",
                          value=d["total_bytes"]),
        GaugeMetricFamily("pe_disk_alert_below_bytes",
                          "disk.low alert below this many free bytes (0: off)",
                          value=d["alert_below_bytes"]),
        GaugeMetricFamily("pe_database_bytes", "The database file and its WAL",
                          value=d["db_bytes"]),
        GaugeMetricFamily("pe_webhook_max_pending",
                          "Cap of each webhook subscription's queue (past it, drop-oldest)",
                          value=w["max_pending"]),
        _by_label(GaugeMetricFamily, "pe_webhook_pending",
                  "Undelivered webhook deliveries, by subscription", "subscription",
                  {q["id"]: q["pending"] for q in w["subscriptions"]}),
        _by_label(CounterMetricFamily, "pe_webhook_dropped",
                  "Webhook deliveries dropped at the cap (oldest first), by subscription",
                  "subscription", {q["id"]: q["dropped"] for q in w["subscriptions"]}),
        GaugeMetricFamily("pe_chain_outbox_alert_rows",
                          "chain.backlog alert above this many outbox rows (never dropped)",
                          value=c["alert_rows"])]
    return fams


class _Snapshot(Collector):
    """Yields the families computed by `GatewayMetrics.render` just before exposition."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


class BatchHistogram(Collector):
    """A histogram observed a batch at a time: the ingest observes every message of a batch at
    once, and `prometheus_client.Histogram.observe` per message (a lock and a bucket scan
    each) was ~4 % of a saturated gateway's CPU. Same exposition (`_bucket`, `_count`, `_sum`).
    Event loop only."""

    def __init__(self, name: str, help_: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help = name, help_
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe_since(self, starts: Iterable[float], now: float) -> None:
        """Observe `now - t` for every `t` in `starts` (values <= a bound count in it)."""
        counts, bounds = self.counts, self.bounds
        total = 0.0
        for t in starts:
            v = now - t
            counts[bisect_left(bounds, v)] += 1
            total += v
        self.sum += total

    def collect(self) -> Iterable[Metric]:
        fam = HistogramMetricFamily(self.name, self.help)
        cumulative, buckets = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            cumulative += n
            buckets.append((floatToGoString(bound), cumulative))
        fam.add_metric([], buckets, self.sum)
        return [fam]


class Sources(Protocol):
    """What `GatewayMetrics.render` reads at scrape time (a `Gateway` is one). The optional
    parts, `webhooks`, `chain` and `coap`, are read when present."""
    @property
    def db(self) -> Database: ...
    @property
    def ingest(self) -> IngestWorker: ...
    @property
    def broadcaster(self) -> Broadcaster: ...
    @property
    def bus(self) -> MqttBus: ...


def _gc_families() -> list[Metric]:
    """The garbage collector: its pauses hold every thread (gateway/devices/gcpause.py)."""
    count = CounterMetricFamily("pe_gc_collections", "Garbage collections, by generation",
                                labels=["generation"])
    pause = CounterMetricFamily("pe_gc_pause_seconds",
                                "Seconds the garbage collector held the process, by generation",
                                labels=["generation"])
    for gen in range(3):
        count.add_metric([str(gen)], PAUSES.count[gen])
        pause.add_metric([str(gen)], PAUSES.seconds[gen])
    return [count, pause,
            GaugeMetricFamily("pe_gc_longest_pause_seconds",
                              "The longest garbage collection since the process started",
                              value=PAUSES.longest),
            GaugeMetricFamily("pe_gc_frozen_objects",
                              "Objects the collector no longer walks (frozen after startup)",
                              value=gc.get_freeze_count())]


class GatewayMetrics:
    def __init__(self) -> None:
        PAUSES.install()
        self.registry = CollectorRegistry(auto_describe=False)
        self.ingest_latency = BatchHistogram(
            "pe_ingest_latency_seconds",
            "Device message received by the gateway to its batch committed and acknowledged",
            LATENCY_BUCKETS)
        self.registry.register(self.ingest_latency)
        self.command_rtt = Histogram(
            "pe_command_round_trip_seconds",
            "Command submitted to its final device answer (done/rejected/failed)",
            ["status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.command_outcomes = Counter(
            "pe_command_outcomes", "Commands reaching a final status, by status",
            ["status"], registry=self.registry)
        self.webhook_attempts = Histogram(
            "pe_webhook_attempt_seconds", "Webhook delivery attempts (HTTP POST), by result",
            ["result"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        for s in FINAL_STATUSES:      # so rate() sees the series from zero
            self.command_outcomes.labels(s)

    # live instruments ---------------------------------------------------------------------

    def observe_ingest(self, received_at: list[float], now: float) -> None:
        self.ingest_latency.observe_since(received_at, now)

    def observe_webhook(self, ok: bool, seconds: float) -> None:
        self.webhook_attempts.labels("ok" if ok else "failed").observe(seconds)

    def on_commit(self, items: list[StreamItem]) -> None:
        """Committed command changes (the gateway hands it the command file's commits)."""
        for item in items:
            if item.kind != "command" or item.data.get("status") not in FINAL_STATUSES \
                    or item.data.get("change"):  # a late outcome: the status was counted
                continue
            status = item.data["status"]
            self.command_outcomes.labels(status).inc()
            if status != "expired":
                rtt = (item.data["updated"] - item.data["created"]) / 1000
                self.command_rtt.labels(status).observe(max(0.0, rtt))

    # exposition ---------------------------------------------------------------------------

    async def render(self, gw: Sources) -> bytes:
        snap = await gw.db.read(_db_snapshot)
        fams: list[Metric] = [
            _by_label(GaugeMetricFamily, "pe_devices_online", "Devices online, by kind", "kind",
                      snap["online"]),
            _by_label(GaugeMetricFamily, "pe_devices_known",
                      "Devices that ever sent a birth, by kind", "kind", snap["known"]),
            _by_label(CounterMetricFamily, "pe_rejections", "Device messages rejected, by reason",
                      "reason", snap["rejections"]),
            _by_label(GaugeMetricFamily, "pe_commands", "Commands in the database, by status",
                      "status", snap["commands"])]
        c = snap["counters"]
        for name, help_ in (("messages_received", "Device messages received"),
                            ("events_persisted", "Device events persisted (new, not duplicates)"),
                            ("duplicates", "Duplicate device events (acknowledged again)")):
            fams.append(CounterMetricFamily(f"pe_{name}", help_, value=c.get(name, 0)))

        depth = GaugeMetricFamily("pe_queue_depth", "Items waiting in gateway queues",
                                  labels=["queue"])
        depth.add_metric(["ingest"], gw.ingest.queue.qsize())
        depth.add_metric(["commands_pending"], sum(
            n for s, n in snap["commands"].items() if s not in FINAL_STATUSES))
        depth.add_metric(["stream_subscribers_backlog"], sum(
            s.queue.qsize() for s in gw.broadcaster.subscribers))
        webhooks = getattr(gw, "webhooks", None)
        depth.add_metric(["webhooks"], await webhooks.backlog() if webhooks else 0)
        chain = getattr(gw, "chain", None)
        depth.add_metric(["chain_outbox"], await chain.backlog() if chain else 0)
        fams.append(depth)

        if chain is not None:
            fams.append(CounterMetricFamily("pe_chain_published",
                                            "Chain messages PUBACKed by the store broker",
                                            value=chain.published))
            fams.append(CounterMetricFamily("pe_chain_publish_failures",
                                            "Chain publishes that failed (retried)",
                                            value=chain.failures))
        fams.append(GaugeMetricFamily("pe_mqtt_connected", "1 while connected to the broker",
                                      value=1 if gw.bus.connected else 0))
        fams.append(CounterMetricFamily("pe_mqtt_publish_failures",
                                        "Publishes that got no PUBACK or found no connection",
                                        value=gw.bus.publish_failures))
        fams.append(CounterMetricFamily("pe_acks_failed", "Device acks that could not be sent",
                                        value=gw.ingest.ack_failures))
        fams.append(GaugeMetricFamily("pe_stream_subscribers", "Open live stream clients",
                                      value=len(gw.broadcaster.subscribers)))
        fams.append(_by_label(CounterMetricFamily, "pe_stream_refused",
                              "Live stream requests refused 429 (too many open), by limit",
                              "limit", gw.broadcaster.refused))
        capacity = getattr(gw, "capacity", None)
        if capacity is not None:  # gateway/integrations/capacity.py
            fams.extend(_capacity_families(await capacity.snapshot()))
        coap = getattr(gw, "coap", None)
        if coap is not None:  # CoAP requests refused by authentication (gateway/transport/coap_auth.py)
            fams.append(_by_label(CounterMetricFamily, "pe_coap_auth_refused",
                                  "CoAP requests refused 4.01, by reason", "reason",
                                  coap.auth_refusals()))
        fams.extend(_gc_families())
        self._snapshot.families = fams
        return generate_latest(self.registry)
