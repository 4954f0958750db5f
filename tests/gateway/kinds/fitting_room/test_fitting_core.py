"""Fitting rooms, the pure core and the stock adapters: sessions, requests, the back-and-forth
rule, attribution and a scripted day's analytics against hand-computed figures."""
from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.kinds.fitting_room import gs1
from gateway.kinds.fitting_room.core import FittingError, FittingRooms, Rules
from gateway.kinds.fitting_room.stock import FileStock, HttpStock, StockError, where_to_fetch

MIN = 60_000
DAY0 = 1_795_420_800_000  # 09:00 of the scripted day (unix ms)


def gtin(body13: str) -> str:
    return body13 + str(gs1.check_digit(body13))


A, B, C, D = (gtin("0950600013435"), gtin("0950600013436"), gtin("0950600013437"), gtin("0950600013438"))


def at(minutes: float) -> int:
    return DAY0 + int(minutes * MIN)


def session(core: FittingRooms, room: str, start: float, end: float, tries: list[str], serial0: int = 1):
    core.occupied(room, at(start))
    for i, g in enumerate(tries):
        core.garment_in(room, at(start + 1 + i), f"04aa{i:010x}", g, f"SN{serial0 + i}")
    core.free(room, at(end))


def types(changes):
    return [c["type"] for c in changes]


def test_session_lifecycle_is_anonymous_and_tracks_in_out():
    core = FittingRooms()
    core.occupied("r1", at(0))
    core.garment_in("r1", at(1), "04a1", A, "1")
    core.garment_in("r1", at(1), "04a2", B, "2")
    core.garment_out("r1", at(3), "04a1")
    core.garment_out("r1", at(3), "04ff")  # never came in: ignored
    core.free("r1", at(5))
    ch = core.take_changes()
    assert types(ch) == ["fitting.session.started", "fitting.garment.in", "fitting.garment.in",
                         "fitting.garment.out", "fitting.session.closed"]
    closed = ch[-1]
    assert closed["tried"] == sorted([A, B]) and closed["duration_ms"] == 5 * MIN
    s = core.sessions[closed["session"]]
    assert set(s) == {"id", "room", "start", "end", "why", "tried", "items", "swaps", "alerted",
                      "converted"}  # nothing about a person
    assert core.rooms["r1"]["garments"] == {f"{B}/2": {"uid": "04a2", "gtin": B, "serial": "2",
                                                       "since": at(1)}}  # left in the room
    # a garment brought in before the curtain closes starts the session
    core.garment_in("r2", at(10), "04b1", A, "9")
    core.occupied("r2", at(10.2))
    ch = core.take_changes()
    assert types(ch) == ["fitting.session.started", "fitting.garment.in"]
    assert ch[0]["why"] == "garment"


def test_back_and_forth_alert_fires_at_the_rule_and_not_before():
    core = FittingRooms(Rules(swap_n=3, swap_window_ms=10 * MIN))
    core.occupied("r1", at(0))
    core.garment_in("r1", at(0.5), "04a1", A, "1")
    core.garment_in("r1", at(0.5), "04b1", B, "1")
    for swaps, m in enumerate((1, 2, 3), start=1):
        core.garment_out("r1", at(m), "04a1")
        assert not any(q["kind"] == "advice" for q in core.requests.values()), f"alert before swap {swaps}"
        core.garment_in("r1", at(m + 0.5), "04a1", A, "1")
        alerts = [c for c in core.take_changes() if c["type"] == "fitting.alert.back_and_forth"]
        assert len(alerts) == (1 if swaps == 3 else 0), f"after {swaps} swaps: {alerts}"
    advice = [q for q in core.requests.values() if q["kind"] == "advice"]
    assert len(advice) == 1 and advice[0]["swaps"] == 3
    assert {g["gtin"] for g in advice[0]["garments"]} == {A, B}
    core.garment_out("r1", at(4), "04a1")
    core.garment_in("r1", at(4.5), "04a1", A, "1")  # 4th swap: same session, no second alert
    assert [c for c in core.take_changes() if c["type"] == "fitting.alert.back_and_forth"] == []


