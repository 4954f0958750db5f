"""MQTT clients' receive throughput: the gateway's hand-written `mqtt_lite` against gmqtt (and
aiomqtt, when installed), same broker, same messages, in turns (issue 18).

    .venv/bin/python bench/mqtt_clients.py                 # 100,000 messages, 3 rounds
    .venv/bin/python bench/mqtt_clients.py --messages 20000 --rounds 1   # quicker
    .venv/bin/python bench/mqtt_clients.py --quick         # CI smoke: 500 messages, 1 round

What is measured: how fast one client drains a backlog of QoS 1 messages, which is what the
gateway's MQTT edge does at saturation. For each client and round, a persistent session
(clean_session false) subscribed to `pe/1/+/evt` at QoS 1 is created, then `--messages`
150-byte events from 100 device topics are published into it while it is offline (Mosquitto
queues them); then the client under test connects with that session in a process of its own,
and we time CONNECT -> the last message (each message counted, its PUBACK sent by the client as
it does for the gateway: on receipt). The publisher is done before the clock starts, so the
client does not share the cores with the load. Mosquitto paces every client alike
(`max_inflight_messages` 20: the PUBACKs pace the flow).

Prints the machine, the load, one line per run and the median per client (messages/s and the
client's CPU µs per message); exits 1 if a client failed to receive every message.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import BenchBroker, load_line, machine
from gateway.transport.mqtt_lite import MqttLite

TOPIC = "pe/1/+/evt"


def payload(i: int) -> tuple[str, bytes]:
    dev = f"dev-{i % 100}"
    body = json.dumps({"v": 1, "dev": dev, "type": "tag.placed", "seq": i // 100 + 1,
                       "t": 1795426642000 + i, "body": {"uid": "04a1b2c3d4e5f6", "sample":
                                                        "s-123", "rssi": -42, "pad": "x" * 24}},
                      separators=(",", ":")).encode()
    return f"pe/1/{dev}/evt", body


async def fill(port: int, client_id: str, n: int) -> None:
    """Make `client_id`'s persistent session (subscribed, then offline) and queue `n` messages."""
    sub = MqttLite(client_id, clean_session=False, keepalive=0)
    await sub.connect("127.0.0.1", port)
    await sub.subscribe([(TOPIC, 1)])
    sub.disconnect()
    await asyncio.sleep(0.2)
    pub = MqttLite(f"{client_id}-pub", keepalive=0)
    await pub.connect("127.0.0.1", port)
    msgs = [payload(i) for i in range(n)]
    for i in range(0, n, 500):
        await asyncio.gather(*(pub.publish(t, p, qos=1, timeout=60) for t, p in msgs[i:i + 500]))
    pub.disconnect()
    await asyncio.sleep(0.2)


# -- the clients under test (each runs in a child process: `--child NAME`) --------------------

async def recv_mqtt_lite(port: int, client_id: str, n: int) -> float:
    c = MqttLite(client_id, clean_session=False, keepalive=60)
    t0 = time.perf_counter()
    await c.connect("127.0.0.1", port)
    await c.subscribe([(TOPIC, 1)])
    got = 0
    while got < n:
        got += len(await c.next_batch())
    dt = time.perf_counter() - t0
    c.disconnect()
    return dt


async def recv_gmqtt(port: int, client_id: str, n: int) -> float:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    done = asyncio.get_running_loop().create_future()
    got = 0

    def on_message(client, topic, payload, qos, properties):
        nonlocal got
        got += 1
        if got >= n and not done.done():
            done.set_result(None)
        return 0  # PUBACK with success

    c = gmqtt.Client(client_id, clean_session=False)
    c.on_message = on_message
    t0 = time.perf_counter()
    await c.connect("127.0.0.1", port, keepalive=60, version=MQTTv311)
    c.subscribe(TOPIC, qos=1)
    await done
    dt = time.perf_counter() - t0
    await c.disconnect()
    return dt


