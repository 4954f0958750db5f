"""A device written from docs/protocol.md alone (paho-mqtt, no project code), with the
conformance test hook, that keeps the contract except for one chosen fault:

    python tests/support/faulty_device.py --config device-config.json [--fault no-replay]

Faults: `none`; `no-replay` (after a reconnect it does not re-send its journal; the birth
still announces it); `apply-duplicates` (it keeps no command ids: a repeated id is applied
again). tests/tools/test_conformance.py runs the conformance kit against it: the kit must fail
exactly the clauses the fault breaks. Journal and command ids live in memory (the kit
never restarts the process)."""
from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time

import paho.mqtt.client as mqtt

FAULTS = ("none", "no-replay", "apply-duplicates")


class Device:
    def __init__(self, cfg: dict, fault: str):
        self.dev = cfg["device_id"]
        self.host, self.port = cfg["mqtt"]["host"], cfg["mqtt"]["port"]
        self.hook = cfg.get("conformance") is True
        self.fault = fault
        self.p = f"pe/1/{self.dev}/"
        self.lock = threading.RLock()
        self.session = 0
        self.epoch = os.urandom(4).hex()
        self.journal: list[tuple[int, bytes]] = []  # (seq, payload), unacknowledged
        self.next = 1
        self.sent_at = 0.0
        self.clock: tuple[int, float] | None = None  # (gateway ms, monotonic) from the last ack
        self.done: dict[str, tuple] = {}  # command id -> (status, reason, result)
        self.t0 = time.monotonic()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.dev, clean_session=True)
        self.c.on_connect = self.on_connect
        self.c.on_message = self.on_message
        self.c.on_disconnect = lambda *a: self._set_will()
        self.c.reconnect_delay_set(1, 2)
        self._set_will()

    def now(self) -> int | None:
        return None if self.clock is None else self.clock[0] + int((time.monotonic() - self.clock[1]) * 1000)

    def env(self, mtype: str, body: dict, **extra) -> dict:
        return {"v": 1, "dev": self.dev, "type": mtype, "t": self.now(), **extra, "body": body}

    def pub(self, ch: str, msg: dict | bytes, retain: bool = False) -> None:
        self.c.publish(self.p + ch, msg if isinstance(msg, bytes) else json.dumps(msg), 1, retain)

    def _set_will(self) -> None:
        self.c.will_set(self.p + "status", json.dumps(self.env("offline", {"session": self.session + 1})), 1, True)

    def birth(self) -> None:
        first = self.journal[0][0] if self.journal else self.next
        self.pub("birth", self.env("birth", {
            "kind": "sample-pad", "fw": "faulty-0",
            "caps": ["ping", "rebirth"] + (["conformance"] if self.hook else []),
            "cfg": "00000000", "session": self.session, "boot": 1, "epoch": self.epoch,
            "first": first, "next": self.next}))

    def on_connect(self, c, userdata, flags, rc, props=None):
        with self.lock:
            self.session += 1
            c.subscribe([(self.p + "cmd", 1), (self.p + "ctl", 1)])
            self.birth()
            self.pub("status", self.env("online", {"session": self.session}), retain=True)
            if self.fault != "no-replay":
                self.resend()

    def resend(self) -> None:
        for _, payload in self.journal:
            self.pub("evt", payload)
        self.sent_at = time.monotonic()

    def emit(self, etype: str, body: dict) -> None:
        with self.lock:
            seq = self.next
            self.next += 1
            payload = json.dumps(self.env(etype, body, seq=seq)).encode()
            self.journal.append((seq, payload))
            self.pub("evt", payload)
            self.sent_at = time.monotonic()

    def on_message(self, c, userdata, m):
        try:
            if len(m.payload) > 4096:
                return
            msg = json.loads(m.payload)
        except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
            return
        if not isinstance(msg, dict) or msg.get("v") != 1 or msg.get("dev") != self.dev \
                or not isinstance(msg.get("body"), dict):
            return
        body = msg["body"]
        with self.lock:
            if m.topic.endswith("/ctl") and msg.get("type") == "ack" and body.get("epoch") == self.epoch:
                if isinstance(body.get("now"), int):
                    self.clock = (body["now"], time.monotonic())
                if isinstance(body.get("upto"), int):
                    self.journal = [e for e in self.journal if e[0] > body["upto"]]
            elif m.topic.endswith("/ctl") and msg.get("type") == "rebirth":
                self.birth()
            elif m.topic.endswith("/cmd") and msg.get("type") == "cmd":
                self.command(msg.get("id"), body)

    def reply(self, cid, status, reason=None, result=None) -> None:
        self.pub("reply", self.env("reply", {"status": status, "reason": reason, "result": result}, id=cid))

    def command(self, cid, body) -> None:
        if not isinstance(cid, str) or not 0 < len(cid) <= 64:
            return
        if cid in self.done and self.fault != "apply-duplicates":
            self.reply(cid, *self.done[cid])
            return
        name, args, deadline = body.get("name"), body.get("args") or {}, body.get("deadline")
        now = self.now()
        status, reason, result = "done", None, {}
        if isinstance(deadline, int) and now is not None and now > deadline:
            status, reason = "rejected", "expired"
        elif name not in ("ping", "rebirth") and not (name == "conformance" and self.hook):
            status, reason = "rejected", "unknown-command"
        elif not isinstance(args, dict):
            status, reason = "rejected", "bad-args"
        elif name == "ping":
            result = {"up": int((time.monotonic() - self.t0) * 1000)}
        elif name == "rebirth":
            self.birth()
        elif args.get("action") == "emit" and type(args.get("n", 1)) is int and 0 < args.get("n", 1) <= 50:
            for i in range(args.get("n", 1)):
                self.emit("conformance.test", {"i": i})
            result = {"n": args.get("n", 1)}
        elif args.get("action") == "drop_link":
            threading.Timer(0.3, self.drop_link).start()
        else:
            status, reason = "rejected", "bad-args"
        self.done[cid] = (status, reason, result if status == "done" else None)
        self.reply(cid, *self.done[cid])

    def drop_link(self) -> None:
        sock = self.c.socket()
        if sock is not None:  # no DISCONNECT: the broker publishes the will; paho reconnects
            sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> None:
        self.c.connect(self.host, self.port, keepalive=10)
        self.c.loop_start()
        while True:
            time.sleep(0.5)
            with self.lock:
                if self.journal and self.c.is_connected() and time.monotonic() - self.sent_at > 10:
                    self.resend()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--fault", choices=FAULTS, default="none")
    a = ap.parse_args()
    with open(a.config) as f:
        Device(json.load(f), a.fault).run()


if __name__ == "__main__":
    main()
