"""Load generator: many simulated devices speaking docs/protocol.md over MQTT, in one process.

    python -m tools.loadgen --broker 127.0.0.1:1883 --devices 200 --saturate --duration 10
    python -m tools.loadgen --devices 500 --per-device 2 --duration 60 --qos 1 --size 150
    python -m tools.loadgen --sink --broker 127.0.0.1:1883      # a plain subscriber that counts

Each simulated device has its own MQTT connection (client id = device id, clean session,
retained `offline` last will carrying its session), subscribes to its `cmd` and `ctl` topics,
sends a birth and a retained `online` status, then publishes events with a per-device `seq`
(1, 2, 3, ... within a random `epoch`). Like the firmware's journal, it keeps every event until
the gateway's application ack (`pe/1/{dev}/ctl`, `upto`) covers it, keeps at most 16
unacknowledged events in flight, re-sends from the oldest unacknowledged one when nothing was
acknowledged for `--resend-s` (10 s, as the protocol says), answers `rebirth` with a new birth
and answers commands like the firmware does (`accepted`, then `done` at once; an id it has
already finished gets its stored answer again, never a second "actuation").

The publish time of every (device, seq) is recorded; the ack comes after the gateway's SQLite
commit, so publish→ack is publish→persisted.

`--ack mqtt` measures the broker alone: an event counts as settled at the broker's PUBACK
(QoS 1) or as soon as it is written (QoS 0), with no gateway involved; use it with `--sink`
(a subscriber that does nothing but count) to get the raw ceiling of the same load.

Why not aiomqtt or paho: both spend tens of microseconds of Python per message (paho's
locks, message-info objects, per-client threads or asyncio callbacks), which would make the
generator, not the system under test, the bottleneck. MQTT 3.1.1 as a device uses it is small
(CONNECT with will, SUBSCRIBE, PUBLISH QoS 0/1, PUBACK, PINGREQ), so this module speaks it
directly on asyncio transports, with the gateway client's packet codec
(`gateway.transport.mqtt_codec`, no I/O): one `data_received` call handles many packets, and the packets
a device sends in one turn go out in one `write`.

Rates: `--saturate` keeps every device's 16-event window full (closed loop: the throughput the
system sustains); `--rate` (total events/s) or `--per-device` offer a fixed load (open loop;
events the window cannot take yet wait in the device's journal, as on a real device).

Prints `load start` / `load end` around the load window; the last line of stdout is a JSON
summary (with `--json`, no human-readable line and the per-device sent counts in the JSON).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.transport import mqtt_codec as codec

WINDOW = 16          # unacknowledged events in flight per device (docs/protocol.md)
RESEND_S = 10.0      # re-send from the oldest unacknowledged event after this long without an ack

def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- MQTT 3.1.1, the part a device needs (the packets: gateway.transport.mqtt_codec) -----------

class MqttConnection(asyncio.Protocol):
    """One MQTT 3.1.1 client connection (no reconnect: a benchmark reports a lost connection).

    `on_message(topic: bytes, payload: bytes)` gets every inbound PUBLISH (QoS 1 is PUBACKed
    first, as aiomqtt and the firmware do); `on_puback(pid)` every PUBACK of our publishes."""

    def __init__(self, client_id: str, *, keepalive: int = 60,
                 will: tuple[str, bytes, int, bool] | None = None,
                 on_message: Callable[[bytes, bytes], None] | None = None,
                 on_puback: Callable[[int], None] | None = None,
                 on_lost: Callable[[MqttConnection, Exception | None], None] | None = None) -> None:
        self.client_id = client_id
        self.keepalive = keepalive
        self.will = will
        self.on_message = on_message
        self.on_puback = on_puback
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._decoder = codec.Decoder()
        self._pid = 0
        self._connack: asyncio.Future[int] | None = None
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        self.closed = False

    # outbound

    def next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def connect(self, host: str, port: int, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        await asyncio.wait_for(loop.create_connection(lambda: self, host, port), timeout)
        self.write(codec.connect_packet(self.client_id, keepalive=self.keepalive, will=self.will))
        rc = await asyncio.wait_for(self._connack, timeout)
        if rc != 0:
            raise ConnectionError(f"{self.client_id}: broker refused the connection (rc={rc})")

    async def subscribe(self, topics: list[tuple[str, int]], timeout: float = 10.0) -> bytes:
        pid = self.next_pid()
        packet = codec.subscribe_packet(pid, topics)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[pid] = fut
        self.write(packet)
        codes = await asyncio.wait_for(fut, timeout)
        if any(c == 0x80 for c in codes):
            raise ConnectionError(f"{self.client_id}: subscription refused {topics}")
        return codes

    def disconnect(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(codec.DISCONNECT)
            self.transport.close()

    # inbound

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError(f"{self.client_id}: connection lost"))
        if self.on_lost is not None:
            self.on_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        try:
            packets = self._decoder.feed(data)
        except codec.MqttProtocolError as exc:  # not MQTT: the benchmark reports a lost connection
            packets = exc.packets
            print(f"{self.client_id}: {exc}", file=sys.stderr)
            if self.transport is not None:
                self.transport.abort()
        on_puback = self.on_puback
        for kind, flags, pid, topic, body in packets:
            if kind == 4:  # PUBACK
                if on_puback is not None:
                    on_puback(pid)
            elif kind == 3:  # PUBLISH
                if flags & 0x06:
                    self.write(codec.puback_packet(pid))
                if self.on_message is not None:
                    self.on_message(topic, body)
            elif kind == 2:  # CONNACK
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(body[1])
            elif kind == 9:  # SUBACK
                fut = self._subacks.pop(pid, None)
                if fut is not None and not fut.done():
                    fut.set_result(body)
            elif kind == codec.OVERSIZED and flags & 0x06:  # over the decoder's limit: dropped
                self.write(codec.puback_packet(pid))


# -- a simulated device -----------------------------------------------------------------------

@dataclass
class Stats:
    generated: int = 0          # distinct events made (seq assigned, journaled)
    published: int = 0          # PUBLISH packets of events, re-sends included
    resent: int = 0
    acked: int = 0              # events settled (app ack, or broker PUBACK with --ack mqtt)
    acked_in_window: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # publish → ack, first publish
    births: int = 0
    rebirths: int = 0
    acks_received: int = 0
    cmds_received: int = 0
    cmds_duplicate: int = 0
    replies: int = 0
    lost_connections: int = 0
    reconnects: int = 0         # --reconnect: sessions re-established after a lost connection


class Device:
    """A device's protocol logic: journal, window, acks, re-sends, births, commands."""

    __slots__ = (
        "acked",
        "birth_acked",
        "conn",
        "ctl_topic",
        "dev",
        "epoch",
        "evt_topic",
        "finished_cmds",
        "gen",
        "journal",
        "last_progress",
        "next",
        "pid_seq",
        "pub_time",
        "reconnecting",
        "sent_upto",
        "session",
        "t0",
        "template",
    )

    def __init__(self, gen: LoadGen, dev: str) -> None:
        self.gen = gen
        self.dev = dev
        self.epoch = os.urandom(4).hex()
        self.session = 1
        self.conn: MqttConnection | None = None
        self.journal: dict[int, bytes] = {}   # seq → payload, until acknowledged
        self.pub_time: dict[int, float] = {}  # seq → time of its first publish
        self.next = 1                         # seq of the next event
        self.acked = 0                        # every seq <= acked is settled
        self.sent_upto = 0                    # highest seq published so far
        self.last_progress = 0.0
        self.evt_topic = codec.encode_string(f"pe/1/{dev}/evt")
        self.ctl_topic = f"pe/1/{dev}/ctl".encode()
        self.pid_seq: dict[int, int] = {}     # --ack mqtt: packet id → seq
        self.finished_cmds: dict[str, bytes] = {}  # command id → stored final reply
        self.reconnecting = False
        pad = max(0, gen.size - len(self._event(1, now_ms(), "")))
        # %-template: filling in seq and t is the cheapest formatting per event
        self.template = ('{"v":1,"dev":"%s","type":"bench.tick","seq":%%d,"t":%%d,'  # noqa: UP031
                         '"body":{"pad":"%s"}}' % (dev, "x" * pad))
        self.birth_acked = asyncio.get_running_loop().create_future()
        self.t0 = time.monotonic()

    def _event(self, seq: int, t: int, pad: str) -> bytes:
        return (f'{{"v":1,"dev":"{self.dev}","type":"bench.tick","seq":{seq},"t":{t},'
                f'"body":{{"pad":"{pad}"}}}}').encode()

    def _env(self, type_: str, body: dict[str, Any], **extra: Any) -> bytes:
        return json.dumps({"v": 1, "dev": self.dev, "type": type_, **extra, "t": now_ms(),
                           "body": body}, separators=(",", ":")).encode()

    # session

    async def start(self) -> None:
        g = self.gen
        will = (f"pe/1/{self.dev}/status", self._env("offline", {"session": self.session}), 1, True)
        conn = MqttConnection(self.dev, keepalive=g.keepalive, will=will,
                              on_message=self.on_message, on_puback=self.on_puback,
                              on_lost=g.on_lost)
        self.conn = conn
        await conn.connect(g.host, g.port)
        await conn.subscribe([(f"pe/1/{self.dev}/cmd", 1), (f"pe/1/{self.dev}/ctl", 1)])
        self.send_birth()
        self.publish_raw(f"pe/1/{self.dev}/status",
                         self._env("online", {"session": self.session}), retain=True)

    async def reconnect(self) -> None:
        """Like the firmware after a lost link: retry every `reconnect_s` (no backoff, so that
        after a broker restart every device comes back at once: a birth storm), then a new
        session (birth, online), and re-send what is not acknowledged yet."""
        g = self.gen
        self.reconnecting = True
        try:
            while not g.stopped:
                await asyncio.sleep(g.reconnect_s)
                self.session += 1
                try:
                    await self.start()
                except (OSError, ConnectionError, TimeoutError):
                    if self.conn is not None and self.conn.transport is not None:
                        self.conn.transport.abort()
                    continue
                g.stats.reconnects += 1
                if self.sent_upto > self.acked:
                    self._publish_range(self.acked + 1, self.sent_upto, first=False)
                self.pump()
                return
        finally:
            self.reconnecting = False

    def send_birth(self) -> None:
        self.gen.stats.births += 1
        body = {"kind": "loadgen", "fw": "0.0.0", "caps": ["ping", "blink"], "cfg": "00000000",
                "session": self.session, "boot": 1, "reset": "power", "epoch": self.epoch,
                "first": self.acked + 1, "next": self.next}
        self.publish_raw(f"pe/1/{self.dev}/birth", self._env("birth", body))
        if self.gen.ack_mode == "mqtt" and not self.birth_acked.done():
            self.birth_acked.set_result(True)

    def publish_raw(self, topic: str, payload: bytes, retain: bool = False) -> None:
        conn = self.conn
        if conn is not None:
            qos = self.gen.qos if not retain else 1
            conn.write(codec.publish_packet(topic, payload, qos, conn.next_pid() if qos else 0,
                                            retain))

    # events

    def generate(self, n: int, t: int) -> None:
        tpl = self.template
        seq = self.next
        j = self.journal
        for s in range(seq, seq + n):
            j[s] = (tpl % (s, t)).encode()
        self.next = seq + n
        self.gen.stats.generated += n

    def pump(self) -> None:
        """Publish journaled events while the window has room (saturate: make new ones)."""
        conn = self.conn
        if conn is None or conn.closed or conn.transport is None:
            return
        if conn.transport.get_write_buffer_size() > 1 << 20:  # the broker is not reading
            asyncio.get_running_loop().call_later(0.005, self.pump)
            return
        g = self.gen
        room = WINDOW - (self.sent_upto - self.acked)
        if room <= 0:
            return
        if g.saturate and g.generating:
            short = self.sent_upto + room - (self.next - 1)
            if short > 0:
                self.generate(short, now_ms())
        upto = min(self.next - 1, self.sent_upto + room)
        if upto <= self.sent_upto:
            return
        self._publish_range(self.sent_upto + 1, upto, first=True)
        self.sent_upto = upto

    def _publish_range(self, lo: int, hi: int, first: bool) -> None:
        conn = self.conn
        assert conn is not None
        g = self.gen
        qos = g.qos
        topic = self.evt_topic
        pack = codec.publish_packet_encoded
        now = time.perf_counter()
        if not self.sent_upto > self.acked:  # nothing was in flight: the resend clock starts
            self.last_progress = now
        out = []
        for s in range(lo, hi + 1):
            pid = conn.next_pid() if qos else 0
            out.append(pack(topic, self.journal[s], qos, pid))
            if first:
                self.pub_time[s] = now
            if g.ack_mode == "mqtt" and qos:
                self.pid_seq[pid] = s
        conn.write(b"".join(out))
        n = hi - lo + 1
        g.stats.published += n
        if not first:
            g.stats.resent += n
        if g.ack_mode == "mqtt" and not qos:  # QoS 0 has no ack at all: settled once written
            asyncio.get_running_loop().call_soon(self.settle, hi)

    def settle(self, upto: int) -> None:
        """Every seq <= upto is acknowledged: drop it from the journal, record latencies."""
        if upto <= self.acked:
            return
        upto = min(upto, self.next - 1)
        g = self.gen
        now = time.perf_counter()
        j, pt, lat = self.journal, self.pub_time, g.stats.latencies_ms
        for s in range(self.acked + 1, upto + 1):
            j.pop(s, None)
            t = pt.pop(s, None)
            if t is not None:
                lat.append((now - t) * 1000.0)
        n = upto - self.acked
        g.stats.acked += n
        if g.in_window:
            g.stats.acked_in_window += n
        self.acked = upto
        self.sent_upto = max(self.sent_upto, upto)
        self.last_progress = now
        self.pump()
        if g.draining and self.acked >= self.next - 1:
            g.device_drained()

    def check_resend(self, now: float) -> None:
        if self.sent_upto > self.acked and now - self.last_progress >= self.gen.resend_s:
            self._publish_range(self.acked + 1, self.sent_upto, first=False)
            self.last_progress = now

    # inbound

    def on_puback(self, pid: int) -> None:
        if self.gen.ack_mode == "mqtt":
            seq = self.pid_seq.pop(pid, None)
            if seq is not None:
                self.settle(seq)

    def on_message(self, topic: bytes, payload: bytes) -> None:
        g = self.gen
        try:
            msg = json.loads(payload)
            body = msg.get("body") or {}
        except ValueError:
            return
        if topic == self.ctl_topic:
            mtype = msg.get("type")
            if mtype == "ack" and g.ack_mode == "app":
                g.stats.acks_received += 1
                if body.get("epoch") != self.epoch:
                    return
                if not self.birth_acked.done():
                    self.birth_acked.set_result(True)
                self.settle(int(body.get("upto", 0)))
            elif mtype == "rebirth":
                g.stats.rebirths += 1
                self.send_birth()
            return
        if msg.get("type") == "cmd":
            self.on_command(msg.get("id"), body)

    def on_command(self, cid: Any, body: dict[str, Any]) -> None:
        g = self.gen
        if not isinstance(cid, str):
            return
        g.stats.cmds_received += 1
        stored = self.finished_cmds.get(cid)
        if stored is not None:  # finished before: the stored answer again, no second actuation
            g.stats.cmds_duplicate += 1
            self.publish_raw(f"pe/1/{self.dev}/reply", stored)
            g.stats.replies += 1
            return
        name = body.get("name")
        args = body.get("args") or {}
        if name == "ping":
            status, reason, result = "done", None, {"up": int((time.monotonic() - self.t0) * 1000)}
        elif name == "blink":
            status, reason, result = "done", None, {"times": args.get("times", 3)}
        elif name == "rebirth":
            status, reason, result = "done", None, {}
        else:
            status, reason, result = "rejected", "unknown-command", None
        topic = f"pe/1/{self.dev}/reply"
        final = self._env("reply", {"status": status, "reason": reason, "result": result}, id=cid)
        self.finished_cmds[cid] = final
        if len(self.finished_cmds) > 32:  # the firmware keeps the last 32
            self.finished_cmds.pop(next(iter(self.finished_cmds)))
        if g.reply_accepted and status == "done":
            self.publish_raw(topic, self._env("reply", {"status": "accepted", "reason": None,
                                                        "result": None}, id=cid))
            g.stats.replies += 1
        self.publish_raw(topic, final)
        g.stats.replies += 1
        if name == "rebirth":
            self.send_birth()


