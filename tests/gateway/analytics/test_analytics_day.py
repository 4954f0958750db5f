"""The funnel over a scripted day, every figure computed by hand below (docs/analytics.md):
entries -> sample-pad placements and dwell -> fitting-room sessions -> purchases, per hour and
per day, per product, per device (online, out of service), the tube's request-to-delivery
percentiles and the lockers' dwell and expiry rate. The stream items are the ones the kinds
write (gateway/kinds/*/service.py, gateway/devices/ingest.py and alerts.py); the fold runs as
the gateway runs it (`fold_tx`), and again page by page and after a rolled-back fold, with
the same figures: nothing lost, nothing counted twice."""
from __future__ import annotations

import pytest

from gateway.analytics import queries
from gateway.analytics.ledger import add_entries, record_purchases, set_entries
from gateway.analytics.rollup import fold_tx
from gateway.kinds.fitting_room import gs1

H, MIN, S = 3_600_000, 60_000, 1000
D0 = 1_795_392_000_000            # 2026-11-23 00:00 UTC
assert D0 % (24 * H) == 0


def t(hh: int, mm: float = 0, ss: float = 0) -> int:
    return D0 + hh * H + int(mm * MIN) + int(ss * S)


def gtin(body13: str) -> str:
    return body13 + str(gs1.check_digit(body13))


A, B, C, D = (gtin("0950600013435"), gtin("0950600013436"), gtin("0950600013437"),
              gtin("0950600013438"))


def sec(ms: int) -> float:  # lockers and the tube stamp their items in seconds
    return ms / 1000


