"""The sample kiosk and the "out of service, kindly" screens in headless Chromium: pages served
by a real gateway, the real sample-pad and fitting-room firmware on the virtual rig, a stock
API the test can break (docs/protocol.md "Sample kiosk", docs/dashboard.md "Customer
screens"). Screenshots go to var/artifacts/."""
from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from gateway.http import auth
from gateway.storage.store import connect
from hil.harness import GatewayProcess, wait_for
from tests.support.browser import shot
from tests.support.stock_server import StockServer

pytestmark = pytest.mark.rig_kinds("sample-pad", "fitting-room")

DEMO = Path(__file__).resolve().parents[4] / "gateway" / "demo"
OAK_NATURAL, OAK_SMOKED, OAK_WHITE = "09506000200019", "09506000200026", "09506000200033"
TEXTS = {"fr": {"kiosk_title": "Nos échantillons"},
         "points": {"pad-1": {"en": "the one by the window works",
                              "fr": "celui près de la fenêtre fonctionne"}}}


@pytest.fixture
def stock():
    s = StockServer(DEMO / "stock.json")
    yield s
    s.close()


@pytest.fixture
def gw(tmp_path, rig_broker, stock):
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS, ensure_ascii=False))
    (tmp_path / "gw.toml").write_text('[screens]\nlanguage = "en"\ntexts_file = "texts.json"\n')
    g = GatewayProcess(tmp_path / "gw", rig_broker[1], samples=DEMO / "samples.json",
                       extra_args=["--stock-url", stock.url, "--config", str(tmp_path / "gw.toml")]
                       ).start()
    yield g
    g.stop()


def online(gw, dev, rig):
    rig.start(dev)
    wait_for(lambda: any(d["id"] == dev and d["online"] for d in gw.get("/devices")), 20,
             what=f"{dev} online at the gateway")


def kiosk_token(gw) -> str:
    """A token of the kiosk role (read, requests): what a kiosk in the store holds."""
    with connect(gw.db) as conn:
        return auth.create_token(conn, "kiosk-1", auth.resolve_scopes("kiosk"))


def points(gw) -> dict[str, dict]:
    return {p["device"]: p for p in gw.get("/customer-points")}


def test_kiosk_shows_the_sample_on_the_pad_and_goes_back_to_idle(browser, rig, gw):
    pad = rig.device_of_kind("sample-pad")
    online(gw, pad.dev, rig)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    try:
        page.goto(f"{gw.url}/kiosk/{pad.dev}#token={kiosk_token(gw)}")
        page.locator('[data-testid="idle"]:visible').wait_for(timeout=20_000)
        assert "Put a sample on the pad" in page.locator('[data-testid="idle"]').inner_text()

        pad.place_tag("S-1001")  # the real firmware reads the tag: tag.placed, with its content
        sample = page.locator('[data-testid="sample"][data-sample="S-1001"]:visible')
        sample.wait_for(timeout=20_000)
        assert page.locator('[data-testid="sample-title"]').inner_text() == "Oak plank, natural oil"
        assert "Engineered oak" in sample.inner_text()
        assert page.locator('[data-testid="idle"]').is_hidden()
        price = page.locator('[data-testid="price"]')
        price.wait_for(timeout=20_000)  # price and stock: GET /pads/{pad}, from the stock API
        assert price.inner_text() == "Price: 54.90 EUR · 14 mm"
        rows = {r.get_attribute("data-gtin"): r.locator("td").all_inner_texts()
                for r in page.locator('[data-testid="colour"]').all()}
        ask = "Not here? Ask for it"  # none on the floor: the endless aisle's step (docs/endless-aisle.md)
        assert rows == {OAK_NATURAL: ["natural oil · 14 mm", "38", "store-b: 120", ask],
                        OAK_SMOKED: ["smoked · 14 mm", "0", "store-b: 25, store-c: 60", ask],
                        OAK_WHITE: ["white oil · 14 mm", "12", "none", ask]}
        # the demo picture is on a host the store cannot reach (offline): no broken image
        assert page.locator('[data-testid="picture"]').count() == 0
        assert page.locator('[data-testid="out-of-service"]').is_hidden()
        assert shot(page, "kiosk-sample").stat().st_size > 10_000

        pad.remove_tag()  # lifted: back to the idle view
        page.locator('[data-testid="idle"]:visible').wait_for(timeout=20_000)
        assert page.locator('[data-testid="sample"]').is_hidden()
        shot(page, "kiosk-idle")

        pad.place_tag("blank")  # a tag the catalog does not know: said kindly, nothing invented
        page.locator('[data-testid="sample"][data-uid="04102030405099"]:visible').wait_for(timeout=20_000)
        assert "an associate will be happy to help" in page.locator('[data-testid="sample-title"]').inner_text()
        view = httpx.get(f"{gw.url}/pads/{pad.dev}", headers=auth.bearer_headers(), timeout=10).json()
        assert view["content"] is None and view["missing"] == ["content", "price", "colours", "stock"]
    finally:
        page.close()


