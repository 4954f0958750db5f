"""Store analytics (docs/analytics.md): the funnel from entries to purchases, per hour and per
day, per product, per device, the tube's delivery times and the lockers' dwell.

A tier, not a device kind: it reads what the kinds already write (their stream items, in
`stream` order from a persisted cursor) and keeps rollups in its own tables (storage migration
13); it owns the store-wide purchase ledger (`POST /purchases`, the CSV import) and the entries
table, fed by the kinds' `entries` hooks (a door counter's minutes: `ledger.sync_entries_tx`,
in the fold's transaction; the app hands the hooks over). Kinds never import it;
it imports storage, devices, the HTTP helpers and the GS1 module of the fitting rooms; the app
(gateway/app.py) hands it the fitting rooms' attribution, so a receipt still converts try-ons.

    ledger.py   purchases and entries: validation, the CSV import, writes (with their rollups)
    rollup.py   stream items -> rollup rows (the writer-thread fold, idempotent by its cursor)
    queries.py  the figures the API serves, from the rollups
    charts.py   server-side SVG charts of those figures (no JavaScript library to ship)
    service.py  AnalyticsService: the fold's task, purchases, footfall
    api.py      the routes: /purchases, /analytics/..., /dashboard/analytics
"""
from __future__ import annotations

#: Rows of gateway.http.auth.POLICY for the analytics routes (method, path pattern, scopes).
AUTH: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("POST", "/purchases", ("operations",)),     # POS receipts and their CSV import
    ("GET", "/analytics", ("read",)),            # figures, CSV exports and charts
)
