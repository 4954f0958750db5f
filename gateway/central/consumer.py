"""`phygital central`: the chain of stores, from the central broker cluster into PostgreSQL.

Persist before acknowledging, like the gateway: the MQTT session is persistent (clean session
false, one fixed client id), messages come at QoS 1 and are acknowledged (PUBACK, paho's
manual ack) only after the PostgreSQL transaction holding them committed. A consumer killed at
any point, a PostgreSQL restart, a broker node lost: what was not acknowledged is delivered
again, and the (store, seq) ledger drops what was already stored (schema.py).

Backpressure: the broker sends at most its per-subscription limit of unacknowledged messages
(NATS `max_ack_pending`), the inbound queue is bounded (a full queue stops paho's network
thread, so TCP pushes back) and while PostgreSQL is down nothing is acknowledged.

Brokers are tried in turn (`--broker` repeated, the cluster's nodes): when a connection drops
the next one is tried, and the session (held by the cluster) continues there.
"""
from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from gateway.central.messages import ChainEvent, Message, Refused, parse
from gateway.central.schema import create_schema, ensure_partition, month_of, write_batch

log = logging.getLogger("gateway.central")

SUBSCRIPTIONS = ("chain/1/#", "chain-bridge/+/state")


@dataclass
class _Inbound:
    client: mqtt.Client
    mid: int
    qos: int
    topic: str
    payload: bytes