def test_swaps_spread_beyond_the_window_do_not_alert():
    core = FittingRooms(Rules(swap_n=3, swap_window_ms=10 * MIN))
    core.occupied("r1", at(0))
    core.garment_in("r1", at(0), "04a1", A, "1")
    for m in (1, 7, 13, 19):  # one swap every 6 minutes: never 3 within 10 minutes
        core.garment_out("r1", at(m - 0.5), "04a1")
        core.garment_in("r1", at(m), "04a1", A, "1")
    assert not any(q["kind"] == "advice" for q in core.requests.values())


def test_requests_call_dedupe_ack_command_and_size_delivery():
    core = FittingRooms()
    with pytest.raises(FittingError) as e:
        core.ask_size("r1", at(0), B, A, "floor")
    assert e.value.reason == "no-session"
    core.occupied("r1", at(0))
    core.garment_in("r1", at(1), "04a1", A, "1")
    call = core.call("r1", at(2))
    assert core.call("r1", at(2.1), "mirror") is call  # a second press is the same call
    assert call["garments"][0]["gtin"] == A
    size = core.ask_size("r1", at(3), B, A, "stockroom")
    assert core.ask_size("r1", at(3.1), B, A, "stockroom") is size
    core.update_request(call["id"], "acknowledged", at(4), "ana")
    assert core.take_commands() == [("r1", "call_ack", {}, f"fr:{call['id']}:call_ack")]
    with pytest.raises(FittingError) as e:
        core.update_request(call["id"], "open", at(5))
    assert e.value.reason == "bad-transition"
    core.update_request(size["id"], "on_the_way", at(5))
    core.garment_in("r1", at(6), "04b9", B, "7")  # the wanted size arrives in the room
    assert size["state"] == "done" and size["reason"] == "delivered"
    assert [s for s, _ in size["history"]] == ["open", "on_the_way", "done"]
    core.free("r1", at(8))
    assert call["state"] == "cancelled" and call["reason"] == "room-free"
    # state survives JSON
    again = FittingRooms.from_dict(json.loads(json.dumps(core.to_dict())))
    assert again.requests == core.requests and again.sessions == core.sessions


def test_scripted_day_conversion_matches_hand_computed_figures():
    core = FittingRooms(Rules(attribution_ms=120 * MIN))
    session(core, "r1", 0, 10, [A, B])            # S1 09:00-09:10
    session(core, "r2", 5, 20, [A])               # S2 09:05-09:20
    core.occupied("r1", at(60))                   # S3 10:00-10:15: C, and A in/out/in
    core.garment_in("r1", at(61), "04c1", C, "1")
    core.garment_in("r1", at(62), "04c2", A, "5")
    core.garment_out("r1", at(63), "04c2")
    core.garment_in("r1", at(64), "04c2", A, "5")
    core.free("r1", at(75))
    session(core, "r2", 120, 125, [B])            # S4 11:00-11:05
    core.door_count(at(0), 40)
    core.door_count(at(180), 60)
    p1 = core.purchase("rc-1", at(30), [(A, 1)])  # -> S2 (ended 09:20, the most recent)
    p2 = core.purchase("rc-2", at(40), [(A, 2)])  # -> S1, then nothing left
    core.purchase("rc-3", at(180), [(B, 1)])      # -> S4 (S1 is outside the 2 h window)
    core.purchase("rc-4", at(240), [(D, 1)])      # never tried on
    core.purchase("rc-5", at(420), [(C, 1)])      # S3 ended 10:15: too long ago
    assert core.purchase("rc-1", at(31), [(A, 1)]) is p1  # a POS retry changes nothing
    sid = {s["start"]: s["id"] for s in core.sessions.values()}
    assert p1["lines"][0]["sessions"] == [sid[at(5)]]
    assert p2["lines"][0]["sessions"] == [sid[at(0)]]

    fig = core.analytics(at(0), at(480))          # 09:00-17:00
    # by hand: try-ons A 3 (S1, S2, S3), B 2 (S1, S4), C 1 (S3); converted A 2, B 1, C 0
    assert [(p["gtin"], p["try_ons"], p["converted"], p["conversion"]) for p in fig["products"]] == [
        (A, 3, 2, 0.6667), (B, 2, 1, 0.5), (C, 1, 0, 0.0)]
    assert (fig["try_ons"], fig["try_ons_converted"], fig["try_on_conversion"]) == (6, 3, 0.5)
    assert (fig["sessions"], fig["sessions_converted"], fig["session_conversion"]) == (4, 3, 0.75)
    # r1: 10 + 15 min, r2: 15 + 5 min, of 480 min
    assert fig["rooms"] == [
        {"room": "r1", "sessions": 2, "occupied_ms": 25 * MIN, "avg_session_ms": 12.5 * MIN, "occupancy": 0.0521},
        {"room": "r2", "sessions": 2, "occupied_ms": 20 * MIN, "avg_session_ms": 10 * MIN, "occupancy": 0.0417}]
    # 5 receipts, 6 units (3 attributed), 100 people through the door
    assert (fig["purchases"], fig["units"], fig["units_attributed"]) == (5, 6, 3)
    assert (fig["footfall"], fig["footfall_conversion"]) == (100, 0.05)


