"""The analytics page (gateway/http/web/analytics.html) in headless Chromium on a real gateway
with a pad sending events over MQTT: the figures reach the page through the stream and the
fold, the charts are the gateway's own SVG (no request leaves the gateway: it works offline),
a figure downloads as CSV. Screenshot: var/artifacts/analytics.png."""
from __future__ import annotations

import os
import time

import httpx

from gateway.kinds.fitting_room import gs1
from hil.fakes import FakeDevice
from hil.harness import wait_for
from tests.support.browser import shot

A = "0950600013435" + str(gs1.check_digit("0950600013435"))


def test_the_analytics_page_shows_the_days_figures_offline(browser, gw, broker):
    pad = FakeDevice("pad-an1", broker.port).connect()
    try:
        wait_for(lambda: gw.device("pad-an1"), 10, what="pad registered")
        for _ in range(3):
            pad.emit("tag.placed", {"uid": "04a1b2c3d4e5f6", "tech": "ntag213", "sample": A})
            pad.emit("tag.removed", {"uid": "04a1b2c3d4e5f6", "held_ms": 4000})
        now = int(time.time() * 1000)
        assert httpx.post(f"{gw.url}/fitting/footfall", json={"entries": 12}, timeout=10).status_code == 204
        for i in range(2):
            assert httpx.post(f"{gw.url}/purchases", timeout=10, json={
                "receipt": f"R-page-{i}", "items": [{"gtin": A, "qty": 1}]}).status_code == 201
        wait_for(lambda: gw.get("/analytics/funnel")["totals"]["placements"] == 3, 20,
                 what="the pad's placements folded into the funnel")

        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        outside: list[str] = []
        page.on("request", lambda req: None if req.url.startswith(gw.url) or req.url.startswith(("blob:", "data:"))
                else outside.append(req.url))
        day = time.strftime("%Y-%m-%d", time.localtime(now / 1000))
        page.goto(f"{gw.url}/dashboard/analytics?day={day}#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
        page.locator("body[data-ready='1']").wait_for(timeout=30_000)
        # the hourly chart: 24 hour bars, this hour's with the 12 entries and 2 purchases
        bars = page.locator("#chart-hourly rect.bar.entries")
        assert bars.count() == 24
        assert max(int(bars.nth(i).get_attribute("data-v")) for i in range(24)) == 12
        assert page.locator("#chart-hourly circle.point.purchases[data-v='2']").count() == 1
        steps = {s.get_attribute("data-step"): int(s.get_attribute("data-v"))
                 for s in page.locator("#chart-funnel rect.bar.step").all()}
        assert steps == {"entries": 12, "pad placements": 3, "fitting-room sessions": 0,
                         "purchases": 2}
        row = page.locator(f"#products tr[data-product='{A}']")
        assert row.locator("td").all_inner_texts()[:4] == [A, "3", "0", "2"]
        assert page.locator("#chart-devices rect.bar.available[data-device='pad-an1']").count() == 1
        assert "Purchases per entry" in page.locator("#funnel-rates").inner_text() \
            and "16.7 %" in page.locator("#funnel-rates").inner_text()        # 2 / 12
        with page.expect_download() as dl:
            page.locator("button[data-csv='products']").click()
        text = dl.value.path().read_text()
        assert text.splitlines()[0].startswith("product,placed") and f"{A},3,12000,0,2," in text
        assert outside == []  # nothing from a CDN: the page works without internet
        path = shot(page, "analytics")
        assert path.stat().st_size > 10_000
        page.close()
    finally:
        pad.close()
