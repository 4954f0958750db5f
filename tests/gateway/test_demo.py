"""The README's first command: `phygital demo` runs a whole virtual store (embedded broker,
gateway, pads, a fitting room, a locker bank and a tube line on real firmware, scripted people)
and stops cleanly on Ctrl-C. One demo process for the module (it takes a while to come up on
2 cores): the store and its tube through the API, the staff dashboard's tube panel in headless
Chromium (screenshots: var/artifacts/dashboard-demo-tube-moving.png, dashboard-demo-tube.png),
then Ctrl-C. The last test stops the demo, so the tests run in file order. The demo is given a
head office (`--central-url`: `phygital central`'s HTTP app on a real PostgreSQL holding
another store's stock): the kiosk's other-store availability comes from there."""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psycopg
import pytest

from gateway.central.http import create_app, serve
from gateway.central.schema import create_schema
from gateway.kinds.fitting_room.demo import DEMO_STOCK
from hil.central_rig import Postgres
from hil.harness import free_port, wait_for
from tests.support.browser import shot

ROOT = Path(__file__).resolve().parents[2]
TUBE_DEVICES = {"tube-stockroom": "tube-station", "tube-womens": "tube-station",
                "tube-fitting": "tube-station", "tube-line": "tube-line"}  # boards/tube/demo-line.json


class HeadOffice:
    """`phygital central`'s HTTP side (the app it serves) on a real PostgreSQL, whose
    `chain_stock` says store-c has every demo product: 7 on the floor, 2 in the stockroom."""

    def __init__(self, workdir: Path):
        self.pg = Postgres().init().start()
        self.token_file = workdir / "ho.token"
        token = secrets.token_hex(16)
        self.token_file.write_text(token + "\n")
        with psycopg.connect(self.pg.dsn, autocommit=True) as c:
            create_schema(c)
            for p in json.loads(DEMO_STOCK.read_text())["products"]:
                c.execute("INSERT INTO chain_stock (store, gtin, floor, stockroom, seq, t) "
                          "VALUES ('store-c', %s, 7, 2, 1, now())", (p["gtin"],))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop_event = threading.Event()
        self.thread = serve(create_app(self.pg.dsn, token), "127.0.0.1", self.port,
                            self.stop_event)

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        self.pg.close()


class Demo:
    def __init__(self, workdir: Path, head_office: HeadOffice):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "demo.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", "demo", "--http", f"127.0.0.1:{self.port}",
                 "--workdir", str(workdir / "demo"), "--seed", "3", "--pads", "2",
                 "--central-url", head_office.url,
                 "--central-token-file", str(head_office.token_file)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.rc: int | None = None

    def text(self) -> str:
        return self.log.read_text()

    def get(self, path: str, **params):
        assert self.proc.poll() is None, self.text()[-3000:]
        try:
            r = httpx.get(self.base + path, params=params, timeout=5)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def stop(self) -> int:
        if self.rc is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.rc = self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.rc = self.proc.wait(10)
        return self.rc


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    ho = HeadOffice(work)
    d = None
    try:
        d = Demo(work, ho)
        yield d
    finally:
        if d is not None:
            d.stop()
        ho.close()


def test_demo_store_runs_every_device(demo):
    devices = wait_for(lambda: (d := demo.get("/devices")) and len([x for x in d if x["online"]]) == 9 and d,
                       120, what="9 demo devices online")
    assert sorted(d["kind"] for d in devices if d["id"] not in TUBE_DEVICES) == [
        "fitting-room", "locker-bank", "rack-display", "sample-pad", "sample-pad"]
    assert {d["id"]: d["kind"] for d in devices if d["id"] in TUBE_DEVICES} == TUBE_DEVICES
    wait_for(lambda: (e := demo.get("/events", type="tag.placed")) and e["events"], 60, what="a sample on a pad")
    wait_for(lambda: (e := demo.get("/events", device="room-1")) and e["events"], 60, what="fitting-room events")
    collected = wait_for(lambda: (e := demo.get("/events", device="lk-1", type="pickup.collected"))
                         and e["events"], 120, what="a locker pickup by code")
    assert collected[0]["body"]["order"].startswith(("demo-", "ea-"))  # ea-: the endless aisle's
    # the endless aisle (docs/endless-aisle.md): a kiosk customer's order, a locker reserved for it
    orders = wait_for(lambda: demo.get("/aisle/orders"), 90, what="an endless-aisle order")
    assert orders[0]["order_id"].startswith("ea-") and orders[0]["bank"] == "lk-1"
    # the demo prints the order once its request is answered: a moment after the API lists it
    wait_for(lambda: "customer at the kiosk of pad-1 asks for Oak plank smoked: ordered for "
             "click-and-collect" in demo.text(), 20, what="the demo's line for the order")
    assert any(j["job"].startswith("aisle:") and j["to"] == "floor-womens"
               for j in demo.get("/tube/dispatches") or [])
    # the tube: a capsule sent from the stockroom went through the line into a floor station's
    # bin and was taken out (delivered), as the line's own events say too
    line = demo.get("/tube/line")
    assert line["network"] == "demo-line" and set(line["stations"]) == {"stockroom", "floor-womens", "fitting-rooms"}
    done = wait_for(lambda: (j := demo.get("/tube/dispatches", state="delivered")) and j, 120,
                    what="a tube dispatch delivered")
    job = done[0]
    assert job["job"].startswith("demo-tube-") and job["from"] == "stockroom"
    assert job["to"] in ("floor-womens", "fitting-rooms")
    states = [h[1] for h in job["history"]]
    assert states[0] == "queued" and states[-3:] == ["in_transit", "arrived", "delivered"], states
    dest = {"floor-womens": "tube-womens", "fitting-rooms": "tube-fitting"}[job["to"]]
    assert demo.get("/events", device="tube-line", type="diverter.position")["events"]
    assert demo.get("/events", device=dest, type="carrier.arrived")["events"]
    assert demo.get("/events", device=dest, type="carrier.removed")["events"]
    assert f"capsule arrived at {job['to']}" in demo.text()
    assert "Store dashboard" in httpx.get(demo.base + "/dashboard", timeout=5).text


