"""The mirror page in headless Chromium: served by the gateway, live over SSE, with the real
fitting-room firmware on the virtual rig behind it (docs/fitting-rooms.md, "Mirror")."""
from __future__ import annotations

import os

import httpx
import pytest

from tests.support.browser import shot
from tests.support.fitting import SHIRT_L, SHIRT_M, requests, wait_gtins

pytestmark = pytest.mark.rig_kinds("fitting-room")


@pytest.fixture
def gw(fitting_gw):  # the conftest's `gw` has no stock and another broker
    return fitting_gw


def test_mirror_shows_garments_live_and_sends_requests(browser, rig, gw, room):
    room.set_input("occupancy", 1)
    room.add_tag("shirt-m")
    wait_gtins(gw, room.dev, [SHIRT_M])
    page = browser.new_page(viewport={"width": 900, "height": 1000})
    try:
        # the page's API calls carry the token given in the fragment (gateway/http/web/auth.js)
        page.goto(f"{gw.url}/mirror/{room.dev}#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
        garment = page.locator(f'[data-testid="garment"][data-gtin="{SHIRT_M}"]')
        garment.wait_for(timeout=20_000)
        assert "Oxford shirt" in garment.inner_text()
        assert "blue · size M · 49.90 EUR" in garment.locator('[data-testid="details"]').inner_text()
        row_l = garment.locator(f'[data-testid="variant"][data-gtin="{SHIRT_L}"]')
        assert row_l.locator("td").all_inner_texts()[:4] == ["L", "blue", "0", "3"]

        # live: a second garment appears without a reload
        room.add_tag("chino")
        page.locator('[data-testid="garment"][data-gtin="09506000134383"]').wait_for(timeout=20_000)

        # "another size" from the mirror: a staff request, its progress shown
        row_l.locator('[data-testid="ask-size"]').click()
        req = page.locator('[data-testid="request"][data-kind="size"]')
        req.wait_for(timeout=20_000)
        assert "sent to staff" in req.inner_text()
        size = next(q for q in requests(gw, room.dev, "size"))
        assert size["gtin"] == SHIRT_L and size["where"] == "stockroom"
        httpx.post(f"{gw.url}/fitting/requests/{size['id']}", json={"state": "on_the_way"}, timeout=10)
        page.locator('[data-testid="request"][data-kind="size"][data-state="on_the_way"]').wait_for(timeout=20_000)
        assert "on the way" in page.locator('[data-testid="request"][data-kind="size"]').inner_text()

        # "call an associate" from the mirror: a staff notification with the room's garments
        page.locator('[data-testid="call"]').click()
        page.locator('[data-testid="request"][data-kind="call"][data-state="open"]').wait_for(timeout=20_000)
        call = next(q for q in requests(gw, room.dev, "call"))
        assert call["source"] == "mirror" and {g["gtin"] for g in call["garments"]} == {SHIRT_M, "09506000134383"}
        httpx.post(f"{gw.url}/fitting/requests/{call['id']}", json={"state": "acknowledged"}, timeout=10)
        page.locator('[data-testid="request"][data-kind="call"][data-state="acknowledged"]').wait_for(timeout=20_000)
        path = shot(page, "mirror")
        assert path.stat().st_size > 10_000
    finally:
        page.close()