class HeadOffice:
    """One consumer. `run(stop)` blocks until `stop` is set; `counters` are its figures
    (received, stored, duplicates, refused.<reason>, gaps, gaps_filled, db_errors,
    sessions_lost, connects)."""

    def __init__(self, dsn: str, brokers: list[tuple[str, int]], *,
                 client_id: str = "phygital-central", username: str | None = None,
                 password: str | None = None, batch: int = 500, queue_max: int = 10_000,
                 keepalive: int = 10, retry_s: float = 1.0, cafile: str | None = None) -> None:
        if not brokers:
            raise ValueError("give at least one broker (--broker HOST:PORT)")
        if not 0 < batch <= 10_000:
            raise ValueError(f"batch {batch}: give 1..10000")
        self.dsn, self.brokers = dsn, brokers
        self.client_id, self.username, self.password = client_id, username, password
        self.cafile = cafile    # TLS to the brokers, verified against this CA
        self.batch, self.keepalive, self.retry_s = batch, keepalive, retry_s
        self.inbound: queue.Queue[_Inbound] = queue.Queue(maxsize=queue_max)
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None   # the connection acks go to
        self._subscribed = False
        self._months: set[tuple[int, int]] = set()
        self._conn: psycopg.Connection[Any] | None = None

    # -- MQTT side --------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _mqtt_loop(self, stop: threading.Event) -> None:
        """Connect to the brokers in turn; one paho client per connection (the session lives
        in the cluster, so acks of a dropped connection are simply not sent: redelivered)."""
        i = 0
        while not stop.is_set():
            host, port = self.brokers[i % len(self.brokers)]
            i += 1
            gone = threading.Event()
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                            clean_session=False, manual_ack=True)
            if self.username is not None:
                c.username_pw_set(self.username, self.password)
            if self.cafile is not None:
                c.tls_set(ca_certs=self.cafile)
            c.on_connect = self._on_connect
            c.on_message = self._on_message
            c.on_disconnect = lambda *_a, _g=gone: _g.set()
            c.reconnect_delay_set(60, 60)   # we move on to the next broker ourselves
            try:
                c.connect(host, port, self.keepalive)
            except OSError as exc:   # ssl.SSLError included: a certificate the CA refuses
                log.warning("central broker %s:%d unreachable (%s); trying the next", host,
                            port, exc)
                stop.wait(self.retry_s if i % len(self.brokers) == 0 else 0.1)
                continue
            c.loop_start()
            while not stop.is_set() and not gone.wait(0.2):
                pass
            with self._lock:
                if self._client is c:
                    self._client = None
            c.disconnect()
            c.loop_stop()
            if not stop.is_set():
                log.warning("connection to central broker %s:%d lost; trying the next", host, port)
                stop.wait(0.2)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            log.error("central broker refused the connection: %s (check --username and the "
                      "password file)", rc)
            client.disconnect()
            return
        self._count("connects")
        if not flags.session_present:
            if self._subscribed:
                # the cluster lost our session: what was published meanwhile for us is gone
                # (a gap in some store's seq will show which)
                self._count("sessions_lost")
                log.error("central broker had no session for %s: messages may have been "
                          "dropped; watch chain_gaps", self.client_id)
            client.subscribe([(t, 1) for t in SUBSCRIPTIONS])
            self._subscribed = True
        with self._lock:
            self._client = client

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # blocks when the queue is full: paho stops reading, TCP pushes back on the broker
        self.inbound.put(_Inbound(client, msg.mid, msg.qos, msg.topic, bytes(msg.payload)))

    def _ack(self, items: list[_Inbound]) -> None:
        with self._lock:
            current = self._client
        for it in items:
            if it.qos and it.client is current:
                it.client.ack(it.mid, it.qos)

    # -- PostgreSQL side --------------------------------------------------------------------

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            create_schema(self._conn)
            self._months.clear()
        return self._conn

    def _write(self, messages: list[Message]) -> None:
        conn = self._db()
        for month in {month_of(m.t) for m in messages if isinstance(m, ChainEvent)} - self._months:
            ensure_partition(conn, month)
            self._months.add(month)
        w = write_batch(conn, messages)
        self._count("stored", w.stored)
        self._count("duplicates", w.duplicates)
        self._count("gaps_filled", w.filled)
        for store, first, last in w.gaps:
            self._count("gaps")
            log.warning("chain gap store=%s seq=%d..%d (%d missing): fetch them from the store "
                        "(GET /events?after=) or wait for late delivery; see chain_gaps",
                        store, first, last, last - first + 1)

    def _take(self, stop: threading.Event) -> list[_Inbound]:
        try:
            items = [self.inbound.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(items) < self.batch:
            try:
                items.append(self.inbound.get_nowait())
            except queue.Empty:
                break
        return items

    def _persist(self, items: list[_Inbound], stop: threading.Event) -> bool:
        messages: list[Message] = []
        for it in items:
            try:
                messages.append(parse(it.topic, it.payload))
            except Refused as exc:
                self._count(f"refused.{exc.reason}")
                log.warning("refused chain message on %r: %s (not stored)", it.topic[:200], exc)
        while not stop.is_set():
            try:
                self._write(messages)
                return True
            except psycopg.Error as exc:
                self._count("db_errors")
                log.warning("PostgreSQL write failed (%s); nothing acknowledged, retrying in "
                            "%.1fs", str(exc).strip() or type(exc).__name__, self.retry_s)
                if self._conn is not None:
                    self._conn.close()
                stop.wait(self.retry_s)
        return False

    def run(self, stop: threading.Event) -> None:
        mqtt_thread = threading.Thread(target=self._mqtt_loop, args=(stop,), daemon=True,
                                       name="central-mqtt")
        mqtt_thread.start()
        try:
            while not stop.is_set():
                items = self._take(stop)
                if not items:
                    continue
                self._count("received", len(items))
                if self._persist(items, stop):
                    self._ack(items)
        finally:
            stop.set()
            mqtt_thread.join(10)
            if self._conn is not None:
                self._conn.close()


def _broker(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        if host and 0 < int(port) < 65536:
            return host, int(port)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="phygital central",
        description="Head office: consume the chain of stores from the central broker "
                    "cluster into PostgreSQL (docs/chain.md)")
    ap.add_argument("--broker", action="append", type=_broker, required=True,
                    metavar="HOST:PORT",
                    help="a central broker node (MQTT); repeat for each node of the cluster")
    ap.add_argument("--dsn", default=os.environ.get("PHYGITAL_CENTRAL_DSN"),
                    help="PostgreSQL connection string (default $PHYGITAL_CENTRAL_DSN); keep "
                         "the password in ~/.pgpass or $PGPASSWORD, not here")
    ap.add_argument("--client-id", default="phygital-central",
                    help="MQTT client id: the persistent session (default phygital-central)")
    ap.add_argument("--username", default=None, help="user on the central broker")
    ap.add_argument("--password-file", default=None,
                    help="file holding the broker password (kept off the command line)")
    ap.add_argument("--cafile", default=None,
                    help="CA file: connect to the brokers with TLS and verify their certificate "
                         "against it (docs/chain.md, \"Running it for real\")")
    ap.add_argument("--batch", type=int, default=500,
                    help="messages per PostgreSQL transaction, at most (default 500)")
    ap.add_argument("--stats-every", type=float, default=60.0,
                    help="log the counters every this many seconds (default 60)")
    ap.add_argument("--http", type=_broker, default=None, metavar="HOST:PORT",
                    help="also serve chain-wide stock availability over HTTP here "
                         "(GET /availability; docs/chain.md); needs --http-token-file")
    ap.add_argument("--http-token-file", default=None,
                    help="file holding the bearer token the stores' gateways present "
                         "([chain] central_token_file on their side)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not args.dsn:
        ap.error("give --dsn or set PHYGITAL_CENTRAL_DSN (e.g. 'host=db.example dbname=chain "
                 "user=central')")
    password = None
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as exc:
            ap.error(f"--password-file: {exc}")
    http_app = None
    if args.http is not None:
        from gateway.central.http import create_app
        if not args.http_token_file:
            ap.error("--http needs --http-token-file (the stores' bearer token, at least 16 "
                     "characters)")
        try:
            with open(args.http_token_file, encoding="utf-8") as f:
                http_app = create_app(args.dsn, f.read().strip())
        except (OSError, ValueError) as exc:
            ap.error(f"--http-token-file: {exc}")
    try:
        office = HeadOffice(args.dsn, args.broker, client_id=args.client_id,
                            username=args.username, password=password, batch=args.batch,
                            cafile=args.cafile)
    except ValueError as exc:
        ap.error(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def stats() -> None:
        while not stop.wait(args.stats_every):
            with office._lock:
                figures = dict(office.counters)
            log.info("central counters %s", " ".join(f"{k}={v}" for k, v in sorted(figures.items())))

    threading.Thread(target=stats, daemon=True, name="central-stats").start()
    http_thread = None
    if http_app is not None:
        from gateway.central.http import serve
        host, port = args.http
        http_thread = serve(http_app, host, port, stop)
        log.info("central: availability on http://%s:%d/availability", *args.http)
    log.info("central: brokers %s, client id %s", ", ".join(f"{h}:{p}" for h, p in args.broker),
             args.client_id)
    office.run(stop)
    if http_thread is not None:
        http_thread.join(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
