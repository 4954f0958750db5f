"""Per-product figures over long ranges read month rows (`an_product` period 'm', UTC calendar
months) with day and hour rows at the edges (docs/analytics.md): the same figures as the hour
rows give, across month boundaries (31-, 28- and 30-day months), and the month rows an
upgraded gateway builds from its day rows (storage migration 15) equal the ones the fold
writes."""
from __future__ import annotations

from datetime import UTC, datetime

from gateway.analytics import queries
from gateway.analytics.ledger import record_purchases
from gateway.analytics.rollup import fold_tx
from gateway.kinds.fitting_room import gs1
from gateway.storage.store import Store, connect, migrate

H = 3_600_000


def at(y: int, mo: int, d: int, hh: int = 0, mm: int = 0) -> int:
    return int(datetime(y, mo, d, hh, mm, tzinfo=UTC).timestamp() * 1000)


A = "0950600013435" + str(gs1.check_digit("0950600013435"))
# A bought once at each of these (each its own receipt); a pad placement of A at some
BOUGHT = [at(2027, 1, 31, 23, 30), at(2027, 2, 1, 0, 10), at(2027, 2, 15, 12), at(2027, 2, 28, 23, 59),
          at(2027, 3, 1, 0, 0), at(2027, 3, 31, 10), at(2027, 4, 1, 9), at(2027, 4, 30, 23, 1)]
PLACED = [at(2027, 1, 31, 23, 59), at(2027, 3, 1, 0, 1), at(2027, 4, 30, 12)]


def script(store: Store) -> None:
    with store.transaction():
        store.upsert_device(id="pad-1", kind="sample-pad", fw="1", caps=[], cfg="x", session=1,
                            epoch="e", boot=1, reset=None, online=True, now=PLACED[0])
        for t in PLACED:
            store.append_stream("event", {"device": "pad-1", "type": "tag.placed", "t_device": t,
                                          "t_gateway": t, "body": {"uid": "04a1", "gtin": A}})
    record_purchases(store, [{"receipt": f"R{i}", "at": t, "lines": [{"gtin": A, "qty": 1, "sessions": []}]}
                             for i, t in enumerate(BOUGHT)], "api", BOUGHT[-1])
    while fold_tx(store):
        pass


def figures(store: Store, lo: int, hi: int) -> tuple[int, int]:
    rows = queries.products(store, lo, hi)["products"]
    return (rows[0]["bought"], rows[0]["placed"]) if rows else (0, 0)


RANGES = [  # (start, end): hour-aligned, across month ends of 31, 28, 31 and 30 days
    (at(2027, 1, 1), at(2028, 1, 1)),                  # a year: months, no edges
    (at(2027, 1, 31, 23), at(2027, 4, 30, 23)),        # hour, days, months Feb-Mar, days, hours
    (at(2027, 2, 1), at(2027, 3, 1)),                  # exactly February
    (at(2027, 2, 1, 1), at(2027, 3, 31, 11)),          # not Feb 1 00:10, up to Mar 31 10:00
    (at(2027, 1, 15), at(2027, 2, 2)),                 # days only, across Feb 1
    (at(2027, 2, 28, 23), at(2027, 3, 1, 1)),          # two hours around Mar 1
    (at(2027, 3, 1, 1), at(2027, 5, 1)),               # April whole, March without its first hour
]


def test_month_rows_give_the_figures_the_hours_give_across_month_boundaries(gw_store):
    script(gw_store)
    for lo, hi in RANGES:
        want = (sum(lo <= t < hi for t in BOUGHT), sum(lo <= t < hi for t in PLACED))
        assert figures(gw_store, lo, hi) == want, (lo, hi)
    # a year reads 12 month rows per product, not 365 day rows
    assert [p for p, _, _ in queries.spans(at(2027, 1, 1), at(2028, 1, 1), months=True)] == ["m"]
    assert queries.spans(at(2027, 1, 31, 23), at(2027, 4, 30, 23), months=True) == [
        ("h", at(2027, 1, 31, 23), at(2027, 2, 1)), ("m", at(2027, 2, 1), at(2027, 4, 1)),
        ("d", at(2027, 4, 1), at(2027, 4, 30)), ("h", at(2027, 4, 30), at(2027, 4, 30, 23))]
    # every level sums to the same figures
    sums = {r[0]: r[1:] for r in gw_store.conn.execute(
        "SELECT period, SUM(placed), SUM(tried), SUM(bought), COUNT(*) FROM an_product GROUP BY period")}
    assert sums["h"][:3] == sums["d"][:3] == sums["m"][:3] == (3, 0, 8)
    assert sums["m"][3] == 4                              # January to April


def test_an_upgraded_gateway_builds_month_rows_from_its_day_rows(tmp_path):
    conn = connect(tmp_path / "gw.db")
    migrate(conn, upto=14)
    store = Store(conn)
    script(store)
    # the gateway before month rows wrote hours and days only
    assert conn.execute("DELETE FROM an_product WHERE period = 'm'").rowcount == 4
    migrate(conn)
    rows = conn.execute("SELECT t, product, placed, pad_dwell_ms, tried, bought FROM an_product "
                        "WHERE period = 'm' ORDER BY t").fetchall()
    fresh = connect(tmp_path / "fresh.db")
    migrate(fresh)
    script(Store(fresh))
    assert rows == fresh.execute("SELECT t, product, placed, pad_dwell_ms, tried, bought FROM "
                                 "an_product WHERE period = 'm' ORDER BY t").fetchall()
    assert [r[0] for r in rows] == [at(2027, 1, 1), at(2027, 2, 1), at(2027, 3, 1), at(2027, 4, 1)]
    for lo, hi in RANGES:
        assert figures(store, lo, hi) == figures(Store(fresh), lo, hi)