def test_the_rack_display_shows_the_likes_feed(demo, browser):
    # the demo's feed posts likes; the gateway sums the rack's products and the display confirms
    rack = wait_for(lambda: (r := demo.get("/racks/rack-1")) and r["likes"] > 0 and r["shown_rev"] == r["rev"]
                    and r, 120, what="rack-1 showing likes")
    assert rack["label"] == "DENIM" and rack["products"] == ["P-1001", "P-1002"]
    # what the rig's OLED shows (its pixels, read by the demo after each batch) is the count
    shown = wait_for(lambda: [m for m in re.findall(r"rack rack-1: (\d+) likes; its screen shows DENIM / (\d+) / $",
                                                    demo.text(), re.MULTILINE) if m[0] == m[1]], 60,
                     what="the demo saying rack-1's screen shows its count")
    assert int(shown[-1][1]) > 0
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    try:
        page.goto(f"{demo.base}/dashboard#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
        row = page.locator('#racks tr[data-device="rack-1"][data-shown="true"]')
        row.wait_for(timeout=30_000)
        likes = int(row.get_attribute("data-likes") or "-1")
        assert likes > 0 and str(likes) in row.inner_text() and "DENIM" in row.inner_text()
        assert shot(page, "dashboard-demo-racks").stat().st_size > 10_000
    finally:
        page.close()


def test_other_stores_stock_comes_from_head_office(demo):
    def kiosk():
        for pad in ("pad-1", "pad-2"):
            v = demo.get(f"/pads/{pad}")
            if v and v.get("tag") and v.get("variants"):
                return v["variants"]
        return None
    variants = wait_for(kiosk, 120, interval=0.5, what="a kiosk showing a sample's variants")
    assert all(x["nearby_source"] == "head-office" for x in variants), variants
    # head office's figures (store-c: 7 + 2), not the demo stock file's `nearby`
    assert all(x["nearby"] == {"store-c": 9} for x in variants), variants
    assert "other stores' stock from head office" in demo.text()


def test_dashboard_shows_a_capsule_moving_then_delivered(demo, browser):
    wait_for(lambda: (d := demo.get("/devices")) and {x["id"] for x in d if x["online"]} >= set(TUBE_DEVICES),
             120, what="the tube line online")
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    try:
        page.goto(f"{demo.base}/dashboard#token={os.environ['PHYGITAL_ADMIN_TOKEN']}")
        page.locator("#live.on").wait_for(timeout=30_000)
        stations = page.locator("#tube [data-station]")
        stations.first.wait_for(timeout=30_000)
        assert sorted(stations.evaluate_all("els => els.map(e => e.dataset.station)")) == [
            "fitting-rooms", "floor-womens", "stockroom"]
        assert page.locator('#tube [data-resource^="seg:"]').count() == 3
        # a capsule in the tube: its dispatch row says so, and the segments it holds show it
        moving = page.locator('#tube tr.moving[data-state="in_transit"]')
        moving.first.wait_for(timeout=120_000)
        job = moving.first.get_attribute("data-job")
        assert "capsule moving" in moving.first.inner_text()
        assert page.locator(f'#tube [data-resource^="seg:"]:has-text("{job}")').count() >= 1
        shot(page, "dashboard-demo-tube-moving")
        # ... then delivered, live from the stream: in the panel's Delivered list
        page.locator(f'#tube-recent li[data-job="{job}"][data-state="delivered"]').wait_for(timeout=60_000)
        rec = demo.get(f"/tube/dispatches/{job}")
        assert rec["state"] == "delivered"
        assert f"{rec['from']} → {rec['to']}" in page.locator(f'#tube-recent li[data-job="{job}"]').inner_text()
        path = shot(page, "dashboard-demo-tube")
        assert path.stat().st_size > 10_000
    finally:
        page.close()


def test_demo_stops_cleanly_on_ctrl_c(demo):
    rc = demo.stop()
    text = demo.text()
    assert rc == 0, text[-3000:]
    assert "demo stopped cleanly" in text and "Traceback" not in text, text[-3000:]
    assert "unknown locker bank" not in text, text[-3000:]  # orders wait for the bank's birth
    assert "tube staff: gateway not answering" not in text, text[-3000:]
