"""The stream's `tag` column (migration 23, issue 18): the field the analytics fold and the
alerts' scan filter on, written with each item, so those readers leave a busy store's ordinary
events out without a `json_extract` per row; rows written before the column (NULL) are still
read through their JSON."""
from __future__ import annotations

import json

from gateway.analytics import rollup
from gateway.devices import alerts


def _stream(store) -> list[tuple[str, str | None]]:
    return [(r[0], r[1]) for r in store.conn.execute("SELECT kind, tag FROM stream ORDER BY id")]


def test_every_stream_item_carries_the_field_its_readers_filter_on(gw_store):
    with gw_store.transaction():
        gw_store.insert_events_many([  # the ingest's path: one executemany for the batch
            ("pad-1", "e1", 1, "tag.placed", 1, 1_000, {"gtin": "0400000000001"}),
            ("pad-1", "e1", 2, "heartbeat", 2, 1_001, {})])
        gw_store.insert_event("pad-1", "e1", 3, "tag.removed", 3, 1_002, {})  # one by one
        gw_store.append_stream("device", {"id": "pad-1", "change": "offline"})
        gw_store.append_stream("command", {"id": "c1", "change": "done", "type": "x"})
        gw_store.append_stream("alert", {"id": 7, "change": "raised"})  # no `type`
        gw_store.append_stream("device", {"id": "pad-1", "change": 5})  # not a string
    assert _stream(gw_store) == [("event", "tag.placed"), ("event", "heartbeat"),
                                 ("event", "tag.removed"), ("device", "offline"),
                                 ("command", "done"), ("alert", None), ("device", None)]


def _raw(store, kind: str, tag: str | None, data: dict) -> None:
    store.conn.execute("INSERT INTO stream (kind, tag, data) VALUES (?, ?, ?)",
                       (kind, tag, json.dumps(data)))


def test_the_fold_and_the_alerts_filter_by_the_column_and_old_rows_by_their_json(gw_store,
                                                                                 monkeypatch):
    placed = {"id": 1, "device": "pad-1", "type": "tag.placed", "t_gateway": 1_000, "body": {}}
    with gw_store.transaction():
        _raw(gw_store, "event", None, {**placed, "id": 1})            # before migration 23
        _raw(gw_store, "event", "heartbeat", {**placed, "id": 2})     # the column decides
        _raw(gw_store, "event", "tag.placed", {**placed, "id": 3})
        _raw(gw_store, "device", None, {"id": "pad-1", "change": "offline"})
        _raw(gw_store, "device", "updated", {"id": "pad-2", "change": "offline"})
        _raw(gw_store, "device", "offline", {"id": "pad-3", "change": "offline"})
    folded: list[tuple[str, dict]] = []
    monkeypatch.setattr(rollup, "fold_items", lambda store, items: folded.extend(items))
    assert rollup.fold_tx(gw_store) == 6  # every row looked at, the cursor past all of them
    assert [(k, d.get("id")) for k, d in folded] == [
        ("event", 1), ("event", 3), ("device", "pad-1"), ("device", "pad-2"), ("device", "pad-3")]
    items, upto = alerts.pending(gw_store, 0)
    assert [(i.kind, i.data["id"]) for i in items] == [("device", "pad-1"), ("device", "pad-3")]
    assert upto == gw_store.last_stream_id()