def script(store) -> None:
    with store.transaction():
        for dev, kind in (("pad-1", "sample-pad"), ("pad-2", "sample-pad"), ("lk-1", "locker-bank"),
                          ("room-1", "fitting-room")):
            store.upsert_device(id=dev, kind=kind, fw="1.0", caps=[], cfg="x", session=1,
                                epoch="e", boot=1, reset=None, online=True, now=t(8))
    items: list[tuple[str, dict]] = []

    def ev(dev, type_, at, **body):
        items.append(("event", {"id": len(items) + 1, "device": dev, "epoch": "e", "seq": 1,
                                "type": type_, "t_device": at, "t_gateway": at + 5, "body": body}))

    # pads: hour 9: 2 placements, 2 lifts 45 s + 30 s; hour 10: 1 placement, 1 lift 120 s;
    # hour 11: 1 placement (lifted at 12:01: its 120 s count in hour 12)
    ev("pad-1", "tag.placed", t(9, 5), uid="04a1", sample=A)          # a sample named by GTIN
    ev("pad-1", "tag.removed", t(9, 6), uid="04a1", held_ms=45_000)
    ev("pad-1", "tag.placed", t(9, 20), uid="04a2", sample="S-1001")
    ev("pad-1", "tag.removed", t(9, 20, 30), uid="04a2", held_ms=30_000)
    ev("pad-2", "tag.placed", t(10, 10), uid="04b1", sample="S-9", gtin=B)  # a tag with a GTIN
    ev("pad-2", "tag.removed", t(10, 12), uid="04b1", held_ms=120_000)
    ev("pad-1", "tag.removed", t(10, 40), uid="04zz", held_ms=-5)      # garbage: not a lift
    ev("lk-1", "tag.placed", t(10, 41), uid="04cc", sample=A)          # not a pad: ignored
    ev("pad-2", "tag.placed", t(11, 59), uid="04b2", sample=A)
    ev("pad-2", "tag.removed", t(12, 1), uid="04b2", held_ms=120_000)
    # fitting rooms: a session counts in the hour it started
    for at, dur, tried in ((t(9, 40), 20 * MIN, [A, B]),     # S1 09:20-09:40
                           (t(10, 5), 10 * MIN, [A]),        # S2 09:55-10:05
                           (t(11, 30), 15 * MIN, [C])):      # S3 11:15-11:30
        items.append(("fitting", {"type": "fitting.session.started", "room": "room-1",
                                  "at": at - dur, "session": "s"}))
        items.append(("fitting", {"type": "fitting.session.closed", "room": "room-1", "at": at,
                                  "session": "s", "tried": tried, "duration_ms": dur}))
    # lockers: o1 90 min; o2 expired then collected (160 min, not on time); o3 expired;
    # o4 20 min; o1's `ready` replayed
    def order(o, state, at, old=None):
        items.append(("locker", {"type": f"order.{state}", "bank": "lk-1", "order": o,
                                 "state": state, "old": old, "at": sec(at)}))
    order("o1", "ready", t(9), "assigned")
    order("o2", "ready", t(9, 30), "assigned")
    order("o3", "ready", t(10), "assigned")
    order("o1", "collected", t(10, 30), "ready")
    order("o4", "ready", t(11), "assigned")
    order("o4", "collected", t(11, 20), "ready")
    order("o2", "expired", t(11, 30), "ready")
    order("o3", "expired", t(12), "ready")
    order("o2", "collected", t(12, 10), "expired")
    order("o1", "ready", t(9), "assigned")
    # tube: 90 s, 120 s, 45 s, 300 s; j4 failed; j1's delivery replayed
    def job(j, state, at):
        items.append(("tube", {"type": f"dispatch.{state}", "job": j, "state": state,
                               "at": sec(at)}))
    job("j1", "queued", t(9)); job("j1", "in_transit", t(9, 0, 10)); job("j1", "delivered", t(9, 1, 30))
    job("j2", "queued", t(9, 10)); job("j2", "delivered", t(9, 12))
    job("j3", "queued", t(9, 20)); job("j3", "delivered", t(9, 20, 45))
    job("j4", "queued", t(10)); job("j4", "failed", t(10, 2))
    job("j5", "queued", t(10, 30)); job("j5", "delivered", t(10, 35))
    job("j1", "delivered", t(9, 1, 30))
    # devices: pad-1 online 09:00-10:00 and from 10:30, a critical alert 11:00-11:30 (and a
    # warning, which does not take it out of service); lk-1 online from 09:30, a critical
    # alert from 12:00, still open
    def dev(d, kind, online, at):
        items.append(("device", {"change": "online" if online else "offline", "id": d,
                                 "kind": kind, "online": online, "last_seen": at}))
    dev("pad-1", "sample-pad", True, t(9))
    dev("lk-1", "locker-bank", True, t(9, 30))
    dev("pad-1", "sample-pad", False, t(10))
    dev("pad-1", "sample-pad", True, t(10, 30))
    items.append(("alert", {"change": "raised", "id": 7, "severity": "critical", "device": "pad-1",
                            "created": t(11), "last": t(11)}))
    items.append(("alert", {"change": "repeated", "id": 7, "severity": "critical",
                            "device": "pad-1", "created": t(11), "last": t(11, 10)}))
    items.append(("alert", {"change": "resolved", "id": 7, "severity": "critical",
                            "device": "pad-1", "created": t(11), "resolved_at": t(11, 30)}))
    items.append(("alert", {"change": "raised", "id": 8, "severity": "warning", "device": "pad-1",
                            "created": t(11, 40)}))
    items.append(("alert", {"change": "raised", "id": 9, "severity": "critical", "device": "lk-1",
                            "created": t(12)}))
    with store.transaction():
        for kind, data in items:
            store.append_stream(kind, data)
    store.take_outbox()

    # entries: the footfall API adds; a door counter sets per minute (a replay changes nothing,
    # a correction moves the hour by the difference)
    add_entries(store, "footfall-api", t(9, 10), 40)
    add_entries(store, "footfall-api", t(9, 50), 20)
    add_entries(store, "footfall-api", t(10, 30), 30)
    assert set_entries(store, "door-1", t(11), 10) == 10
    assert set_entries(store, "door-1", t(11), 10) == 0
    assert set_entries(store, "door-1", t(11, 1), 5) == 5
    assert set_entries(store, "door-1", t(11, 1), 7) == 2
    # purchases: R1 hour 9 (1 unit), R2 hour 10 (3 units), R3 hour 11 (1 unit); R1 retried
    def receipt(r, at, *lines):
        return {"receipt": r, "at": at, "lines": [{"gtin": g, "qty": q, "sessions": []}
                                                   for g, q in lines]}
    done = record_purchases(store, [receipt("R1", t(9, 45), (A, 1)),
                                    receipt("R2", t(10, 20), (A, 2), (B, 1)),
                                    receipt("R3", t(11, 50), (D, 1))], "api", t(12))
    assert [new for _, new in done] == [True, True, True]
    again = record_purchases(store, [receipt("R1", t(9, 46), (C, 5))], "api", t(12))
    assert again == [(receipt("R1", t(9, 45), (A, 1)), False)]