# -- the generator ------------------------------------------------------------------------------

class LoadGen:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883, devices: int = 100,
                 prefix: str = "ld", rate: float = 0.0, saturate: bool = False,
                 duration: float = 10.0, qos: int = 1, size: int = 150, ack_mode: str = "app",
                 resend_s: float = RESEND_S, keepalive: int = 60, reply_accepted: bool = True,
                 connect_parallel: int = 64, drain_timeout: float = 60.0,
                 reconnect_s: float | None = None) -> None:
        if ack_mode not in ("app", "mqtt"):
            raise ValueError("ack_mode is 'app' or 'mqtt'")
        self.host, self.port = host, port
        self.n_devices = devices
        self.prefix = prefix
        self.rate = rate
        self.saturate = saturate
        self.duration = duration
        self.qos = qos
        self.size = size
        self.ack_mode = ack_mode
        self.resend_s = resend_s
        self.keepalive = keepalive
        self.reply_accepted = reply_accepted
        self.connect_parallel = connect_parallel
        self.drain_timeout = drain_timeout
        self.reconnect_s = reconnect_s  # None: a lost connection is an error (benchmarks)
        self.stopped = False
        self.stats = Stats()
        self.devices: list[Device] = []
        self.generating = False
        self.in_window = False
        self.draining = False
        self.window_s = 0.0
        self._stop = asyncio.Event()
        self._drained = asyncio.Event()
        self._undrained = 0
        self._by_id: dict[str, Device] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []

    def stop(self) -> None:
        self._stop.set()

    def on_lost(self, conn: MqttConnection, exc: Exception | None) -> None:
        if self.reconnect_s is not None and not self.stopped:
            dev = self._by_id.get(conn.client_id)
            if dev is not None and dev.conn is conn and not dev.reconnecting:
                self._tasks.add(t := asyncio.get_running_loop().create_task(dev.reconnect()))
                t.add_done_callback(self._tasks.discard)
            return
        if not self.draining or exc is not None:
            self.stats.lost_connections += 1
            if len(self.errors) < 5:
                self.errors.append(f"{conn.client_id}: connection lost ({exc!r})")

    def device_drained(self) -> None:
        self._undrained = sum(1 for d in self.devices if d.acked < d.next - 1)
        if self._undrained == 0:
            self._drained.set()

    async def connect_all(self) -> None:
        sem = asyncio.Semaphore(self.connect_parallel)
        width = max(4, len(str(self.n_devices - 1)))
        self.devices = [Device(self, f"{self.prefix}-{i:0{width}d}") for i in range(self.n_devices)]
        self._by_id = {d.dev: d for d in self.devices}

        async def one(d: Device) -> None:
            async with sem:
                await d.start()
        await asyncio.gather(*(one(d) for d in self.devices))
        try:
            await asyncio.wait_for(asyncio.gather(*(d.birth_acked for d in self.devices)), 30)
        except TimeoutError:
            missing = sum(1 for d in self.devices if not d.birth_acked.done())
            raise RuntimeError(f"{missing} of {len(self.devices)} births not acknowledged in 30 s "
                               "(is the gateway running?)") from None

    async def _generate_open_loop(self, total_rate: float, until: float) -> None:
        """Offer `total_rate` events/s, spread round-robin over the devices."""
        start = time.perf_counter()
        made = 0
        i = 0
        devs = self.devices
        nd = len(devs)
        while not self._stop.is_set():
            now = time.perf_counter()
            if now >= until:
                break
            due = int((now - start) * total_rate) - made
            if due > 0:
                t = now_ms()
                touched = []
                for _ in range(due):
                    d = devs[i]
                    i = (i + 1) % nd
                    d.generate(1, t)
                    touched.append(d)
                for d in touched:
                    d.pump()
                made += due
            await asyncio.sleep(0.002)

    async def _housekeeping(self) -> None:
        last_ping = time.perf_counter()
        while True:
            await asyncio.sleep(0.5)
            now = time.perf_counter()
            for d in self.devices:
                d.check_resend(now)
            if now - last_ping >= self.keepalive / 2:
                last_ping = now
                for d in self.devices:
                    if d.conn is not None:
                        d.conn.write(codec.PINGREQ)

    async def run(self, on_window: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Connect, birth, offer the load for `duration` s (or until `stop()`), drain, report."""
        t_connect = time.perf_counter()
        await self.connect_all()
        connect_s = time.perf_counter() - t_connect
        hk = asyncio.create_task(self._housekeeping())
        try:
            self.generating = self.in_window = True
            if on_window:
                on_window("start")
            t0 = time.perf_counter()
            until = t0 + self.duration if self.duration > 0 else float("inf")
            if self.saturate:
                for d in self.devices:
                    d.pump()
                stop_wait = asyncio.create_task(self._stop.wait())
                await asyncio.wait({stop_wait}, timeout=None if until == float("inf")
                                   else max(0.0, until - time.perf_counter()))
                stop_wait.cancel()
            else:
                rate = self.rate
                if rate > 0:
                    await self._generate_open_loop(rate, until)
                else:
                    stop_wait = asyncio.create_task(self._stop.wait())
                    await asyncio.wait({stop_wait}, timeout=None if until == float("inf")
                                       else max(0.0, until - time.perf_counter()))
                    stop_wait.cancel()
            self.generating = self.in_window = False
            self.window_s = time.perf_counter() - t0
            generated_in_window = self.stats.generated
            lat_in_window = len(self.stats.latencies_ms)
            if on_window:
                on_window("end")
            # drain: everything journaled must be acknowledged
            self.draining = True
            t_drain = time.perf_counter()
            self.device_drained()
            for d in self.devices:
                d.pump()
            drained = True
            try:
                await asyncio.wait_for(self._drained.wait(), self.drain_timeout)
            except TimeoutError:
                drained = False
            drain_s = time.perf_counter() - t_drain
        finally:
            hk.cancel()
            self.stopped = True
            for d in self.devices:
                if d.conn is not None:
                    d.conn.disconnect()
        s = self.stats
        lat = s.latencies_ms
        win = lat[:lat_in_window]
        return {
            "devices": self.n_devices, "qos": self.qos, "size": self.size, "ack": self.ack_mode,
            "mode": "saturate" if self.saturate else f"rate {self.rate:g}/s",
            "connect_s": round(connect_s, 3), "window_s": round(self.window_s, 3),
            "generated": s.generated, "generated_in_window": generated_in_window,
            "published": s.published, "resent": s.resent, "acked": s.acked,
            "acked_in_window": s.acked_in_window,
            "acked_per_s": round(s.acked_in_window / self.window_s, 1) if self.window_s else 0.0,
            "drained": drained, "drain_s": round(drain_s, 3),
            "unacked": sum(d.next - 1 - d.acked for d in self.devices),
            "latency_ms": percentiles(win), "latency_all_ms": percentiles(lat),
            "births": s.births, "rebirths": s.rebirths, "acks_received": s.acks_received,
            "cmds_received": s.cmds_received, "cmds_duplicate": s.cmds_duplicate,
            "replies": s.replies, "lost_connections": s.lost_connections,
            "reconnects": s.reconnects, "errors": self.errors,
            "sent_per_device": {d.dev: d.next - 1 for d in self.devices},
            "session_per_device": {d.dev: d.session for d in self.devices},
        }


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    v = sorted(values)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, int(p * len(v)))], 3)
    return {"n": len(v), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": round(v[-1], 3),
            "mean": round(statistics.fmean(v), 3)}


# -- a subscriber that does nothing but count (the raw ceiling) --------------------------------

async def run_sink(host: str, port: int, topic: str, qos: int, idle_exit: float,
                   stop: asyncio.Event, ready: Callable[[], None],
                   progress: bool = False) -> dict[str, Any]:
    """Subscribe to `topic` and count messages until `stop` (or `idle_exit` s of silence).
    With `progress`, print `received N` whenever the count changed (every 0.25 s)."""
    count = 0
    first = last = 0.0

    def on_message(_topic: bytes, _payload: bytes) -> None:
        nonlocal count, first, last
        last = time.perf_counter()
        if not count:
            first = last
        count += 1

    conn = MqttConnection(f"sink-{os.getpid()}", keepalive=60, on_message=on_message)
    await conn.connect(host, port)
    await conn.subscribe([(topic, qos)])
    ready()
    last_ping = time.perf_counter()
    reported = -1
    while not stop.is_set() and not conn.closed:
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass
        now = time.perf_counter()
        if progress and count != reported:
            reported = count
            print(f"received {count}", flush=True)
        if idle_exit and count and now - last > idle_exit:
            break
        if now - last_ping > 20:
            last_ping = now
            conn.write(codec.PINGREQ)
    conn.disconnect()
    span = last - first
    return {"received": count, "span_s": round(span, 3),
            "per_s": round((count - 1) / span, 1) if count > 1 and span > 0 else 0.0}


# -- command line -------------------------------------------------------------------------------

def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1"), int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.loadgen",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--broker", type=host_port, default=("127.0.0.1", 1883), metavar="HOST:PORT")
    p.add_argument("--devices", type=int, default=100, help="simulated devices (one connection each)")
    p.add_argument("--prefix", default="ld", help="device ids are PREFIX-0000, PREFIX-0001, ...")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--saturate", action="store_true",
                      help="closed loop: keep every device's 16-event window full")
    load.add_argument("--rate", type=float, help="total events/s over all devices (0: none)")
    load.add_argument("--per-device", type=float, help="events/s per device")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds of load (0: until SIGTERM/SIGINT), then drain")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1, help="QoS of events (protocol: 1)")
    p.add_argument("--size", type=int, default=150, help="event payload bytes (protocol: ~150)")
    p.add_argument("--ack", choices=("app", "mqtt"), default="app",
                   help="settle events on the gateway's ack (app) or the broker's PUBACK (mqtt)")
    p.add_argument("--resend-s", type=float, default=RESEND_S)
    p.add_argument("--no-accepted", action="store_true",
                   help="answer commands with `done` only (default: `accepted` then `done`)")
    p.add_argument("--drain-timeout", type=float, default=60.0)
    p.add_argument("--keepalive", type=int, default=60, help="MQTT keepalive seconds")
    p.add_argument("--reconnect", type=float, default=None, metavar="S",
                   help="reconnect a lost connection every S seconds (new session, birth, "
                        "re-send); default: a lost connection is an error")
    p.add_argument("--json", action="store_true",
                   help="no human summary line; the JSON summary gets per-device seq counts")
    p.add_argument("--sink", action="store_true",
                   help="instead: subscribe and count (the raw ceiling's consumer)")
    p.add_argument("--sink-topic", default="pe/1/+/evt")
    p.add_argument("--idle-exit", type=float, default=0.0,
                   help="--sink: exit this many seconds after the last message (0: never)")
    p.add_argument("--progress", action="store_true",
                   help="--sink: print `received N` lines while counting")
    return p


def _install_stop(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


async def _amain(args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.broker
    if args.sink:
        stop = asyncio.Event()
        _install_stop(stop.set)
        return await run_sink(host, port, args.sink_topic, args.qos, args.idle_exit, stop,
                              lambda: print("sink ready", flush=True), progress=args.progress)
    rate = 0.0
    if args.per_device is not None:
        rate = args.per_device * args.devices
    elif args.rate is not None:
        rate = args.rate
    elif not args.saturate:
        rate = 10.0 * args.devices
    gen = LoadGen(host=host, port=port, devices=args.devices, prefix=args.prefix, rate=rate,
                  saturate=args.saturate, duration=args.duration, qos=args.qos, size=args.size,
                  ack_mode=args.ack, resend_s=args.resend_s,
                  reply_accepted=not args.no_accepted, drain_timeout=args.drain_timeout,
                  keepalive=args.keepalive, reconnect_s=args.reconnect)
    _install_stop(gen.stop)
    return await gen.run(on_window=lambda what: print(f"load {what}", flush=True))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = asyncio.run(_amain(args))
    except (TimeoutError, OSError, RuntimeError) as exc:
        print(f"loadgen: {exc!r}", file=sys.stderr)
        return 2
    if not args.json and not args.sink:
        lat = result["latency_ms"]
        print(f"{result['devices']} devices, {result['mode']}, QoS {result['qos']}, "
              f"{result['size']} B, ack={result['ack']}: {result['acked_per_s']:.0f} events/s "
              f"acknowledged over {result['window_s']:.1f} s; publish→ack p50 "
              f"{lat.get('p50', float('nan'))} ms p99 {lat.get('p99', float('nan'))} ms; "
              f"resent {result['resent']}, unacked {result['unacked']}", flush=True)
    out = dict(result)
    if not args.json:
        out.pop("sent_per_device", None)
        out.pop("session_per_device", None)
    print(json.dumps(out), flush=True)
    return 0 if result.get("drained", True) and not result.get("lost_connections") else 1


if __name__ == "__main__":
    random.seed()
    sys.exit(main())
