"""GET /metrics: the Prometheus exposition, parsed with prometheus_client's own parser."""
import secrets

from prometheus_client.parser import text_string_to_metric_families

from hil.fakes import FakeDevice
from hil.harness import GatewayProcess, free_port, wait_for


def scrape(gw) -> dict[tuple[str, tuple], float]:
    r = gw.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_follow_devices_events_commands_and_webhooks(broker, tmp_path):
    gw = GatewayProcess(tmp_path / "gw", broker.port).start()
    dev = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port)
    try:
        m = scrape(gw)
        assert m[("pe_events_persisted_total", ())] == 0
        assert m[("pe_mqtt_connected", ())] == 1
        assert m[("pe_queue_depth", (("queue", "webhooks"),))] == 0
        # what existed at startup is frozen (`settle_heap`): full collections stay short
        assert m[("pe_gc_frozen_objects", ())] > 10_000
        assert ("pe_gc_pause_seconds_total", (("generation", "2"),)) in m
        assert m[("pe_gc_longest_pause_seconds", ())] >= 0

        dev.connect()
        seqs = [dev.emit("tag.placed", {"uid": f"04{i:02x}"}) for i in range(10)]
        dev.wait_acked(seqs[-1])
        dev.emit("tag.placed", {"uid": "0400"})    # the 11th, not waited for
        r = gw.http.post(f"/devices/{dev.dev}/commands",
                         json={"name": "blink", "args": {"times": 1}, "idempotency_key": "m-1"})
        assert r.status_code == 200 and r.json()["status"] == "done", r.text

        m = wait_for(lambda: (x := scrape(gw))[("pe_events_persisted_total", ())] == 11 and x,
                     20, what="11 events in metrics")
        assert m[("pe_devices_online", (("kind", "sample-pad"),))] == 1
        assert m[("pe_devices_known", (("kind", "sample-pad"),))] == 1
        assert m[("pe_messages_received_total", ())] >= 13     # birth, status, 11 events, reply
        # every received message was observed in the ingest latency histogram
        count = m[("pe_ingest_latency_seconds_count", ())]
        assert count >= 13
        assert m[("pe_ingest_latency_seconds_bucket", (("le", "+Inf"),))] == count
        assert m[("pe_ingest_latency_seconds_sum", ())] > 0
        assert m[("pe_command_outcomes_total", (("status", "done"),))] == 1
        assert m[("pe_command_outcomes_total", (("status", "expired"),))] == 0
        assert m[("pe_command_round_trip_seconds_count", (("status", "done"),))] == 1
        assert m[("pe_commands", (("status", "done"),))] == 1
        assert m[("pe_queue_depth", (("queue", "commands_pending"),))] == 0
        assert ("pe_queue_depth", (("queue", "ingest"),)) in m

        # a webhook whose receiver is down: its backlog shows as a queue depth
        port = free_port()
        sub = gw.http.post("/webhooks", json={"url": f"http://127.0.0.1:{port}/",
                                              "events": ["event.*"]}).json()
        for i in range(3):
            dev.emit("door.opened", {"n": i})
        m = wait_for(lambda: (x := scrape(gw))[("pe_queue_depth", (("queue", "webhooks"),))] == 3
                     and x, 20, what="webhook backlog of 3")
        wait_for(lambda: scrape(gw).get(("pe_webhook_attempt_seconds_count",
                                         (("result", "failed"),)), 0) >= 1, 20,
                 what="failed webhook attempts counted")
        gw.http.delete(f"/webhooks/{sub['id']}")
        assert scrape(gw)[("pe_queue_depth", (("queue", "webhooks"),))] == 0

        dev.crash()                                  # the broker fires the will
        wait_for(lambda: scrape(gw)[("pe_devices_online", (("kind", "sample-pad"),))] == 0, 30,
                 what="device offline in metrics")
    finally:
        dev.close()
        gw.stop()