def fold_all(store, page: int = 2000) -> None:
    while fold_tx(store, page):
        pass


START, END = t(9), t(13)


def check(store) -> None:
    f = queries.funnel(store, START, END, "hour")
    cols = ("entries", "placements", "pad_dwell_ms", "sessions", "try_ons", "purchases", "units")
    assert [[b["t"], *(b[c] for c in cols)] for b in f["buckets"]] == [
        [t(9), 60, 2, 75_000, 2, 3, 1, 1],
        [t(10), 30, 1, 120_000, 0, 0, 1, 3],
        [t(11), 17, 1, 0, 1, 1, 1, 1],
        [t(12), 0, 0, 120_000, 0, 0, 0, 0]]
    assert f["totals"] == {"entries": 107, "placements": 4, "pad_lifts": 4,
                           "pad_dwell_ms": 315_000, "sessions": 3, "try_ons": 4, "purchases": 3,
                           "units": 5}
    assert f["avg_pad_dwell_ms"] == 78_750                   # 315 s / 4 lifts
    assert (f["placements_per_entry"], f["sessions_per_entry"], f["purchases_per_entry"],
            f["purchases_per_session"]) == (0.0374, 0.028, 0.028, 1.0)  # 4/107, 3/107, 3/107, 3/3
    assert [(s["step"], s["count"], s["of_entries"]) for s in f["steps"]] == [
        ("entries", 107, 1.0), ("pad placements", 4, 0.0374),
        ("fitting-room sessions", 3, 0.028), ("purchases", 3, 0.028)]
    day = queries.funnel(store, START, END, "day")
    assert len(day["buckets"]) == 1 and day["buckets"][0]["entries"] == 107 \
        and day["buckets"][0]["units"] == 5

    p = queries.products(store, START, END)
    assert [(r["product"], r["placed"], r["pad_dwell_ms"], r["tried_on"], r["bought"],
             r["try_on_conversion"], r["pad_conversion"]) for r in p["products"]] == [
        (A, 2, 165_000, 2, 3, 1.5, 1.5),
        (B, 1, 120_000, 1, 1, 1.0, 1.0),
        (C, 0, 0, 1, 0, 0.0, None),
        (D, 0, 0, 0, 1, None, None),
        ("S-1001", 1, 30_000, 0, 0, None, 0.0)]
    assert [r["product"] for r in queries.products(store, START, END, "bought", 2)["products"]] == [A, B]

    devs = {d["device"]: d for d in queries.devices(store, START, END, now=END)["devices"]}
    assert (devs["pad-1"]["online_min"], devs["pad-1"]["out_of_service_min"],
            devs["pad-1"]["available_min"], devs["pad-1"]["availability"]) == (210.0, 30.0, 180.0, 0.75)
    assert (devs["lk-1"]["online_min"], devs["lk-1"]["out_of_service_min"],
            devs["lk-1"]["available_min"], devs["lk-1"]["availability"]) == (210.0, 60.0, 150.0, 0.625)
    assert devs["lk-1"]["kind"] == "locker-bank"

    assert queries.tube(store, START, END) == {"start": START, "end": END, "deliveries": 4,
                                               "p50_ms": 90_000, "p90_ms": 300_000,
                                               "p99_ms": 300_000, "max_ms": 300_000}
    assert queries.lockers(store, START, END) == {
        "start": START, "end": END, "loaded": 4, "collected": 3, "expired": 2,
        "expiry_rate": 0.5,                         # 2 expired / (2 + 2 collected in time)
        "dwell_avg_ms": 90 * MIN,                   # (90 + 160 + 20) / 3 min
        "dwell_p50_ms": 90 * MIN, "dwell_p90_ms": 160 * MIN}

    # the same figures through whole-day rows (products, devices): the day, and a range that
    # reads an hour row, two day rows and an hour row
    for lo, hi in ((D0, D0 + 24 * H), (D0 - H, D0 + 48 * H + H)):
        assert queries.products(store, lo, hi)["products"] == p["products"]
        d2 = {d["device"]: d for d in queries.devices(store, lo, hi, now=END)["devices"]}
        assert [(d2[k]["online_min"], d2[k]["out_of_service_min"], d2[k]["available_min"])
                for k in ("pad-1", "lk-1")] == [(210.0, 30.0, 180.0), (210.0, 60.0, 150.0)]
        assert queries.funnel(store, lo, hi, "day")["totals"] == f["totals"]
    # outside the day: nothing
    assert queries.funnel(store, t(13), t(17), "hour")["totals"]["entries"] == 0
    assert queries.products(store, t(13), t(17))["products"] == []