STOCK = {
    "products": [
        {"gtin": A, "style": "oxford", "name": "Oxford shirt", "colour": "blue", "size": "M",
         "price": 49.9, "here": {"floor": 2, "stockroom": 4}, "nearby": {"store-b": 1}},
        {"gtin": B, "style": "oxford", "name": "Oxford shirt", "colour": "blue", "size": "L",
         "price": 49.9, "here": {"floor": 0, "stockroom": 3}, "nearby": {}},
        {"gtin": C, "style": "oxford", "name": "Oxford shirt", "colour": "white", "size": "M",
         "price": 49.9, "here": {"floor": 0, "stockroom": 0}, "nearby": {"store-b": 2, "store-c": 5}},
        {"gtin": D, "style": "chino", "name": "Chino", "colour": "sand", "size": "32",
         "price": 59.0, "here": {"floor": 0, "stockroom": 0}, "nearby": {}},
    ],
    "tags": {"A1B2C3D4": f"{A}/U-1"},
}


def test_file_stock_variants_uid_mapping_and_where_to_fetch():
    s = FileStock(data=STOCK)
    run = asyncio.run
    assert run(s.product(A)) == {"gtin": A, "style": "oxford", "name": "Oxford shirt",
                                 "colour": "blue", "size": "M", "price": 49.9, "currency": "EUR"}
    assert sorted(v["gtin"] for v in run(s.variants(A))) == sorted([A, B, C])
    assert run(s.by_uid("a1b2c3d4")) == (A, "U-1")
    assert [where_to_fetch(v) for v in (s.products[A], s.products[B], s.products[C], s.products[D])] == \
        ["floor", "stockroom", "store:store-c", None]
    bad = {"products": [dict(STOCK["products"][0], gtin=A[:-1] + str((int(A[-1]) + 1) % 10))]}
    with pytest.raises(StockError, match="check digit"):
        FileStock(data=bad)


