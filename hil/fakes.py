"""Test doubles that speak docs/protocol.md: a fake device, the SSE reader, an MQTT probe.

Used by tests/test_gateway_*.py and usable from a REPL against a running gateway. The fake
device is written from the protocol document, not from the gateway's code: journal with
application acks, resend after silence, sessions and wills, at-most-once commands.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Self

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.integrations.chain import bridge_config
from hil.harness import GatewayProcess, Mosquitto, wait_for


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FakeDevice:
    """A device on a paho-mqtt thread.

    `connect()` does the session dance (will, subscribe, birth, status online, replay the
    journal). `emit()` journals and publishes an event. Acks drop journal entries; with no ack
    for `resend_after` s the device re-sends from the oldest unacknowledged event. Commands
    are applied at most once per id (`actuations` counts real applications).
    """

    def __init__(self, dev: str, port: int, *, host: str = "127.0.0.1", kind: str = "sample-pad",
                 caps: tuple[str, ...] = ("tag", "led", "blink"), epoch: str | None = None,
                 resend_after: float = 10.0, window: int = 16, journal_size: int = 200,
                 keepalive: int = 30) -> None:
        self.dev, self.host, self.port, self.kind, self.caps = dev, host, port, kind, caps
        self.epoch = epoch or secrets.token_hex(4)
        self.resend_after, self.window, self.journal_size = resend_after, window, journal_size
        self.keepalive = keepalive
        self.session = 0
        self.boot = 0
        self.next_seq = 1
        self.journal: dict[int, dict[str, Any]] = {}
        self.acked = 0
        self.sent_upto = 0
        self.dropped = 0
        self.last_progress = time.monotonic()
        self.acks: list[dict[str, Any]] = []
        self.ctl: list[dict[str, Any]] = []
        self.ignore_rebirth = False  # a hung device: it answers no `rebirth` (tests/gateway/devices/test_liveness.py)
        self.cmds: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.gateway_state: str | None = None
        self.actuations: Counter[str] = Counter()
        self.finished: dict[str, dict[str, Any]] = {}
        self.running: dict[str, dict[str, Any]] = {}
        self.hold = False          # accept commands but do not finish them (release() does)
        self.ignore_commands = False  # drop command deliveries on the floor
        self.lock = threading.RLock()
        self.connected = threading.Event()
        self.client: mqtt.Client | None = None
        self._stop = threading.Event()
        self._resender: threading.Thread | None = None

    # topics / envelopes

    def topic(self, channel: str) -> str:
        return f"pe/1/{self.dev}/{channel}"

    def envelope(self, type_: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"v": 1, "dev": self.dev, "type": type_, "t": now_ms(), **extra, "body": body}

    def birth_message(self) -> dict[str, Any]:
        with self.lock:
            first = min(self.journal) if self.journal else self.next_seq
            return self.envelope("birth", {
                "kind": self.kind, "fw": "0.1.0-fake", "caps": list(self.caps), "cfg": "00000000",
                "session": self.session, "boot": self.boot, "reset": "power",
                "epoch": self.epoch, "first": first, "next": self.next_seq})

    # connection

    def connect(self, timeout: float = 10.0) -> FakeDevice:
        self.session += 1
        self.boot += 1
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-{self.dev}",
                             clean_session=True)
        self._set_will(client)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 2)
        self.client = client
        client.connect(self.host, self.port, keepalive=self.keepalive)
        client.loop_start()
        if self._resender is None:
            self._stop.clear()
            self._resender = threading.Thread(target=self._resend_loop, daemon=True,
                                              name=f"fake-{self.dev}-resend")
            self._resender.start()
        if not self.connected.wait(timeout):
            raise AssertionError(f"{self.dev}: could not connect to broker")
        return self

    def _set_will(self, client: mqtt.Client) -> None:
        client.will_set(self.topic("status"),
                        json.dumps(self.envelope("offline", {"session": self.session})),
                        qos=1, retain=True)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            return
        client.subscribe([(self.topic("cmd"), 1), (self.topic("ctl"), 1),
                          ("pe/1/gateway/state", 1)])
        self.publish("birth", self.birth_message())
        self.publish("status", self.envelope("online", {"session": self.session}), retain=True)
        with self.lock:
            self.sent_upto = self.acked if not self.journal else min(self.journal) - 1
            self.last_progress = time.monotonic()
        self.connected.set()
        self._pump()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self.connected.clear()
        if client is self.client and not self._stop.is_set():
            # paho reconnects by itself: the next connection is a new session
            self.session += 1
            self._set_will(client)

    def crash(self) -> None:
        """Lose power: the TCP connection drops without DISCONNECT, so the broker sends the will."""
        client, self.client = self.client, None
        self.connected.clear()
        if client is not None:
            client.loop_stop()
            sock = client.socket()
            if sock is not None:
                sock.close()

    def disconnect(self) -> None:
        """Orderly shutdown: say offline, then disconnect."""
        client = self.client
        if client is None:
            return
        info = client.publish(self.topic("status"),
                              json.dumps(self.envelope("offline", {"session": self.session})),
                              qos=1, retain=True)
        try:
            info.wait_for_publish(5)
        except (RuntimeError, ValueError):
            pass  # not connected: the will covers it
        self.client = None
        self.connected.clear()
        client.disconnect()
        client.loop_stop()

    def close(self) -> None:
        self._stop.set()
        if self.client is not None:
            self.disconnect()
        if self._resender is not None:
            self._resender.join(2)
            self._resender = None

    def wipe(self) -> None:
        """Flash wiped: a new journal epoch, seq starts again at 1."""
        with self.lock:
            self.epoch = secrets.token_hex(4)
            self.journal.clear()
            self.next_seq = 1
            self.acked = 0
            self.sent_upto = 0

    # publishing

    def publish(self, channel: str, message: dict[str, Any] | bytes | str, *, qos: int = 1,
                retain: bool = False) -> None:
        client = self.client
        if client is None:
            return
        payload = message if isinstance(message, (bytes, str)) else json.dumps(message)
        client.publish(self.topic(channel) if "/" not in channel else channel, payload, qos=qos,
                       retain=retain)

    def emit(self, type_: str, body: dict[str, Any]) -> int:
        """Journal an event (dropping the oldest if the journal is full), then send it."""
        with self.lock:
            seq = self.next_seq
            self.next_seq += 1
            self.journal[seq] = self.envelope(type_, body, seq=seq)
            while len(self.journal) > self.journal_size:
                del self.journal[min(self.journal)]
                self.dropped += 1
        self._pump()
        return seq

    def _pump(self) -> None:
        with self.lock:
            if not self.connected.is_set() or self.client is None:
                return
            for seq in sorted(self.journal):
                if seq <= self.sent_upto:
                    continue
                if seq - self.acked > self.window:
                    break
                self.publish("evt", self.journal[seq])
                self.sent_upto = seq

    def _resend_loop(self) -> None:
        while not self._stop.wait(0.05):
            with self.lock:
                if (self.journal and self.connected.is_set()
                        and time.monotonic() - self.last_progress >= self.resend_after):
                    self.sent_upto = min(self.journal) - 1
                    self.last_progress = time.monotonic()
                    resend = True
                else:
                    resend = False
            if resend:
                self._pump()

    # inbound

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            obj = json.loads(msg.payload)
        except ValueError:
            return
        if msg.topic == "pe/1/gateway/state":
            self.gateway_state = obj.get("type")
        elif msg.topic == self.topic("ctl"):
            self.ctl.append(obj)
            if obj.get("type") == "ack":
                self._on_ack(obj["body"])
            elif obj.get("type") == "rebirth" and not self.ignore_rebirth:
                self.publish("birth", self.birth_message())
        elif msg.topic == self.topic("cmd"):
            self._on_cmd(obj)

    def _on_ack(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.acks.append(body)
            if body.get("epoch") != self.epoch:
                return
            upto = body["upto"]
            if upto > self.acked:
                self.acked = upto
                self.last_progress = time.monotonic()
            for seq in [s for s in self.journal if s <= upto]:
                del self.journal[seq]
        self._pump()

    def _reply(self, cid: str, status: str, reason: str | None = None,
               result: dict[str, Any] | None = None) -> None:
        msg = self.envelope("reply", {"status": status, "reason": reason, "result": result},
                            id=cid)
        self.replies.append(msg)
        self.publish("reply", msg)

    def _on_cmd(self, msg: dict[str, Any]) -> None:
        with self.lock:
            self.cmds.append(msg)
            if self.ignore_commands:
                return
            cid, body = msg["id"], msg["body"]
            if cid in self.finished:
                done = self.finished[cid]
                self._reply(cid, done["status"], done["reason"], done["result"])
                return
            if cid in self.running:
                self._reply(cid, "accepted")
                return
            if now_ms() > body["deadline"]:
                self._finish(cid, "rejected", "expired", None)
                return
            if body["name"] not in self.caps and body["name"] not in ("ping", "rebirth"):
                self._finish(cid, "rejected", "unknown-command", None)
                return
            self.actuations[cid] += 1
            if self.hold:
                self.running[cid] = msg
                self._reply(cid, "accepted")
                return
            self._complete(cid, msg)

    def _complete(self, cid: str, msg: dict[str, Any]) -> None:
        name, args = msg["body"]["name"], msg["body"].get("args") or {}
        result: dict[str, Any] = {}
        if name == "blink":
            result = {"times": args.get("times", 3)}
        elif name == "ping":
            result = {"up": 1}
        self._finish(cid, "done", None, result)

    def _finish(self, cid: str, status: str, reason: str | None,
                result: dict[str, Any] | None) -> None:
        self.finished[cid] = {"status": status, "reason": reason, "result": result}
        self._reply(cid, status, reason, result)

    def release(self) -> None:
        """Finish every command held by `hold`."""
        with self.lock:
            running, self.running = self.running, {}
            for cid, msg in running.items():
                self._complete(cid, msg)

    def wait_acked(self, seq: int, timeout: float = 10.0) -> None:
        wait_for(lambda: self.acked >= seq, timeout, interval=0.02, what=f"{self.dev} acked >= {seq}")


class SseReader:
    """Read `GET /stream` on a thread; `items` collects `{"id", "event", "data"}` dicts."""

    def __init__(self, url: str, last_event_id: int | None = None) -> None:
        self.url = url
        self.headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        self.items: list[dict[str, Any]] = []
        self.status: int | None = None
        self.open = threading.Event()
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sse-reader")
        self._response: httpx.Response | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        if not self.open.wait(10):
            raise AssertionError("SSE stream did not open")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        resp = self._response
        if resp is not None:
            with contextlib.suppress(Exception):  # closing from another thread is best effort
                resp.close()

    def _run(self) -> None:
        try:
            with (httpx.Client(timeout=httpx.Timeout(5, read=None)) as c,
                  c.stream("GET", self.url + "/stream", headers=self.headers) as r):
                self._response = r
                self.status = r.status_code
                self.open.set()
                cur: dict[str, Any] = {}
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        if "data" in cur:
                            try:
                                cur["data"] = json.loads(cur["data"])
                            except ValueError:  # not a message of docs/api.md: left out
                                cur = {}
                                continue
                            self.items.append(cur)
                        cur = {}
                    elif line.startswith(":"):
                        continue
                    else:
                        key, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if key == "id":
                            cur["id"] = int(value)
                        elif key in ("event", "data"):
                            cur[key] = value
        except Exception:  # noqa: BLE001, S110 - the stream ends when the server or test closes it
            pass
        finally:
            self.open.set()
            self.done.set()

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        """Items of one kind whose data has all the `match` fields."""
        return [i for i in list(self.items) if i.get("event") == kind
                and all(i["data"].get(k) == v for k, v in match.items())]

    @property
    def messages(self) -> list[Any]:
        """The data of every item so far; an object also gets its SSE event name as `_event`."""
        return [{"_event": i.get("event"), **i["data"]} if isinstance(i["data"], dict) else i["data"]
                for i in list(self.items)]

    def device_events(self, device: str, type: str) -> list[dict[str, Any]]:
        """Device events of one device and type (`{"event": {...}}` items unwrapped)."""
        out = []
        for m in self.messages:
            if not isinstance(m, dict):
                continue
            body = m["event"] if isinstance(m.get("event"), dict) else m
            if body.get("device", body.get("dev")) == device and body.get("type") == type:
                out.append(body)
        return out


class MqttProbe:
    """A plain MQTT client for tests: publish anything, record what arrives on `topics`."""

    def __init__(self, port: int, topics: tuple[str, ...] = (), host: str = "127.0.0.1") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"probe-{secrets.token_hex(3)}")
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, bytes(m.payload), bool(m.retain)))
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            if not self._subscribed.wait(5):
                raise AssertionError("probe could not subscribe")

    def publish(self, topic: str, payload: bytes | str | dict[str, Any], *, qos: int = 1,
                retain: bool = False) -> None:
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        self.client.publish(topic, data, qos=qos, retain=retain).wait_for_publish(5)

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class WebhookReceiver:
    """A store system's webhook endpoint on a thread: checks each delivery's signature and
    records it. `hold` (an Event, set = answer) lets a test keep a delivery in flight;
    `status` is the HTTP status answered. `start()` / `stop()` may be repeated on one port."""

    def __init__(self, secret: str, port: int | None = None) -> None:
        from hil.harness import free_port
        self.secret = secret
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[dict[str, Any]] = []   # every request, duplicates included
        self.hold = threading.Event()
        self.hold.set()
        self.status = 200
        self._server: Any = None

    def start(self) -> WebhookReceiver:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from gateway.integrations.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                entry = {
                    "delivery": self.headers.get(DELIVERY_HEADER),
                    "signed": verify_signature(outer.secret, self.headers.get(TIMESTAMP_HEADER),
                                               body, self.headers.get(SIGNATURE_HEADER, "")),
                    "body": json.loads(body), "raw": body, "headers": dict(self.headers),
                    "answered": None}
                outer.received.append(entry)
                outer.hold.wait(60)
                status = outer.status
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
                entry["answered"] = status

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.hold.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[dict[str, Any]]:
        """Signed deliveries answered 2xx, one per delivery id (the receiver's dedupe), in
        arrival order."""
        seen: dict[str, dict[str, Any]] = {}
        for r in list(self.received):
            if r["signed"] and r["answered"] is not None and 200 <= r["answered"] < 300:
                seen.setdefault(r["delivery"], r)
        return list(seen.values())


class StoreBroker(Mosquitto):
    """The store's Mosquitto with the generated bridge section appended."""

    def __init__(self, workdir: Path, central_port: int, store_id: str) -> None:
        super().__init__(workdir)
        self.bridge = bridge_config(store_id, "127.0.0.1", central_port, keepalive_s=5,
                                    restart_backoff=(1, 2))

    def write_conf(self) -> None:
        super().write_conf()
        with open(self.conf, "a") as f:
            # as deploy/mosquitto/store.conf: without it PUBACKs wait on Nagle/delayed ACK
            # (~40 ms) and the gateway's chain publisher runs ~3x slower (bench/chain.py)
            f.write("set_tcp_nodelay true\n")
            f.write(self.bridge)


class CentralConsumer:
    """A consumer on the central broker with a persistent session (it gets what was queued
    for it across a central restart); keeps chain messages by (store, seq)."""

    def __init__(self, port: int, store_id: str) -> None:
        self.store_id = store_id
        self.by_seq: dict[int, dict[str, Any]] = {}
        self.topics: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"central-{secrets.token_hex(3)}", clean_session=False)
        self.connects = 0
        self.sessions_lost = 0  # reconnects where the broker no longer had our session
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]  # paho's hint says int; it sleeps floats
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        # a broker that lost our session (it crashed before saving it) dropped what was
        # published for us until this subscribe: the loss shows as a seq gap
        if self.connects and not flags.session_present:
            self.sessions_lost += 1
        self.connects += 1
        client.subscribe("chain/1/#", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.topics.setdefault(msg.topic, []).append(bytes(msg.payload))
            if msg.topic.endswith("/gateway/state"):
                return
            m = json.loads(msg.payload)
            if m.get("store") != self.store_id:        # e.g. what the test publishes on central
                return
            self.by_seq.setdefault(m["seq"], m | {"topic": msg.topic})

    def events(self, device: str) -> list[int]:
        with self.lock:
            return sorted(m["data"]["seq"] for m in self.by_seq.values()
                          if m["type"].startswith("event.") and m["data"]["device"] == device)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ChainRig:
    """A chain of one store on loopback: a "central" Mosquitto, the store's Mosquitto bridged
    to it, a consumer on the central broker and the gateway (subprocess) with `[chain]
    store_id` plus `toml_extra`. `stop()` tears down whatever was started."""

    def __init__(self, workdir: Path, store_id: str, toml_extra: str = "") -> None:
        self.workdir, self.store_id, self.toml_extra = Path(workdir), store_id, toml_extra
        self.central: Mosquitto | None = None
        self.store: StoreBroker | None = None
        self.consumer: CentralConsumer | None = None
        self.gw: GatewayProcess | None = None

    def start(self) -> ChainRig:
        try:
            self.central = Mosquitto(self.workdir / "central").start()
            self.store = StoreBroker(self.workdir / "store", self.central.port,
                                     self.store_id).start()
            self.consumer = CentralConsumer(self.central.port, self.store_id)
            cfg = self.workdir / "gw.toml"
            cfg.write_text(f'[chain]\nstore_id = "{self.store_id}"\n{self.toml_extra}')
            self.gw = GatewayProcess(self.workdir / "gw", self.store.port,
                                     extra_args=["--config", str(cfg)]).start()
        except BaseException:
            self.stop()
            raise
        return self

    def chain_backlog(self) -> float:
        """`pe_queue_depth{queue="chain_outbox"}` from the gateway's /metrics."""
        assert self.gw is not None
        for line in self.gw.http.get("/metrics").text.splitlines():
            if line.startswith('pe_queue_depth{queue="chain_outbox"}'):
                return float(line.split()[-1])
        raise AssertionError("no chain_outbox depth in /metrics")

    def stop(self) -> None:
        for part in (self.gw, self.consumer, self.store, self.central):
            if part is not None:
                part.close() if isinstance(part, CentralConsumer) else part.stop()