def test_the_scripted_day_matches_the_hand_computed_figures(gw_store):
    script(gw_store)
    fold_all(gw_store)
    check(gw_store)
    assert fold_tx(gw_store) == 0  # folded: running it again reads nothing, changes nothing
    check(gw_store)


def test_folding_page_by_page_and_after_a_rolled_back_fold_counts_each_item_once(gw_store):
    script(gw_store)
    with pytest.raises(RuntimeError), gw_store.transaction():  # a crash mid-fold
        assert fold_tx(gw_store, 7) == 7
        raise RuntimeError("power cut")
    fold_all(gw_store, page=5)  # every page its own transaction, with the cursor
    check(gw_store)


def test_csv_exports_have_every_figure(gw_store):
    script(gw_store)
    fold_all(gw_store)
    csv = queries.export("funnel", queries.funnel(gw_store, START, END, "hour")).splitlines()
    assert csv[0] == "t,entries,placements,pad_dwell_ms,sessions,try_ons,purchases,units"
    assert csv[1] == f"{t(9)},60,2,75000,2,3,1,1" and len(csv) == 5
    prod = queries.export("products", queries.products(gw_store, START, END)).splitlines()
    assert prod[1] == f"{A},2,165000,2,3,1.5,1.5" and prod[-1] == "S-1001,1,30000,0,0,,0.0"
    assert queries.export("tube", queries.tube(gw_store, START, END)).splitlines()[1] == \
        f"{START},{END},4,90000,300000,300000,300000"
    assert queries.export("lockers", queries.lockers(gw_store, START, END)).splitlines()[1] == \
        f"{START},{END},4,3,2,0.5,{90 * MIN},{90 * MIN},{160 * MIN}"
    devs = queries.export("devices", queries.devices(gw_store, START, END, now=END)).splitlines()
    assert devs[1:] == ["lk-1,locker-bank,210.0,60.0,150.0,0.625",
                        "pad-1,sample-pad,210.0,30.0,180.0,0.75"]


def test_a_sample_counts_for_the_gtin_the_catalog_gives_it(gw_store):
    with gw_store.transaction():
        gw_store.upsert_device(id="pad-9", kind="sample-pad", fw="1", caps=[], cfg="x", session=1,
                               epoch="e", boot=1, reset=None, online=True, now=t(8))
        gw_store.conn.execute("INSERT INTO samples (id, title, gtin) VALUES ('S-7', 'Oak', ?)", (C,))
        for sample in ("S-7", "S-8"):  # S-8: not in the catalog, its own row
            gw_store.append_stream("event", {"device": "pad-9", "type": "tag.placed",
                                             "t_device": t(9), "t_gateway": t(9),
                                             "body": {"uid": "04a1", "sample": sample}})
    fold_all(gw_store)
    rows = queries.products(gw_store, START, END, sort="placed")["products"]
    assert [(r["product"], r["placed"]) for r in rows] == [(C, 1), ("S-8", 1)]