def test_http_stock_adapter_against_a_real_http_server():
    src = FileStock(data=STOCK)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            parts = self.path.strip("/").split("/")
            body = None
            if parts[0] == "products" and len(parts) == 2 and parts[1] in src.products:
                body = src.products[parts[1]]
            elif parts[0] == "products" and len(parts) == 3 and parts[2] == "variants":
                body = asyncio.run(src.variants(parts[1]))
            elif parts[0] == "tags" and parts[1] in src.tags:
                g, serial = src.tags[parts[1]]
                body = {"gtin": g, "serial": serial}
            elif parts[0] == "boom":
                self.send_response(500)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(404 if body is None else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        async def go():
            h = HttpStock(f"http://127.0.0.1:{srv.server_port}")
            assert await h.product(A) == await src.product(A)
            assert [v["gtin"] for v in await h.variants(A)] == [v["gtin"] for v in await src.variants(A)]
            assert await h.by_uid("A1B2C3D4") == (A, "U-1")
            assert await h.by_uid("ffffffff") is None
            with pytest.raises(StockError, match="HTTP 500"):
                await HttpStock(f"http://127.0.0.1:{srv.server_port}/boom")._get("")
            await h.client.aclose()
        asyncio.run(go())
    finally:
        srv.shutdown()


# --- the service on a real SQLite database: cursor, restart, identity --------------------------

def _device_events(store, events):
    with store.transaction():
        store.upsert_device(id="room-9", kind="fitting-room", fw="0.1.0", caps=[], cfg="x",
                            session=1, epoch="e1", boot=1, reset=None, online=True, now=DAY0)
        store.upsert_device(id="pad-9", kind="sample-pad", fw="0.1.0", caps=[], cfg="x",
                            session=1, epoch="e2", boot=1, reset=None, online=True, now=DAY0)
        for seq, (dev, etype, body) in enumerate(events, 1):
            store.insert_event(dev, "e1" if dev == "room-9" else "e2", seq, etype, at(seq), at(seq), body)


def test_service_applies_room_events_once_across_a_restart(tmp_path):
    from gateway.kinds.fitting_room.service import FittingService
    from gateway.storage.db import Database
    from gateway.storage.store import Store

    async def go():
        async with Database(tmp_path / "gw.db") as db:
            svc = FittingService(db, FileStock(data=STOCK), clock=lambda: at(100))
            await svc.load()
            await db.write(_device_events, [
                ("room-9", "room.occupied", {}),
                ("pad-9", "tag.placed", {"uid": "04a1", "sample": "S-1"}),  # not a room: ignored
                ("room-9", "garment.in", {"uid": "04aa", "tech": "ntag213", "gtin": A, "serial": "SN%2F1"}),
                ("room-9", "garment.in", {"uid": "a1b2c3d4", "tech": "mifare-1k", "gtin": None, "serial": None}),
                ("room-9", "garment.in", {"uid": "04bb", "tech": "ntag213", "gtin": "09506000134353", "serial": "X"}),
            ])
            await svc.step()
            keys = sorted(svc.core.rooms["room-9"]["garments"])
            # GS1 link (serial decoded), UID mapping, bad check digit -> UID only
            assert keys == sorted([f"{A}/SN/1", f"{A}/U-1", "uid:04bb"])
            items = await db.read(Store.stream_after, 0, 100)
            assert sum(1 for i in items if i.kind == "fitting") == 4  # started + 3 garments
        async with Database(tmp_path / "gw.db") as db:  # a restart: state and cursor come back
            svc2 = FittingService(db, FileStock(data=STOCK), clock=lambda: at(100))
            await svc2.load()
            assert svc2.core.to_dict() == svc.core.to_dict()
            await svc2.step()  # nothing new: nothing applied twice
            items = await db.read(Store.stream_after, 0, 100)
            assert sum(1 for i in items if i.kind == "fitting") == 4
            q = await svc2.ask_size("room-9", B, A)
            assert (q["where"], q["via"], q["state"]) == ("stockroom", "staff", "open")
            with pytest.raises(FittingError) as e:
                await svc2.ask_size("room-9", D, A)  # chino: nothing anywhere
            assert e.value.reason == "out-of-stock"
            with pytest.raises(FittingError) as e:
                await svc2.ask_size("room-9", "09506000134353", A)
            assert e.value.reason == "bad-gtin"

    asyncio.run(go())
