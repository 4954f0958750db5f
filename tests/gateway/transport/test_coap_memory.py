"""Bounded memory of the CoAP edge under sustained load (issue 7).

aiocoap remembers every request for EXCHANGE_LIFETIME (247 s) with a loop timer and the full
response (which references its request): memory grows with the request rate. The edge
replaces that table (`gateway.transport.coap.BoundedDedup`). These tests drive the real gateway with a
load generator in another process (virtual devices: birth, then events one at a time, like
the firmware) and check that the table, and the gateway's Python heap, stay bounded, while
duplicates are still answered from the table.

Longer measurements (the figures in docs/coap.md):
    .venv/bin/python -m tests.gateway.transport.test_coap_memory --seconds 60 [--stock]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from hil.harness import wait_for
from tests.support.coap_harness import CoapGateway

ROOT = Path(__file__).resolve().parents[3]


# -- a minimal CoAP client for load (not the firmware's: this one is CPython) -----------------

def _opt(delta: int, value: bytes) -> bytes:
    def ext(n: int) -> tuple[int, bytes]:
        if n < 13:
            return n, b""
        if n < 269:
            return 13, bytes([n - 13])
        return 14, struct.pack("!H", n - 269)
    dn, dx = ext(delta)
    ln, lx = ext(len(value))
    return bytes([(dn << 4) | ln]) + dx + lx + value


def coap_post(mid: int, token: bytes, path: list[str], query: list[str], payload: bytes) -> bytes:
    out = bytearray([0x40 | len(token), 0x02]) + struct.pack("!H", mid) + token
    last = 0
    for num, val in [(11, p.encode()) for p in path] + [(12, b"\x32")] + \
            [(15, q.encode()) for q in query]:
        out += _opt(num - last, val)
        last = num
    return bytes(out + b"\xff" + payload)


class _Dev(asyncio.DatagramProtocol):
    """One virtual device: birth, then events one at a time; every `dup_every`-th request is
    sent twice (a retransmission the gateway must answer from its table)."""

    def __init__(self, name: str, stats: dict, dup_every: int, period: float = 0.0) -> None:
        self.name = name
        self.period = period  # seconds between requests (0: as fast as answered)
        self.stats = stats
        self.dup_every = dup_every
        self.mid = random.randrange(65536)
        self.seq = 0
        self.epoch = os.urandom(4).hex()
        self.waiting: tuple[int, asyncio.Future] | None = None
        self.token = b""
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data, addr):  # type: ignore[override]
        mtype, code = (data[0] >> 4) & 3, data[1]
        mid = struct.unpack("!H", data[2:4])[0]
        token = data[4:4 + (data[0] & 15)]
        if mtype == 0:  # a separate response (CON): acknowledge it
            self.transport.sendto(bytes([0x60, 0]) + data[2:4])
        if code == 0:  # empty ACK: the response follows separately
            self.stats["empty_acks"] += 1
            return
        fut = self.waiting[1] if self.waiting else None
        if fut is not None and not fut.done() and (
                (mtype == 2 and self.waiting[0] == mid) or token == self.token):
            fut.set_result(data)
        else:
            self.stats["late"] += 1

    async def request(self, kind: str, body: dict) -> bytes | None:
        self.mid = (self.mid + 1) & 0xFFFF
        self.token = os.urandom(4)
        msg = coap_post(self.mid, self.token, ["pe", "1", self.name, kind], ["s=1", "hb=3600"],
                        json.dumps(body, separators=(",", ":")).encode())
        fut = asyncio.get_running_loop().create_future()
        self.waiting = (self.mid, fut)
        self.transport.sendto(msg)
        self.stats["sent"] += 1
        if self.dup_every and self.stats["sent"] % self.dup_every == 0:
            self.transport.sendto(msg)
            self.stats["dups"] += 1
        try:
            return await asyncio.wait_for(fut, 5)
        except TimeoutError:
            self.stats["timeouts"] += 1
            return None

    async def run(self, until: float) -> None:
        await self.request("birth", {"v": 1, "dev": self.name, "type": "birth", "t": None, "body": {
            "kind": "sample-pad", "fw": "load", "caps": [], "cfg": "00000000", "session": 1,
            "boot": 1, "reset": None, "epoch": self.epoch, "first": 1, "next": 1}})
        await asyncio.sleep(random.uniform(0, self.period))
        while time.monotonic() < until:
            t = time.monotonic()
            self.seq += 1
            r = await self.request("evt", {"v": 1, "dev": self.name, "type": "load.tick",
                                           "seq": self.seq, "t": None, "body": {"n": self.seq}})
            if r is not None:
                code = r[1]
                self.stats["ok" if code >> 5 == 2 else f"code_{code >> 5}.{code & 31:02d}"] += 1
            if self.period:
                await asyncio.sleep(max(0.0, self.period - (time.monotonic() - t)))


async def _load(port: int, devices: int, seconds: float, dup_every: int, rate: float) -> dict:
    from collections import Counter
    stats: Counter = Counter()
    loop = asyncio.get_running_loop()
    until = time.monotonic() + seconds
    devs = []
    for i in range(devices):
        d = _Dev(f"load-{os.getpid() % 1000}-{i}", stats, dup_every,
                 devices / rate if rate else 0.0)
        await loop.create_datagram_endpoint(lambda d=d: d, remote_addr=("127.0.0.1", port))
        devs.append(d)
    t0 = time.monotonic()
    await asyncio.gather(*(d.run(until) for d in devs))
    stats["seconds"] = round(time.monotonic() - t0, 2)
    return dict(stats)


def run_load(port: int, devices: int, seconds: float, dup_every: int = 50,
             rate: float = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.gateway.transport.test_coap_memory", "--load", str(port),
                             "--devices", str(devices), "--seconds", str(seconds),
                             "--dup-every", str(dup_every), "--rate", str(rate)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)


# -- measurement -------------------------------------------------------------------------------

def measure(broker_port: int, workdir: Path, seconds: float, devices: int, stock: bool,
            dedupe_max: int = 4096, trace: bool = True, sample_s: float = 1.0,
            rate: float = 0) -> dict:
    """Gateway in-process (traced), load from another process. Returns figures."""
    options = {"dedupe_max": dedupe_max, "heartbeat_s": 3600.0}
    # the load's virtual devices do not sign: unauthenticated devices explicitly allowed
    g = CoapGateway(workdir, broker_port, allow_unauthenticated=True, **options)
    if trace:
        tracemalloc.start()
    g.start()
    try:
        if stock:  # undo the bound: aiocoap's own table (and its timers) again
            def unbound() -> None:
                for d in g.edge.dedup:
                    mman = d.mman
                    for name in ("_deduplicate_message", "_store_response_for_duplicates"):
                        mman.__dict__.pop(name, None)
                g.edge.dedup = []
            g.loop.call_soon_threadsafe(unbound)
            time.sleep(0.1)
        base = tracemalloc.get_traced_memory()[0] if trace else 0
        rss0 = _rss()
        lags: list[float] = []

        async def probe() -> None:  # how late does a 10 ms timer fire on the gateway loop?
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - t - 0.01)

        fut = asyncio.run_coroutine_threadsafe(probe(), g.loop)
        proc = run_load(g.coap_port, devices, seconds, rate=rate)
        samples = []
        t0 = time.monotonic()
        while proc.poll() is None:
            time.sleep(sample_s)
            entries = g.call(_table_size, g)
            mem = (tracemalloc.get_traced_memory()[0] - base) if trace else \
                _rss() - rss0
            samples.append((round(time.monotonic() - t0, 1), entries, mem))
        load = json.loads(proc.stdout.read().strip().splitlines()[-1])
        fut.cancel()
        end_mem = (tracemalloc.get_traced_memory()[0] - base) if trace else _rss() - rss0
        by_file = {}
        if trace:  # who holds the memory at the end (the table: aiocoap, asyncio timers, us)
            for st in tracemalloc.take_snapshot().statistics("filename")[:12]:
                name = st.traceback[0].filename
                key = name.split("site-packages/")[-1] if "site-packages" in name else \
                    name.split("/lib/python3.11/")[-1] if "/lib/python3.11/" in name else \
                    os.path.relpath(name, ROOT)
                by_file[key] = st.size
        peak = tracemalloc.get_traced_memory()[1] - base if trace else 0
        stats = g.get("/stats")
        edge = g.edge.stats()
        return {"stock": stock, "seconds": load["seconds"], "devices": devices,
                "requests_per_s": round(load["sent"] / load["seconds"]),
                "load": load, "samples": samples, "table_entries": samples[-1][1],
                "heap_growth_bytes" if trace else "rss_growth_bytes": end_mem, "heap_peak_bytes": peak,
                "loop_lag_ms": {"p50": _pct(lags, 0.5), "p99": _pct(lags, 0.99),
                                "max": _pct(lags, 1.0)},
                "loop_timers": g.call(_timers),
                "events_persisted": stats["events_persisted"], "duplicates": stats["duplicates"],
                "edge": edge, "heap_by_file": by_file}
    finally:
        g.stop()
        if trace:
            tracemalloc.stop()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1)


async def _timers() -> int:
    return len(asyncio.get_running_loop()._scheduled)  # type: ignore[attr-defined]


async def _table_size(g: CoapGateway) -> int:
    if g.edge.dedup:
        return sum(len(d) for d in g.edge.dedup)
    return sum(len(ri.token_interface._recent_messages)
               for ri in g.edge.context.request_interfaces)


# -- tests --------------------------------------------------------------------------------------

def test_dedupe_table_stays_bounded_under_sustained_load(broker, tmp_path):
    cap = 300
    r = measure(broker.port, tmp_path / "bounded", seconds=3, devices=40, stock=False,
                dedupe_max=cap, trace=False, sample_s=0.5)
    print(json.dumps({k: v for k, v in r.items() if k != "samples"}, indent=1))
    sent = r["load"]["sent"]
    assert sent > 3 * cap, f"load too light to test the bound: {r['load']}"
    assert max(n for (_, n, _) in r["samples"]) <= cap
    assert r["edge"]["dedupe_evicted"] >= sent - cap - 50
    # retransmissions were answered from the table, not applied again
    assert r["edge"]["dedupe_hits"] >= r["load"]["dups"] * 0.9
    assert r["duplicates"] == 0
    assert r["load"].get("timeouts", 0) == 0
    # no loop timer per remembered request (stock aiocoap keeps one for 247 s each)
    assert r["loop_timers"] < 200, r["loop_timers"]


def test_table_entry_costs_well_under_a_kilobyte_and_the_total_is_capped():
    """Python heap of the bounded table, per entry, with real aiocoap messages and remotes."""
    from aiocoap import Context, Message
    from aiocoap.numbers.codes import Code
    from aiocoap.numbers.types import Type
    from aiocoap.transports.udp6 import UDP6EndpointAddress

    from gateway.transport.coap import bound_dedup

    async def fill(cap: int, n: int) -> tuple[int, int]:
        ctx = await Context.create_server_context(None, bind=("127.0.0.1", 0),
                                                  transports=["udp6"])
        try:
            table = bound_dedup(ctx, cap, 247.0)[0]
            iface = ctx.request_interfaces[0].token_interface.message_interface
            req = coap_post(0, b"\x01\x02\x03\x04", ["pe", "1", "pad-1", "evt"], ["s=1", "hb=30"],
                            b'{"v":1,"dev":"pad-1","type":"tag.placed","seq":1,"t":null,'
                            b'"body":{"uid":"04a1b2c3d4e5f6"}}')
            ack = (b'{"v":1,"dev":"pad-1","type":"ack","t":1795426642010,'
                   b'"body":{"epoch":"9c1e44a0","upto":121,"now":1795426642010}}')
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                remote = UDP6EndpointAddress(("::ffff:127.0.0.1", 40000 + i % 1000, 0, 0), iface)
                m = Message.decode(req[:2] + struct.pack("!H", i & 0xFFFF) + req[4:], remote)
                table.deduplicate(m)
                resp = Message(code=Code.CHANGED, payload=ack, content_format=50)
                resp.mtype, resp.mid, resp.token, resp.remote = Type.ACK, m.mid, m.token, remote
                table.store(resp)
            gc.collect()  # live memory only (see below)
            used = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            return used, len(table)
        finally:
            await ctx.shutdown()

    # A warm-up fill, and live memory only (gc.collect in fill): without them the first figure
    # depended on what ran before in the process (609 KB alone, 482 KB after test_coap_auth; CI
    # failed with 481 KB) and the second on when the cyclic collector ran (572-676 KB), so the
    # ratio went from 0.94 to 1.31. With them: 616 KB and 676 KB in both cases.
    asyncio.run(fill(1000, 1000))
    used, entries = asyncio.run(fill(1000, 1000))
    per_entry = used / entries
    used3, entries3 = asyncio.run(fill(1000, 3000))
    print(f"bounded table: {per_entry:.0f} bytes/entry; {used} B for 1,000 messages, "
          f"{used3} B for 3,000")
    assert entries == 1000 and per_entry < 1000
    assert entries3 == 1000 and used3 < used * 1.3  # three times the traffic, same memory


def test_evicted_duplicate_is_still_applied_once(broker, tmp_path):
    """With a table of 1 entry, a retransmitted event is past the table: the gateway
    processes it again, and the protocol (dedupe by seq) keeps it to one stored event."""
    g = CoapGateway(tmp_path / "gw", broker.port, dedupe_max=1,
                    allow_unauthenticated=True).start()  # (with keys: tests/gateway/transport/test_coap_auth.py)
    try:
        async def scenario() -> list[bytes]:
            loop = asyncio.get_running_loop()
            stats: dict = __import__("collections").Counter()
            d = _Dev("evict-1", stats, dup_every=0)
            await loop.create_datagram_endpoint(lambda: d, remote_addr=("127.0.0.1", g.coap_port))
            await d.request("birth", {"v": 1, "dev": d.name, "type": "birth", "t": None, "body": {
                "kind": "sample-pad", "fw": "x", "caps": [], "cfg": "0", "session": 1, "boot": 1,
                "reset": None, "epoch": d.epoch, "first": 1, "next": 1}})
            ev = coap_post(4242, b"\x01\x02", ["pe", "1", d.name, "evt"], ["s=1"], json.dumps(
                {"v": 1, "dev": d.name, "type": "x.y", "seq": 1, "t": None, "body": {}}).encode())
            answers = []
            for _ in range(3):
                fut = loop.create_future()
                d.waiting = (4242, fut)
                d.token = b"\x01\x02"  # a separate response (a slow answer) matches too
                d.transport.sendto(ev)
                answers.append(await asyncio.wait_for(fut, 5))
                # another message from someone else pushes our entry out of the table
                await d.request("birth", {"v": 1, "dev": d.name, "type": "birth", "t": None,
                                          "body": {"kind": "sample-pad", "fw": "x", "caps": [],
                                                   "cfg": "0", "session": 1, "boot": 1,
                                                   "reset": None, "epoch": d.epoch,
                                                   "first": 1, "next": 2}})
            return answers
        answers = asyncio.run(scenario())
        acks = [json.loads(a[a.index(b"\xff") + 1:])["body"]["upto"] for a in answers]
        assert acks == [1, 1, 1]
        # an answer is a true ack, not proof that this very copy was applied: the edge answers
        # with the last ack after `ack_wait_s`, or with any ack covering seq 1 that comes in
        # while it waits. So wait for the count (CI once read 1 here), then check it exactly:
        # 3 copies of seq 1 = 1 stored + 2 duplicates (0 if the message layer had answered)
        wait_for(lambda: g.get("/stats")["duplicates"] >= 2, timeout=10,
                 what=f"2 duplicates applied (edge: {g.edge.stats() if g.edge else None})")
        assert g.get("/stats")["duplicates"] == 2
        assert [e["seq"] for e in g.events("evict-1")] == [1]
    finally:
        g.stop()


# -- command line -------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--load", type=int, help="(internal) run the load generator against PORT")
    p.add_argument("--devices", type=int, default=40)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--dup-every", type=int, default=50)
    p.add_argument("--rate", type=float, default=0, help="requests/s in total (0: closed loop)")
    p.add_argument("--stock", action="store_true", help="aiocoap's unbounded table")
    p.add_argument("--dedupe-max", type=int, default=8192)
    p.add_argument("--no-trace", action="store_true", help="RSS only (tracemalloc is slow)")
    a = p.parse_args()
    if a.load:
        print(json.dumps(asyncio.run(_load(a.load, a.devices, a.seconds, a.dup_every, a.rate))))
        return
    from hil.harness import Mosquitto
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mq").start()
        try:
            r = measure(broker.port, Path(tmp) / "gw", a.seconds, a.devices, a.stock,
                        a.dedupe_max, trace=not a.no_trace, sample_s=max(1.0, a.seconds / 20),
                        rate=a.rate)
            print(json.dumps(r, indent=1))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