def test_a_door_counters_minutes_are_entries_once_beside_the_footfall_api(gw_store):
    """The door-counter kind's minutes (`door_counts`, written as its service writes them)
    become the funnel's entries through its `entries` hook, in the fold's transaction: a
    minute that gets another period (a replay after an outage, an hour late) counts its new
    total once; a rolled-back fold and folding one row at a time change nothing. A store with
    both a door counter and the footfall API gets both added: it counts people twice
    (docs/analytics.md says to use one)."""
    from gateway.analytics.service import fold_and_sync_tx
    from gateway.kinds.door_counter import KIND as DOORS
    from gateway.kinds.door_counter.core import MinuteDelta
    from gateway.kinds.door_counter.service import _save_tx
    from gateway.storage.store import migrate_kind

    migrate_kind(gw_store.conn, DOORS.name, DOORS.migrations)
    assert DOORS.entries is not None
    sources = {DOORS.name: DOORS.entries}
    cursor = 0

    def periods(*rows: tuple[str, int, int]) -> None:  # (device, minute, people in): one page
        nonlocal cursor
        cursor += 10
        _save_tx(gw_store, {}, [(dev, MinuteDelta(m, n, 0, 0, 0)) for dev, m, n in rows], cursor, t(12))

    def fold(page: int = 2000) -> None:
        while any(n == page for n in fold_and_sync_tx(gw_store, page, sources)):
            pass

    def hours() -> list[int]:
        return [b["entries"] for b in queries.funnel(gw_store, t(8), t(11), "hour")["buckets"]]

    periods(("door-1", t(9, 0), 4), ("door-1", t(9, 1), 3), ("door-2", t(10, 0), 6))
    fold()
    assert hours() == [0, 7, 6]                              # 4 + 3 in hour 9, door-2's 6 in hour 10
    periods(("door-1", t(9, 1), 2), ("door-1", t(8, 59), 1))  # a late period of 09:01; 08:59 an hour late
    with pytest.raises(RuntimeError), gw_store.transaction():  # a crash mid-fold
        fold_and_sync_tx(gw_store, 2000, sources)
        raise RuntimeError("power cut")
    fold(page=1)
    assert hours() == [1, 9, 6]                              # 09:01 is 5 now (3 + 2), counted once
    assert [tuple(r) for r in gw_store.conn.execute(
        "SELECT source, minute, n FROM entries ORDER BY source, minute")] == [
        ("door-1", t(8, 59), 1), ("door-1", t(9, 0), 4), ("door-1", t(9, 1), 5), ("door-2", t(10), 6)]
    fold()
    assert hours() == [1, 9, 6]                              # nothing new: nothing moves
    # the footfall API beside it: its 10 are added to the door's 9 (people counted twice)
    add_entries(gw_store, "footfall-api", t(9, 30), 10)
    fold()
    assert hours() == [1, 19, 6]


def test_an_entries_row_set_entries_refuses_is_skipped_and_the_fold_goes_on(gw_store, caplog):
    from gateway.analytics.service import fold_and_sync_tx

    def hook(store, cursor, limit):  # a defective hook: a minute that is not whole, a negative n
        rows = [("door-9", t(9, 0), 3), ("door-9", t(9, 1) + 5, 2), ("door-9", t(9, 2), -1),
                ("door-9", t(9, 3), 4)]
        return (rows, 1) if cursor == 0 else ([], cursor)

    fold_and_sync_tx(gw_store, 2000, {"doors": hook})
    fold_and_sync_tx(gw_store, 2000, {"doors": hook})
    assert queries.funnel(gw_store, t(9), t(10), "hour")["totals"]["entries"] == 7  # 3 + 4
    assert [r.getMessage().split(":")[0] for r in caplog.records if "not counted" in r.getMessage()] == [
        f"entries of doors not counted source=door-9 minute={t(9, 1) + 5} n=2",
        f"entries of doors not counted source=door-9 minute={t(9, 2)} n=-1"]
