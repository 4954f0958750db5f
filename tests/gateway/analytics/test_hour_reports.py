"""The store's hour reports for head office's chain-wide funnel (docs/chain.md "The chain-wide
funnel"): every hour whose funnel figures changed — by the fold (pad placements), a purchase
or door entries — becomes one `analytics` stream item with the hour's TOTALS, once per change
batch; the chain hook turns it into a chain outbox row like any stream item."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from gateway.analytics import ledger
from gateway.analytics.rollup import fold_tx, report_hours_tx
from gateway.analytics.service import fold_and_sync_tx
from gateway.integrations.chain import ChainService
from gateway.kinds.fitting_room import gs1
from gateway.storage.store import MIGRATIONS, Store, connect, migrate

H = 3_600_000
T0 = int(datetime(2026, 11, 23, 9, tzinfo=UTC).timestamp() * 1000)   # 09:00 UTC
A = "0950600013435" + str(gs1.check_digit("0950600013435"))


def _store(tmp_path) -> Store:
    conn = connect(tmp_path / "gw.db")
    migrate(conn)
    return Store(conn)


def _reports(store: Store, after: int = 0) -> list[dict]:
    return [i.data for i in store.stream_after(after, 1000) if i.kind == "analytics"]


def _buy(store: Store, receipt: str, at: int, qty: int) -> None:
    ledger.record_purchases(store, [{"receipt": receipt, "at": at,
                                     "lines": [{"gtin": A, "qty": qty, "sessions": []}]}],
                            "api", at)


def test_changed_hours_are_reported_with_their_totals(tmp_path):
    store = _store(tmp_path)
    with store.transaction():
        store.upsert_device(id="pad-1", kind="sample-pad", fw="1", caps=[], cfg="x", session=1,
                            epoch="e", boot=1, reset=None, online=True, now=T0)
        for m in (5, 20):                                     # two placements at 09:05, 09:20
            store.append_stream("event", {"device": "pad-1", "type": "tag.placed",
                                          "t_device": T0 + m * 60_000, "t_gateway": T0 + m * 60_000,
                                          "body": {"uid": "04a1", "gtin": A}})
    _buy(store, "R1", T0 + 30 * 60_000, 2)                    # 09:30, 2 units
    ledger.add_entries(store, "door-1", T0 + 10 * 60_000, 7)  # 09:10, 7 people
    ledger.add_entries(store, "door-1", T0 + H + 60_000, 3)   # 10:01, 3 people
    with store.transaction():
        while fold_tx(store):
            pass
    mark = store.last_stream_id()
    with store.transaction():
        assert report_hours_tx(store) == 2
    got = _reports(store, mark)
    zero = dict.fromkeys(("pad_lifts", "pad_dwell_ms", "sessions", "try_ons"), 0)
    assert got == [
        {"type": "hour", "hour": T0, "entries": 7, "placements": 2, "purchases": 1, "units": 2,
         **zero},
        {"type": "hour", "hour": T0 + H, "entries": 3, "placements": 0, "purchases": 0,
         "units": 0, **zero}]
    # nothing changed: nothing reported
    with store.transaction():
        assert report_hours_tx(store) == 0
    # another purchase at 09:45: 09:00 again, with the new totals (not the increment)
    mark = store.last_stream_id()
    _buy(store, "R2", T0 + 45 * 60_000, 1)
    _buy(store, "R1", T0 + 30 * 60_000, 2)                    # a retry: changes nothing
    with store.transaction():
        assert report_hours_tx(store) == 1
    assert [(r["hour"], r["purchases"], r["units"], r["entries"]) for r in _reports(store, mark)] \
        == [(T0, 2, 3, 7)]


def test_reports_go_to_the_chain_outbox_when_the_chain_is_on(tmp_path):
    store = _store(tmp_path)

    async def never(*_a, **_k):
        raise AssertionError("not called")

    chain = ChainService(None, never, never, "store-0042")    # type: ignore[arg-type]
    store.stream_hooks.append(chain.hook)
    _buy(store, "R1", T0, 1)
    assert fold_and_sync_tx(store, 100, {}, report=False)[1] == 0
    assert store.conn.execute("SELECT COUNT(*) FROM chain_outbox WHERE type = 'analytics.hour'"
                              ).fetchone()[0] == 0            # the chain off: no report
    fold_and_sync_tx(store, 100, {}, report=True)
    rows = store.conn.execute("SELECT topic, type, data FROM chain_outbox "
                              "WHERE type = 'analytics.hour'").fetchall()
    assert [(r[0], r[1], json.loads(r[2])["purchases"]) for r in rows] == \
        [("chain/1/store-0042/analytics/gateway", "analytics.hour", 1)]


def test_an_upgraded_store_reports_its_history(tmp_path):
    conn = connect(tmp_path / "old.db")
    migrate(conn, len(MIGRATIONS) - 1)                        # before the dirty-hours table
    conn.execute("INSERT INTO an_hour (hour, purchases, units) VALUES (?, 4, 5), (?, 1, 1)",
                 (T0, T0 + H))
    migrate(conn)
    store = Store(conn)
    with store.transaction():
        assert report_hours_tx(store) == 2
    assert [(r["hour"], r["purchases"]) for r in _reports(store)] == [(T0, 4), (T0 + H, 1)]
