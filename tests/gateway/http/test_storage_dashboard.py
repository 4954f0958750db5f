"""The bounded queues and the disk alert on a real gateway (issue 17, docs/operations.md "Queues,
disk and reads"): a webhook receiver that stays down fills its queue to the cap, the oldest
deliveries go and are counted in `/storage`, `/metrics` and an alert; a disk threshold set above
the free space raises `disk.low`; the staff dashboard shows both (headless Chromium, screenshot
var/artifacts/dashboard-storage.png)."""
from __future__ import annotations

import os
import secrets

from prometheus_client.parser import text_string_to_metric_families

from hil.fakes import FakeDevice
from hil.harness import GatewayProcess, free_port, wait_for
from tests.support.browser import shot


def _metrics(gw) -> dict[tuple[str, tuple], float]:
    r = gw.http.get("/metrics")
    assert r.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def test_a_full_webhook_queue_and_a_low_disk_show_in_storage_metrics_alerts_and_dashboard(
        broker, tmp_path, browser):
    cfg = tmp_path / "gw.toml"
    # every disk is "low" below 100 % free: the threshold is injected, the disk is real
    cfg.write_text("[database]\ndisk_alert_free_percent = 100\ncapacity_check_s = 0.2\n"
                   "[webhooks]\nmax_pending = 3\nbackoff_min_s = 0.05\nbackoff_max_s = 0.2\n")
    gw = GatewayProcess(tmp_path / "gw", broker.port, extra_args=["--config", str(cfg)]).start()
    dev = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port)
    page = None
    try:
        down = f"http://127.0.0.1:{free_port()}/"           # nobody listens: the receiver is down
        sub = gw.http.post("/webhooks", json={"url": down, "events": ["event.*"]}).json()
        dev.connect()
        seqs = [dev.emit("tag.placed", {"uid": f"04{i:02x}"}) for i in range(7)]
        dev.wait_acked(seqs[-1])                             # nothing refused: devices acked

        st = wait_for(lambda: (s := gw.get("/storage"))["webhooks"]["subscriptions"][0]
                      ["dropped"] == 4 and s, 20, what="4 deliveries dropped at the cap of 3")
        assert st["webhooks"] == {"max_pending": 3, "subscriptions": [
            {"id": sub["id"], "pending": 3, "dropped": 4, "full": True}]}
        assert st["disk"]["low"] and st["disk"]["free_bytes"] < st["disk"]["alert_below_bytes"]
        assert st["disk"]["db_bytes"] > 0 and "url" not in str(st["webhooks"])
        assert st["chain_outbox"]["enabled"] is False
        # the three kept are the newest
        kept = gw.get(f"/webhooks/{sub['id']}/deliveries", status="pending")["deliveries"]
        assert [d["data"]["seq"] for d in kept] == seqs[-3:]
        assert gw.get(f"/webhooks/{sub['id']}")["dropped"] == 4

        m = _metrics(gw)
        assert m[("pe_webhook_dropped_total", (("subscription", sub["id"]),))] == 4
        assert m[("pe_webhook_pending", (("subscription", sub["id"]),))] == 3
        assert m[("pe_webhook_max_pending", ())] == 3
        assert m[("pe_queue_depth", (("queue", "webhooks"),))] == 3
        assert 0 < m[("pe_disk_free_bytes", ())] < m[("pe_disk_alert_below_bytes", ())]
        assert m[("pe_disk_total_bytes", ())] == m[("pe_disk_alert_below_bytes", ())]

        alerts = wait_for(lambda: (a := {x["type"]: x for x in gw.get("/alerts")})
                          .keys() >= {"disk.low", "webhook.dropping"} and a, 20,
                          what="disk.low and webhook.dropping alerts")
        assert alerts["disk.low"]["severity"] == "critical"
        assert "devices are no longer acknowledged" in alerts["disk.low"]["text"]
        assert sub["id"] in alerts["webhook.dropping"]["text"]

        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"{gw.url}/dashboard#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
        page.locator("#live.on").wait_for(timeout=20_000)
        row = page.locator(f'#storage tr[data-queue="{sub["id"]}"][data-full="true"]')
        row.wait_for(timeout=20_000)
        assert "3 / 3" in row.inner_text() and "full: oldest dropped" in row.inner_text()
        assert page.locator('#disk[data-low="true"]').count() == 1
        page.locator(".alert.critical.open", has_text="disk nearly full").wait_for(timeout=20_000)
        page.locator(".alert.warning.open", has_text=sub["id"]).wait_for(timeout=20_000)
        assert shot(page, "dashboard-storage").stat().st_size > 10_000
    finally:
        if page is not None:
            page.close()
        dev.close()
        gw.stop()
