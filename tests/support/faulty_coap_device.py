"""A CoAP device written from docs/protocol.md alone (aiocoap as client, its own HMAC; no
project code), with the conformance test hook, that keeps the CoAP mapping except for one
chosen fault:

    python tests/support/faulty_coap_device.py --config device-config.json [--fault apply-duplicates]

Faults: `none`; `apply-duplicates` (it keeps no command ids: a repeated id is applied again).
tests/tools/test_conformance.py runs the kit over CoAP against it: the kit must fail exactly the
clauses the fault breaks. Simplifications: journal and command ids in memory, one event at a
time, a response of more than one block (Block2) is ignored, not fetched."""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import time

import aiocoap
from aiocoap.optiontypes import OpaqueOption

FAULTS = ("none", "apply-duplicates")
EDGE_AUTH = 65000


class Device:
    def __init__(self, cfg: dict, fault: str):
        self.dev = cfg["device_id"]
        c = cfg["coap"]
        self.base = f"coap://{c['host']}:{c['port']}/"
        self.hb = int(c.get("keepalive", 10))
        self.key = bytes.fromhex(c["key"])
        self.hook = cfg.get("conformance") is True
        self.fault = fault
        self.session = 0
        self.epoch = os.urandom(4).hex()
        self.journal: list[tuple[int, bytes]] = []
        self.next = 1
        self.clock: tuple[int, float] | None = None
        self.done: dict[str, tuple] = {}
        self.t0 = time.monotonic()
        self.lane = asyncio.Lock()
        self.drop = asyncio.Event()

    def now(self) -> int | None:
        return None if self.clock is None else self.clock[0] + int((time.monotonic() - self.clock[1]) * 1000)

    def env(self, mtype: str, body: dict, **extra) -> bytes:
        return json.dumps({"v": 1, "dev": self.dev, "type": mtype, "t": self.now(), **extra,
                           "body": body}).encode()

    # --- the message layer with Edge-Auth ---------------------------------------------------
    def _sign(self, m: aiocoap.Message, nonce: bytes, ctr: int) -> None:
        data = b"".join((nonce, ctr.to_bytes(4, "big"), bytes((int(m.code),)),
                         "/".join(m.opt.uri_path).encode(), b"\0", "&".join(m.opt.uri_query).encode(),
                         b"\0", bytes(4), bytes(4), m.payload))
        m.opt.add_option(OpaqueOption(EDGE_AUTH, ctr.to_bytes(4, "big")
                                      + hmac.new(self.key, data, hashlib.sha256).digest()[:16]))

    async def request(self, code, channel: str, payload: bytes = b"", query: list[str] = ()) -> aiocoap.Message:
        m = aiocoap.Message(code=code, payload=payload, uri=f"{self.base}pe/1/{self.dev}/{channel}")
        m.opt.uri_query = tuple(query)
        self.ctr += 1
        self._sign(m, self.nonce, self.ctr)
        return await self.ctx.request(m, handle_blockwise=False).response

    def q(self) -> list[str]:
        return [f"hb={self.hb}", f"s={self.session}"]

    async def post(self, channel: str, payload: bytes) -> None:
        async with self.lane:
            r = await self.request(aiocoap.POST, channel, payload, self.q())
        if r.code.is_successful() and r.payload:
            self.on_ctl(r.payload)

    # --- a session ----------------------------------------------------------------------------
    async def connect(self) -> None:
        self.ctx = await aiocoap.Context.create_client_context()
        m = aiocoap.Message(code=aiocoap.GET, uri=f"{self.base}pe/1/{self.dev}/auth")
        challenge = (await self.ctx.request(m).response).payload
        m = aiocoap.Message(code=aiocoap.POST, payload=challenge, uri=f"{self.base}pe/1/{self.dev}/auth")
        self._sign(m, bytes(8), 7)
        r = await self.ctx.request(m).response
        if r.code != aiocoap.CHANGED:
            raise SystemExit(f"auth refused: {r.code} {r.payload!r}")
        self.nonce, self.ctr = r.payload, 0
        self.session += 1

    def birth(self) -> bytes:
        first = self.journal[0][0] if self.journal else self.next
        return self.env("birth", {
            "kind": "sample-pad", "fw": "faulty-coap-0",
            "caps": ["ping", "rebirth"] + (["conformance"] if self.hook else []),
            "cfg": "00000000", "session": self.session, "boot": 1, "epoch": self.epoch,
            "first": first, "next": self.next})

    async def run_session(self) -> None:
        await self.connect()
        await self.post("birth", self.birth())
        await self.post("status", self.env("online", {"session": self.session}))
        for _, payload in list(self.journal):
            await self.post("evt", payload)
        self.sent_at = time.monotonic()
        tasks = [asyncio.create_task(self.poller()), asyncio.create_task(self.resender())]
        await self.drop.wait()
        self.drop.clear()
        for t in tasks:
            t.cancel()
        await self.ctx.shutdown()

    async def poller(self) -> None:
        while True:
            r = await self.request(aiocoap.GET, "cmd", b"", self.q() + [f"hold={max(1, self.hb * 3 // 4)}"])
            if r.code == aiocoap.CONTENT and r.payload and not (r.opt.block2 and r.opt.block2.more):
                self.on_message(r.payload)

    async def resender(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.journal and time.monotonic() - self.sent_at > 10:
                self.sent_at = time.monotonic()
                for _, payload in list(self.journal):
                    await self.post("evt", payload)

    # --- messages from the gateway --------------------------------------------------------------
    def on_message(self, raw: bytes) -> None:
        try:
            if len(raw) > 4096:
                return
            msg = json.loads(raw)
        except (ValueError, RecursionError):
            return
        if not isinstance(msg, dict) or msg.get("v") != 1 or msg.get("dev") != self.dev \
                or not isinstance(msg.get("body"), dict):
            return
        if msg.get("type") == "cmd":
            asyncio.get_running_loop().create_task(self.command(msg.get("id"), msg["body"]))
        else:
            self.on_ctl(raw)

    def on_ctl(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
            body = msg["body"]
        except (ValueError, KeyError, TypeError):
            return
        if msg.get("type") == "ack" and body.get("epoch") == self.epoch:
            if isinstance(body.get("now"), int):
                self.clock = (body["now"], time.monotonic())
            if isinstance(body.get("upto"), int):
                self.journal = [e for e in self.journal if e[0] > body["upto"]]
        elif msg.get("type") == "rebirth":
            asyncio.get_running_loop().create_task(self.post("birth", self.birth()))

    async def emit(self, etype: str, body: dict) -> None:
        seq = self.next
        self.next += 1
        payload = self.env(etype, body, seq=seq)
        self.journal.append((seq, payload))
        self.sent_at = time.monotonic()
        await self.post("evt", payload)

    async def reply(self, cid, status, reason=None, result=None) -> None:
        await self.post("reply", self.env("reply", {"status": status, "reason": reason,
                                                    "result": result}, id=cid))

    async def command(self, cid, body) -> None:
        if not isinstance(cid, str) or not 0 < len(cid) <= 64:
            return
        if cid in self.done and self.fault != "apply-duplicates":
            await self.reply(cid, *self.done[cid])
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
            await self.post("birth", self.birth())
        elif args.get("action") == "emit" and type(args.get("n", 1)) is int and 0 < args.get("n", 1) <= 50:
            for i in range(args.get("n", 1)):
                await self.emit("conformance.test", {"i": i})
            result = {"n": args.get("n", 1)}
        elif args.get("action") == "drop_link":
            asyncio.get_running_loop().call_later(0.3, self.drop.set)
        else:
            status, reason = "rejected", "bad-args"
        self.done[cid] = (status, reason, result if status == "done" else None)
        await self.reply(cid, *self.done[cid])

    async def run(self) -> None:
        while True:
            await self.run_session()
            await asyncio.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--fault", choices=FAULTS, default="none")
    a = ap.parse_args()
    with open(a.config) as f:
        asyncio.run(Device(json.load(f), a.fault).run())


if __name__ == "__main__":
    main()
