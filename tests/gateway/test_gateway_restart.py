"""Lifetime, crash, stop and outage: the gateway in-process, SIGKILLed, signalled, and
losing its broker."""
import asyncio
import json
import secrets
import signal
import threading
import time

import httpx
import pytest

from gateway.app import Gateway, GatewayConfig
from hil.fakes import FakeDevice, MqttProbe, SseReader
from hil.harness import GatewayProcess, wait_for


def test_in_process_lifetime_with_open_stream(broker, tmp_path):
    config = GatewayConfig(broker_port=broker.port, db_path=tmp_path / "gw.db", http_port=0,
                           client_id=f"gw-{secrets.token_hex(3)}")
    started = threading.Event()
    box = {}

    def runner():
        async def main():
            async with Gateway(config) as gw:
                box["gw"], box["loop"] = gw, asyncio.get_running_loop()
                run = asyncio.create_task(gw.run())
                assert await gw.wait_connected(5)
                while gw.http_port is None:
                    await asyncio.sleep(0.01)
                started.set()
                await run
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertions below
            box["error"] = exc
            started.set()

    t = threading.Thread(target=runner, daemon=True)
    t.start()
    assert started.wait(10) and "error" not in box, box.get("error")
    gw, loop = box["gw"], box["loop"]
    url = f"http://127.0.0.1:{gw.http_port}"
    d = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port)
    try:
        with SseReader(url) as sse:
            d.connect()
            d.emit("count", {"n": 1})
            d.wait_acked(1)
            wait_for(lambda: sse.of("event", device=d.dev), 5, what="event on stream")
            assert httpx.get(f"{url}/health").json()["status"] == "ok"
            t0 = time.monotonic()
            loop.call_soon_threadsafe(gw.stop)
            t.join(10)
            assert not t.is_alive() and "error" not in box, box.get("error")
            assert time.monotonic() - t0 < 5          # the open SSE stream did not hold it up
            assert sse.done.wait(5)
    finally:
        d.close()


def test_sigkill_mid_stream_loses_and_duplicates_nothing_and_pending_command_completes(
        broker, tmp_path):
    gw = GatewayProcess(tmp_path / "gw", broker.port).start()
    d = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port, resend_after=1.0)
    try:
        d.connect()
        wait_for(lambda: gw.http.get(f"/devices/{d.dev}").status_code == 200, 5, what="birth")
        # a command whose delivery the device loses: it must survive the crash and complete
        d.ignore_commands = True
        r = gw.http.post(f"/devices/{d.dev}/commands",
                         json={"name": "blink", "idempotency_key": "crash-1", "timeout_s": 30,
                               "wait": False})
        assert r.status_code == 202 and r.json()["status"] == "sent"
        cid = r.json()["id"]

        total = 150
        emitted = threading.Event()

        def produce():
            for n in range(total):
                d.emit("count", {"n": n})
                time.sleep(0.004)
            emitted.set()

        producer = threading.Thread(target=produce)
        producer.start()
        wait_for(lambda: d.next_seq > 50, 5, what="50 events emitted")
        gw.kill()                                   # mid-stream, nothing flushed
        killed_at = d.next_seq - 1
        time.sleep(0.3)
        gw.start()                                  # same database, same MQTT session
        d.ignore_commands = False
        producer.join()
        assert emitted.is_set() and killed_at < total
        d.wait_acked(total, timeout=20)
        seqs = [e["seq"] for e in gw.events(d.dev)]
        assert len(seqs) == total, f"{len(seqs)} stored, {total} emitted"
        assert sorted(seqs) == list(range(1, total + 1))
        assert not d.journal
        wait_for(lambda: gw.get(f"/commands/{cid}")["status"] == "done", 6,
                 what="pending command done after restart")
        assert d.actuations[cid] == 1
        assert gw.get(f"/devices/{d.dev}")["online"] is True
    finally:
        d.close()
        gw.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly_and_says_offline(broker, tmp_path, sig):
    gw = GatewayProcess(tmp_path / "gw", broker.port).start()
    probe = MqttProbe(broker.port, ("pe/1/gateway/state",))
    try:
        wait_for(lambda: probe.json_on("pe/1/gateway/state"), 5, what="retained state")
        gw.proc.send_signal(sig)
        assert gw.proc.wait(10) == 0
        assert "gateway stopped" in gw.log_text()
        wait_for(lambda: probe.json_on("pe/1/gateway/state")[-1]["type"] == "offline", 5,
                 what="offline state")
        late = MqttProbe(broker.port, ("pe/1/gateway/state",))  # retained for newcomers
        try:
            wait_for(lambda: late.messages, 5, what="retained offline")
            _topic, payload, retained = late.messages[0]
            assert retained and json.loads(payload)["type"] == "offline"
        finally:
            late.close()
    finally:
        probe.close()
        gw.stop()


def test_broker_outage_publish_failure_detected_then_recovers(own_broker, tmp_path):
    gw = GatewayProcess(tmp_path / "gw", own_broker.port,
                        extra_args=["--publish-timeout", "1"]).start()
    d = FakeDevice(f"pad-{secrets.token_hex(3)}", own_broker.port, resend_after=1.0)
    try:
        d.connect()
        wait_for(lambda: gw.http.get(f"/devices/{d.dev}").status_code == 200, 5, what="birth")
        d.emit("count", {"n": 0})
        d.wait_acked(1)

        # 1. a hung broker: the command publish gets no PUBACK, so it is not "sent"
        own_broker.pause()
        try:
            r = gw.http.post(f"/devices/{d.dev}/commands",
                             json={"name": "blink", "idempotency_key": "hung", "timeout_s": 30,
                                   "wait": False})
            assert r.status_code == 202 and r.json()["status"] == "queued", r.json()
            wait_for(lambda: gw.get("/stats")["mqtt"]["publish_failures"] >= 1, 5,
                     what="publish failure detected")
            assert gw.get(f"/commands/{r.json()['id']}")["status"] == "queued"
        finally:
            own_broker.resume()
        hung = r.json()["id"]
        wait_for(lambda: gw.get(f"/commands/{hung}")["status"] == "done", 6, what="hung cmd done")
        assert d.actuations[hung] == 1  # delivered late and resent: applied once

        # 2. the broker goes away: the gateway reconnects, nothing journaled is lost
        own_broker.stop()
        wait_for(lambda: gw.get("/health")["mqtt"] == "disconnected", 10, what="gateway notices")
        assert gw.get("/health")["status"] == "degraded"
        wait_online(gw, d.dev, False)  # Mosquitto sent the device's will as it shut down
        r = gw.http.post(f"/devices/{d.dev}/commands",
                         json={"name": "blink", "idempotency_key": "outage", "timeout_s": 30,
                               "wait": False})
        assert r.status_code == 202 and r.json()["status"] == "queued", r.json()
        for n in range(1, 5):
            d.emit("count", {"n": n})               # journaled while nobody can take them
        own_broker.start()
        wait_for(lambda: gw.get("/health")["mqtt"] == "connected", 15, what="gateway reconnects")
        d.wait_acked(5, timeout=15)
        cid = r.json()["id"]
        wait_for(lambda: gw.get(f"/commands/{cid}")["status"] == "done", 10, what="command done")
        assert d.actuations[cid] == 1
        assert sorted(e["seq"] for e in gw.events(d.dev)) == [1, 2, 3, 4, 5]
        assert gw.get("/stats")["mqtt"]["connects"] >= 2
    finally:
        d.close()
        gw.stop()


def wait_online(gw, dev, online):
    wait_for(lambda: gw.get(f"/devices/{dev}")["online"] is online, 10,
             what=f"{dev} online={online}")
