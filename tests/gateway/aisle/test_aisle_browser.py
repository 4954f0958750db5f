"""The endless aisle's step in headless Chromium (gateway/http/web/aisle.js): on the sample kiosk,
"not here? ask for it" on a colour that is not on the floor, from the stockroom by tube, from
another store into a locker here with the code sent by SMS, the page never shown a code; on the
mirror, a size only other stores have, ordered into a locker. Screenshots in var/artifacts/."""
from __future__ import annotations

import re

from tests.support.aisle import (
    BANK,
    OAK_NATURAL,
    OAK_SMOKED,
    OXFORD_BLUE_M,
    OXFORD_WHITE_M,
    PAD,
    ROOM,
    ThreadedStore,
    until,
)
from tests.support.browser import shot

PHONE = "+33612345678"


def test_kiosk_asks_for_it_by_tube_and_by_locker_with_the_code_only_in_the_sms(browser, tmp_path, broker):
    with ThreadedStore(tmp_path, broker.port) as ts:
        s = ts.store
        ts.call(lambda: s.device_event(PAD, "tag.placed", uid="04de3000000001", sample="S-1001"))
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        try:
            page.goto(f"{ts.url}/kiosk/{PAD}#token={s.tokens['kiosk']}")
            natural = page.locator(f'[data-testid="ask"][data-gtin="{OAK_NATURAL}"]')
            natural.wait_for(timeout=20_000)
            assert natural.inner_text() == "Not here? Ask for it"
            # a colour in the stockroom: the tube brings it to the station near this kiosk
            natural.click()
            status = page.locator('[data-testid="aisle-status"][data-route="tube"]')
            status.wait_for(timeout=20_000)
            assert status.inner_text() == "It is in our stockroom: on its way by tube to floor-womens"
            assert page.locator('[data-testid="aisle-form"]').is_hidden()
            jobs = ts.call(lambda: _aisle_jobs(s))
            assert [(j["from"], j["to"]) for j in jobs] == [("stockroom", "floor-womens")]
            shot(page, "kiosk-aisle-tube")
            page.locator('[data-testid="aisle-close"]').click()
            assert page.locator('[data-testid="aisle"]').is_hidden()

            # a colour only other stores have: a number for the code, then an order and a locker
            page.locator(f'[data-testid="ask"][data-gtin="{OAK_SMOKED}"]').click()
            form = page.locator('[data-testid="aisle-form"]')
            form.wait_for(timeout=20_000)
            page.locator('[data-testid="aisle-phone"]').fill("06 12")
            page.locator('[data-testid="aisle-send"]').click()
            page.locator('[data-testid="aisle-status"]', has_text="+ then 8 to 15 digits").wait_for(timeout=20_000)
            page.locator('[data-testid="aisle-phone"]').fill("+33 6 12 34 56 78")
            page.locator('[data-testid="aisle-send"]').click()
            status = page.locator('[data-testid="aisle-status"][data-route="order"]')
            status.wait_for(timeout=20_000)
            assert status.inner_text() == (f"Ordered for you: a locker is reserved in this store ({BANK}). "
                                           "The pickup code will be sent to +33•••••••78")
            shot(page, "kiosk-aisle-order")
            orders = ts.call(lambda: _orders(s))
            assert [o["state"] for o in orders] == ["assigned"]

            # the parcel arrives and is loaded: the SMS carries the code; the page never does
            ts.call(lambda: s.load(orders[0]["compartment"]))
            sent = ts.call(lambda: until(lambda: list(s.gw.aisle.sender.inbox), "the SMS"))
            code = re.search(r"code (\d{6})", sent[0]["text"]).group(1)
            assert sent[0]["to"] == PHONE and len(sent) == 1
            sent_status = page.locator('[data-testid="aisle-status"][data-message="delivered"]')
            sent_status.wait_for(timeout=20_000)  # the kiosk heard it on its live stream
            assert sent_status.inner_text() == ("Your parcel is in its locker: the pickup code has been "
                                                "sent to +33•••••••78")
            shot(page, "kiosk-aisle-sent")
            assert code not in page.content() and PHONE not in page.content()
        finally:
            page.close()


def test_mirror_orders_a_size_only_other_stores_have_into_a_locker(browser, tmp_path, broker):
    with ThreadedStore(tmp_path, broker.port) as ts:
        s = ts.store
        ts.call(lambda: s.device_event(ROOM, "room.occupied"))
        ts.call(lambda: s.device_event(ROOM, "garment.in", uid="04a1b2c3d4e5f6", gtin=OXFORD_BLUE_M,
                                       serial="1001"))
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        try:
            page.goto(f"{ts.url}/mirror/{ROOM}?lang=fr#token={s.tokens['kiosk']}")
            rows = page.locator('[data-testid="variant"]')
            rows.first.wait_for(timeout=20_000)
            # the button only on the size no store room here has (white M: other stores)
            asks = page.locator('[data-testid="ask"]')
            assert [a.get_attribute("data-gtin") for a in asks.all()] == [OXFORD_WHITE_M]
            assert asks.first.inner_text() == "Pas ici ? Demandez-le"
            asks.first.click()
            page.locator('[data-testid="aisle-form"]').wait_for(timeout=20_000)
            page.locator('[data-testid="aisle-phone"]').fill("ann@example.org")
            page.locator('[data-testid="aisle-send"]').click()
            status = page.locator('[data-testid="aisle-status"]:not(:empty)')
            status.wait_for(timeout=20_000)
            assert status.get_attribute("data-route") == "order", status.inner_text()
            assert status.inner_text() == ("Commandé pour vous : un casier vous attend dans ce magasin "
                                           f"({BANK}). Le code de retrait sera envoyé à a•••@example.org")
            shot(page, "mirror-aisle-order")
            req = ts.call(lambda: _requests(s))
            assert [(r["origin"], r["gtin"], r["route"], r["lang"]) for r in req] == \
                [(ROOM, OXFORD_WHITE_M, "order", "fr")]
        finally:
            page.close()


async def _requests(s) -> list[dict]:
    return await s.gw.db.read(lambda st: [dict(r) for r in st.conn.execute("SELECT * FROM aisle_requests")])


async def _aisle_jobs(s) -> list[dict]:
    return [j for j in s.gw.tube.jobs() if j["job"].startswith("aisle:")]


async def _orders(s) -> list[dict]:
    return s.gw.lockers.view(BANK)["orders"]
