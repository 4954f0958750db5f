"""Head office's chain-wide funnel (`GET /funnel`, docs/chain.md "The chain-wide funnel"):
the stores' hour reports (`analytics.hour`, the hour's totals) as the consumer writes them
into a real PostgreSQL, the latest report per (store, hour) by seq, summed over stores; every
figure checked against hand-computed ones."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway.central.http import create_app
from gateway.central.messages import Refused, parse
from gateway.central.schema import create_schema, ensure_partition, month_of, write_batch
from gateway.integrations.chain import chain_payload
from hil.central_rig import Postgres

H = 3_600_000
D0 = int(datetime(2026, 11, 23, tzinfo=UTC).timestamp() * 1000)   # a day, 00:00 UTC
TOKEN = "t" * 24
COLS = ("entries", "placements", "pad_lifts", "pad_dwell_ms", "sessions", "try_ons",
        "purchases", "units")


def report(store: str, seq: int, hour: int, **counts: int):
    data = {"type": "hour", "hour": hour, **dict.fromkeys(COLS, 0), **counts}
    row = {"id": seq, "stream_id": 100 + seq, "type": "analytics.hour", "created": hour + H,
           "data": json.dumps(data)}
    return parse(f"chain/1/{store}/analytics/gateway", chain_payload(store, row))


@pytest.fixture(scope="module")
def pg():
    p = Postgres().init().start()
    try:
        yield p
    finally:
        p.close()


def _write(conn, messages):
    for m in {month_of(x.t) for x in messages}:
        ensure_partition(conn, m)
    return write_batch(conn, messages)


def test_chain_funnel_against_hand_computed_figures(pg):
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        create_schema(conn)
        conn.execute("TRUNCATE chain_funnel, chain_seqs, chain_stores, chain_gaps")
        # store A, 09:00: a first report, then the newer totals (seq 2) in the same batch as
        # its 10:00; store B, 09:00 and 14:00; B's 09:00 first as an old report (seq 1) that
        # arrives AFTER the newer one (seq 3): it must not win
        _write(conn, [
            report("store-a", 1, D0 + 9 * H, entries=50, placements=10, sessions=4, purchases=2,
                   units=3),
            report("store-a", 2, D0 + 9 * H, entries=80, placements=20, pad_lifts=18,
                   pad_dwell_ms=90_000, sessions=8, try_ons=11, purchases=5, units=7),
            report("store-a", 3, D0 + 10 * H, entries=20, placements=5, pad_lifts=5,
                   pad_dwell_ms=10_000, sessions=2, try_ons=2, purchases=1, units=1),
            report("store-b", 2, D0 + 14 * H, entries=40, placements=4, sessions=4, try_ons=6,
                   purchases=4, units=4),
            report("store-b", 3, D0 + 9 * H, entries=100, placements=30, pad_lifts=27,
                   pad_dwell_ms=27_000, sessions=10, try_ons=15, purchases=10, units=12),
        ])
        w = _write(conn, [report("store-b", 1, D0 + 9 * H, entries=1, purchases=1),
                          report("store-b", 4, D0 + 9 * H - 24 * H, entries=999, purchases=9)])
        assert w.stored == 2
        assert conn.execute("SELECT entries FROM chain_funnel WHERE store = 'store-b' AND "
                            "hour = to_timestamp(%s / 1000.0)", (D0 + 9 * H,)).fetchone() == (100,)

    client = TestClient(create_app(pg.dsn, TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.get("/funnel", params={"start": D0, "end": D0 + 24 * H, "bucket": "hour"},
                   headers=auth)
    assert r.status_code == 200, r.text
    f = r.json()
    # by hand: 09:00 = A 80/20/8/5 + B 100/30/10/10; 10:00 = A; 14:00 = B; the day before out
    entries, placements, sessions, purchases = 80 + 100 + 20 + 40, 20 + 30 + 5 + 4, \
        8 + 10 + 2 + 4, 5 + 10 + 1 + 4
    assert f["totals"] == {"entries": 240, "placements": 59, "pad_lifts": 50,
                           "pad_dwell_ms": 127_000, "sessions": 24, "try_ons": 34,
                           "purchases": 20, "units": 24}
    assert (entries, placements, sessions, purchases) == (240, 59, 24, 20)
    assert f["steps"] == [
        {"step": "entries", "count": 240, "of_entries": 1.0},
        {"step": "pad placements", "count": 59, "of_entries": 0.2458},       # 59/240
        {"step": "fitting-room sessions", "count": 24, "of_entries": 0.1},
        {"step": "purchases", "count": 20, "of_entries": 0.0833}]            # 20/240
    assert f["avg_pad_dwell_ms"] == 2540                                      # 127000 // 50
    assert f["purchases_per_session"] == 0.8333                               # 20/24
    by_hour = {(b["t"] - D0) // H: (b["entries"], b["purchases"]) for b in f["buckets"]
               if b["entries"]}
    assert by_hour == {9: (180, 15), 10: (20, 1), 14: (40, 4)}
    assert len(f["buckets"]) == 24
    assert f["stores"] == [
        {"store": "store-a", "entries": 100, "placements": 25, "sessions": 10, "purchases": 6,
         "units": 8, "purchases_per_entry": 0.06},
        {"store": "store-b", "entries": 140, "placements": 34, "sessions": 14, "purchases": 14,
         "units": 16, "purchases_per_entry": 0.1}]
    # by day over two days: the day before holds only B's 999 entries
    d = client.get("/funnel", params={"start": D0 - 24 * H, "end": D0 + 24 * H, "bucket": "day"},
                   headers=auth).json()
    assert [(b["entries"], b["purchases"]) for b in d["buckets"]] == [(999, 9), (240, 20)]
    assert d["purchases_per_entry"] == round(29 / 1239, 4)

    # the route's guard and bounds
    assert client.get("/funnel", params={"start": D0, "end": D0 + H}).status_code == 401
    for bad in ({"start": D0 + 1, "end": D0 + H}, {"start": D0 + H, "end": D0},
                {"start": D0, "end": D0 + 32 * 24 * H}):
        r = client.get("/funnel", params=bad, headers=auth)
        assert r.status_code == 422, bad


@pytest.mark.parametrize("counts", [
    {"hour": D0 + 1}, {"hour": "x"}, {"entries": -1}, {"purchases": 1.5},
    {"units": 10_000_001}, {"hour": int(datetime(2019, 1, 1, tzinfo=UTC).timestamp() * 1000)},
])
def test_bad_hour_reports_are_refused(counts):
    data = {"type": "hour", "hour": D0, **dict.fromkeys(COLS, 0), **counts}
    row = {"id": 1, "stream_id": 1, "type": "analytics.hour", "created": D0 + H,
           "data": json.dumps(data)}
    with pytest.raises(Refused) as exc:
        parse("chain/1/store-a/analytics/gateway", chain_payload("store-a", row))
    assert exc.value.reason == "bad_funnel"