def test_out_of_service_kindly_device_gateway_and_stock(browser, rig, gw, stock):
    pad, room = rig.device_of_kind("sample-pad"), rig.device_of_kind("fitting-room")
    online(gw, pad.dev, rig)
    online(gw, room.dev, rig)
    token = kiosk_token(gw)
    kiosk = browser.new_page(viewport={"width": 1000, "height": 700})
    mirror = browser.new_page(viewport={"width": 900, "height": 800})
    staff = browser.new_page(viewport={"width": 1300, "height": 1000})
    oos = {p: p.locator('[data-testid="out-of-service"]') for p in (kiosk, mirror)}

    def says(page, reason: str) -> str:
        page.locator(f'[data-testid="out-of-service"][data-reason="{reason}"]:visible').wait_for(timeout=30_000)
        return oos[page].inner_text()

    def fine(page) -> None:
        oos[page].wait_for(state="hidden", timeout=30_000)
        assert oos[page].get_attribute("data-reason") == ""

    def dashboard_row(dev: str, state: str):
        row = staff.locator(f'[data-testid="point"][data-device="{dev}"][data-state="{state}"]')
        row.wait_for(timeout=30_000)
        return row.inner_text()

    try:
        kiosk.goto(f"{gw.url}/kiosk/{pad.dev}?lang=fr#token={token}")
        mirror.goto(f"{gw.url}/mirror/{room.dev}#token={token}")
        staff.goto(f"{gw.url}/dashboard#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
        assert kiosk.locator("h1").inner_text() == "Nos échantillons"  # the store's own words
        kiosk.locator('[data-testid="idle"]:visible').wait_for(timeout=20_000)
        assert oos[kiosk].is_hidden() and oos[mirror].is_hidden()
        assert {p["state"] for p in points(gw).values()} == {"ok"}
        dashboard_row(pad.dev, "ok")

        # 1. the stock API breaks: the content still shows, price and stock are said to be away
        stock.broken = True
        pad.place_tag("S-1001")
        kiosk.locator('[data-testid="sample"][data-sample="S-1001"]:visible').wait_for(timeout=20_000)
        assert says(kiosk, "stock") == ("Les prix et le stock ne peuvent pas être consultés pour le "
                                        "moment — celui près de la fenêtre fonctionne")
        assert kiosk.locator('[data-testid="price"]').count() == 0
        room.set_input("occupancy", 1)
        room.add_tag("shirt-m")
        assert says(mirror, "stock") == ("Prices and stock cannot be checked just now — an associate "
                                         "will be happy to help")
        p = points(gw)
        assert p[pad.dev]["state"] == p[room.dev]["state"] == "degraded"
        assert [w["what"] for w in p[pad.dev]["why"]] == ["stock"] and p[pad.dev]["since"] > 0
        assert "stock API does not answer" in dashboard_row(pad.dev, "degraded")
        shot(kiosk, "kiosk-oos-stock")
        shot(mirror, "mirror-oos-stock")
        shot(staff, "dashboard-customer-screens")
        stock.broken = False  # the pages look again by themselves: the kind word goes away
        kiosk.locator('[data-testid="price"]').wait_for(timeout=30_000)
        fine(kiosk)
        fine(mirror)
        wait_for(lambda: points(gw)[pad.dev]["state"] == "ok", 20, what="pad-1 ok again")

        # 2. the pad dies (power cut): its kiosk says so, and where to go instead
        rig.power_cut(pad.dev)
        assert says(kiosk, "device") == ("Ce présentoir se repose un instant — celui près de la "
                                         "fenêtre fonctionne")
        p = wait_for(lambda: (q := points(gw))[pad.dev]["state"] == "degraded" and q, 20,
                     what="pad-1 degraded")
        assert p[pad.dev]["why"][0]["what"] == "device" and "offline" in p[pad.dev]["why"][0]["why"]
        assert p[room.dev]["state"] == "ok"
        assert "is offline" in dashboard_row(pad.dev, "degraded")
        assert oos[mirror].is_hidden()  # the mirror's device works: nothing to say there
        shot(kiosk, "kiosk-oos-device")
        rig.power_on(pad.dev)
        online(gw, pad.dev, rig)
        fine(kiosk)

        # 3. the gateway goes away: each page notices by itself (stream error, /health probe)
        gw.stop()
        assert says(kiosk, "gateway") == ("Nous reconnectons cet écran — celui près de la fenêtre "
                                          "fonctionne")
        assert says(mirror, "gateway").startswith("We are reconnecting this screen")
        shot(kiosk, "kiosk-oos-gateway")
        gw.start()
        fine(kiosk)  # back: the page catches up by itself
        fine(mirror)
        pad.remove_tag()
        kiosk.locator('[data-testid="idle"]:visible').wait_for(timeout=20_000)
        pad.place_tag("S-1002")  # and is live again on a new stream
        kiosk.locator('[data-testid="sample"][data-sample="S-1002"]:visible').wait_for(timeout=20_000)
    finally:
        for page in (kiosk, mirror, staff):
            page.close()