async def recv_aiomqtt(port: int, client_id: str, n: int) -> float:
    import aiomqtt

    t0 = time.perf_counter()
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False,
                              max_queued_incoming_messages=0) as c:  # unbounded: a bound drops
        await c.subscribe(TOPIC, qos=1)
        got = 0
        async for _ in c.messages:
            got += 1
            if got >= n:
                break
        dt = time.perf_counter() - t0
    return dt


CLIENTS = {"mqtt_lite": recv_mqtt_lite, "gmqtt": recv_gmqtt, "aiomqtt": recv_aiomqtt}


def child(name: str, port: int, client_id: str, n: int) -> None:
    try:  # uvloop is not used by the gateway: every client on the same default loop
        dt = asyncio.run(asyncio.wait_for(CLIENTS[name](port, client_id, n), 120))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        print(json.dumps({"error": repr(exc)}))
        return
    ru = os.times()
    print(json.dumps({"seconds": dt, "cpu_s": ru.user + ru.system}))


def installed(name: str) -> bool:
    if name == "mqtt_lite":
        return True
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: 500 messages, 1 round")
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", default="mqtt_lite,gmqtt,aiomqtt")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--client-id", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.port, a.client_id, a.messages)
        return 0
    if a.quick:
        a.messages, a.rounds = min(a.messages, 500), 1
    names = [c for c in a.clients.split(",") if c in CLIENTS]
    missing = [c for c in names if not installed(c)]
    names = [c for c in names if c not in missing]
    print(f"MQTT clients' receive throughput: {a.messages} QoS 1 messages of ~{len(payload(0)[1])} "
          f"B queued in a persistent session, drained by each client in its own process, "
          f"{a.rounds} rounds in turns; clients {', '.join(names)}"
          + (f" (not installed: {', '.join(missing)})" if missing else ""))
    print(f"machine: {machine()}")
    print(load_line(), flush=True)
    results: dict[str, list[tuple[float, float]]] = {c: [] for c in names}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="pe-bench-mqtt-") as tmp:
        broker = BenchBroker(Path(tmp) / "mosq", persistence=False,
                             extra=["max_queued_messages 0"]).start()
        try:
            for r in range(a.rounds):
                for name in names:
                    cid = f"bench-{name}-{r}"
                    asyncio.run(fill(broker.port, cid, a.messages))
                    p = subprocess.run(
                        [sys.executable, __file__, "--child", name, "--port", str(broker.port),
                         "--client-id", cid, "--messages", str(a.messages)],
                        cwd=ROOT, capture_output=True, text=True, check=False, timeout=200)
                    line = next((ln for ln in reversed(p.stdout.splitlines())
                                 if ln.startswith("{")), None)
                    out = json.loads(line) if line else {"error": p.stderr[-500:]}
                    if "error" in out:
                        print(f"round {r + 1} {name}: FAILED {out['error']}", flush=True)
                        failed += 1
                        continue
                    rate = a.messages / out["seconds"]
                    us = out["cpu_s"] / a.messages * 1e6  # process CPU (import + connect included)
                    results[name].append((rate, us))
                    print(f"round {r + 1} {name:10} {rate:9.0f} msgs/s  "
                          f"({out['seconds']:.2f} s, client CPU {us:.1f} us/msg)", flush=True)
        finally:
            broker.stop()
    print(load_line())
    base = statistics.median(r for r, _ in results.get("mqtt_lite", [])) \
        if results.get("mqtt_lite") else None
    for name, runs in results.items():
        if not runs:
            continue
        rate = statistics.median(r for r, _ in runs)
        us = statistics.median(u for _, u in runs)
        rel = f", {rate / base:.2f} of mqtt_lite" if base else ""
        print(f"median {name:10} {rate:9.0f} msgs/s, {us:.1f} us CPU/msg{rel} ({len(runs)} runs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
