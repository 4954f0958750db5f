"""The staff dashboard in headless Chromium, with the real locker firmware on the rig behind it:
an alarm appears live, staff acknowledge it, clear the compartment and open another one for
service by clicking (docs/dashboard.md). Screenshot: var/artifacts/dashboard.png."""
from __future__ import annotations

import os

import pytest

from hil.harness import wait_for
from tests.support.browser import shot
from tests.support.lockers import Bank

pytestmark = pytest.mark.rig_kinds("locker-bank")


def test_staff_acknowledge_an_alarm_clear_the_door_and_open_one_for_service(browser, bank: Bank):
    n, _code = bank.load("ord-dash", "S")
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    try:
        # the page's API calls carry the token given in the fragment (gateway/http/web/auth.js)
        page.goto(f"{bank.gw.url}/dashboard#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
        page.locator("#live.on").wait_for(timeout=20_000)
        cell = page.locator(f'button.cell[data-bank="{bank.id}"][data-compartment="{n}"]')
        cell.wait_for(timeout=20_000)
        assert cell.get_attribute("data-state") == "loaded"
        row = page.locator(f'[data-device="{bank.id}"]')
        assert "online" in row.inner_text()
        # the tube panel draws the configured line (boards/tube/store-demo.json), all free
        segs = page.locator('#tube [data-resource^="seg:"]')
        segs.first.wait_for(timeout=20_000)
        assert segs.count() == 5 and all("free" in t for t in segs.all_inner_texts())

        # live: a door pried open shows up as a critical alert and a blocked compartment
        bank.lk.open_door(f"door_{n}")
        alarm = page.locator(".alert.critical.open")
        alarm.wait_for(timeout=20_000)
        assert f"door {n} was forced open" in alarm.inner_text()
        page.locator(f'button.cell[data-compartment="{n}"][data-state="blocked"]').wait_for(timeout=20_000)

        page.fill("#who", "anna")
        alarm.locator("button", has_text="Acknowledge").click()
        page.locator(".alert.critical.acked", has_text="acknowledged by anna").wait_for(timeout=20_000)
        acked = [a for a in bank.gw.get("/alerts") if a["type"] == "door.forced"]
        assert [(a["state"], a["acked_by"]) for a in acked] == [("acked", "anna")]

        # clear needs the door shut: the page says why it was refused, then it works
        cell.click()
        page.locator(f'[data-actions="{bank.id}"] button', has_text="Clear").click()
        page.locator("#locker-status", has_text="not done").wait_for(timeout=20_000)
        assert "door" in page.locator("#locker-status").inner_text().lower()
        closed = len([e for e in bank.events("door.closed") if e["body"]["compartment"] == n])
        bank.lk.close_door(f"door_{n}")
        # the clear is refused again if it reaches the bank before the bank saw the door shut
        # (a CI flake at load: the page said "not done" and the test waited for a clear)
        wait_for(lambda: len([e for e in bank.events("door.closed")
                              if e["body"]["compartment"] == n]) > closed, 20,
                 what=f"door {n} closed, as the gateway knows it")
        page.locator(f'button.cell[data-compartment="{n}"]').click()
        page.locator(f'[data-actions="{bank.id}"] button', has_text="Clear").click()
        page.locator(f'button.cell[data-compartment="{n}"]:not([data-state="blocked"])').wait_for(timeout=20_000)
        assert bank.compartment(n)["state"] != "blocked"
        wait_for(lambda: not [a for a in bank.gw.get("/alerts") if a["type"] == "door.forced"], 20,
                 what="the forced-door alert resolved by the clear")

        # open another compartment for service: the lock is pulsed on the rig
        other = next(c["id"] for c in bank.view()["compartments"] if c["id"] != n)
        t0 = bank.rig.trace.now()
        page.locator(f'button.cell[data-compartment="{other}"]').click()
        page.locator(f'[data-actions="{bank.id}"] button', has_text="Open for service").click()
        page.locator("#locker-status", has_text=f"Door {other} is open").wait_for(timeout=30_000)
        assert bank.pulses(other, t0) >= 1
        bank.lk.close_door(f"door_{other}")
        path = shot(page, "dashboard")
        assert path.stat().st_size > 10_000
    finally:
        page.close()
