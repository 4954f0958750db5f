"""The conformance kit's side of the wire: it plays the gateway for one device over MQTT, and
records everything the device sends, in order, for the clauses to check."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

TOPICS = ("birth", "status", "evt", "reply")
REDELIVER_S = 2.0  # a command without a final reply is delivered again (the gateway's period)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Msg:
    """One message from the device: its index in arrival order, its channel, the parsed
    envelope (None if it was not a JSON object) and the epoch of the birth before it."""
    i: int
    channel: str
    raw: bytes
    obj: dict | None
    epoch: str | None
    at: float = field(default_factory=time.monotonic)
    meta: dict = field(default_factory=dict)  # CoAP: `auth` records (method, response code), `again`

    @property
    def type(self) -> str | None:
        return self.obj.get("type") if self.obj else None

    @property
    def body(self) -> dict:
        b = self.obj.get("body") if self.obj else None
        return b if isinstance(b, dict) else {}


class GatewaySide:
    """What the kit's gateway role keeps over any transport: the device's messages in arrival
    order (`msgs`, waited on through `cond`), its epoch, what the kit acked per epoch, the
    event seqs it saw and the commands without a final answer; and the lookups clauses use."""

    def __init__(self, dev: str) -> None:
        self.dev = dev
        self.prefix = f"pe/1/{dev}/"
        self.msgs: list[Msg] = []
        self.cond = threading.Condition()
        self.epoch: str | None = None
        self.acked: dict[str, int] = {}  # epoch -> upto the kit acknowledged
        self.seen: dict[str, set[int]] = {}  # epoch -> event seqs received
        self.pending: dict[str, bytes] = {}  # command id -> payload, until a final reply

    def envelope(self, mtype: str, body: dict, **extra) -> dict:
        return {"v": 1, "dev": self.dev, "type": mtype, "t": now_ms(), **extra, "body": body}

    def mark(self) -> int:
        with self.cond:
            return len(self.msgs)

    def find(self, pred, since: int = 0) -> list[Msg]:
        with self.cond:
            return [m for m in self.msgs[since:] if pred(m)]

    def wait(self, pred, since: int, timeout: float) -> Msg | None:
        deadline = time.monotonic() + timeout
        i = since
        with self.cond:
            while True:
                while i < len(self.msgs):
                    if pred(self.msgs[i]):
                        return self.msgs[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


class MqttGatewaySide(GatewaySide):
    """A paho client that answers like the gateway (docs/protocol.md): an `ack` to every birth
    (with the `upto` the kit has acked for that epoch and its clock in `now`) and re-sends the
    commands it has no final answer for on every birth and every `REDELIVER_S` (as the gateway
    does: docs/protocol.md "Commands", Redelivery). Events are acked only when a clause says
    so (`ack`)."""

    transport = "mqtt"

    def __init__(self, host: str, port: int, dev: str):
        import paho.mqtt.client as mqtt

        super().__init__(dev)
        self.host, self.port = host, port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"conformance-kit-{dev}", clean_session=True)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self._stop = threading.Event()
        self._redeliverer = threading.Thread(target=self._redeliver, daemon=True,
                                             name=f"conformance-redeliver-{dev}")

    def start(self, timeout: float = 10) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"could not connect to the broker at {self.host}:{self.port}: "
                               "check --broker (or let the kit start its own Mosquitto)")
        self._redeliverer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._redeliverer.is_alive():
            self._redeliverer.join(10)
        self.client.disconnect()
        self.client.loop_stop()

    def _redeliver(self) -> None:
        # every command without a final reply goes out again every 2 s, as the gateway does:
        # a device at 96 KB that found no hole in its heap for a command (its task, its
        # parse) drops it and counts on this to answer later (docs/protocol.md "Commands")
        while not self._stop.wait(REDELIVER_S):
            with self.cond:
                pending = list(self.pending.values())
            for payload in pending:
                self.publish("cmd", payload)

    def _on_connect(self, client, userdata, flags, rc, props=None):
        client.subscribe([(self.prefix + t, 1) for t in TOPICS])
        self._subscribed.set()

    # --- receiving ----------------------------------------------------------------------
    def _on_message(self, client, userdata, m):
        channel = m.topic.rsplit("/", 1)[-1]
        try:
            obj = json.loads(m.payload)
            if not isinstance(obj, dict):
                obj = None
        except ValueError:
            obj = None
        with self.cond:
            if channel == "birth" and obj and isinstance(obj.get("body"), dict):
                ep = obj["body"].get("epoch")
                if isinstance(ep, str):
                    self.epoch = ep
            msg = Msg(len(self.msgs), channel, bytes(m.payload), obj, self.epoch)
            self.msgs.append(msg)
            if channel == "evt" and obj and isinstance(obj.get("seq"), int) and self.epoch:
                self.seen.setdefault(self.epoch, set()).add(obj["seq"])
            if channel == "reply" and obj and obj.get("body", {}).get("status") in ("done", "rejected", "failed"):
                self.pending.pop(obj.get("id"), None)
            self.cond.notify_all()
        if channel == "birth" and obj and msg.epoch:
            first = msg.body.get("first")
            upto = self.acked.get(msg.epoch, 0)
            if isinstance(first, int):
                upto = max(upto, first - 1)
            self.acked[msg.epoch] = upto
            self.ack(upto)
            for payload in list(self.pending.values()):
                self.publish("cmd", payload)

    # --- sending ------------------------------------------------------------------------
    def publish(self, channel: str, payload: dict | bytes) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload).encode()
        self.client.publish(self.prefix + channel, payload, qos=1, retain=False)

    def ack(self, upto: int) -> None:
        self.acked[self.epoch] = max(self.acked.get(self.epoch, 0), upto)
        self.publish("ctl", self.envelope("ack", {"epoch": self.epoch, "upto": upto, "now": now_ms()}))

    def command(self, cid: str, payload: dict | bytes, redeliver: bool = True) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if redeliver:
            self.pending[cid] = raw
        self.publish("cmd", raw)
