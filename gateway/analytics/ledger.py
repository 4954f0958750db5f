"""The store-wide purchase ledger and the entries table: validation, the CSV import of a day's
receipts, and the writes (writer thread), each with its rollup rows in the same transaction.

Purchases are idempotent by receipt id: a receipt already in the ledger is left as it was
(the POS retried), whatever the retry says. Entries are counted per (source, minute):
`add_entries` adds (`POST /fitting/footfall`: "people who came in since the last report"),
`set_entries` replaces (a door counter's per-minute total: a replayed minute after an outage
replaces itself, never counts twice).
"""
from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.analytics.rollup import Deltas
from gateway.kinds.fitting_room import gs1
from gateway.storage.store import Store

#: a kind's entries hook (gateway/kinds/base.py DeviceKind.entries, handed over by gateway/app.py):
#: (store, cursor, limit) -> ([(source, minute, n)], new cursor)
EntriesSource = Callable[[Store, int, int], tuple[list[tuple[str, int, int]], int]]

MINUTE = 60_000
log = logging.getLogger("gateway.analytics")
MAX_QTY = 1000
MAX_RECEIPT = 64
MAX_CSV_LINES = 50_000        # data lines in one import (a busy store's day is ~5,000)
CSV_COLUMNS = ("receipt", "at", "gtin", "qty")


class LedgerError(ValueError):
    """A refused purchase or import; `line` is the CSV line (1 = the header), if any."""

    def __init__(self, reason: str, detail: str, line: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.line = line


@dataclass(frozen=True)
class Receipt:
    receipt: str
    at: int                               # unix ms
    items: tuple[tuple[str, int], ...]    # (GTIN-14, qty)


def gtin14(gtin: str) -> str:
    try:
        return gs1.normalise_gtin(gtin)
    except gs1.Gs1Error as exc:
        raise LedgerError("bad-gtin", str(exc)) from None


def parse_at(text: str) -> int:
    """Unix ms, or ISO 8601 with a UTC offset (`2026-11-23T09:12:00+01:00`, `...Z`)."""
    t = text.strip()
    if t.isdigit():
        return int(t)
    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00") if t.endswith("Z") else t)
    except ValueError:
        raise ValueError(f"at {text!r} is neither unix ms nor ISO 8601 "
                         "(e.g. 2026-11-23T09:12:00+01:00)") from None
    if d.tzinfo is None:
        raise ValueError(f"at {text!r} has no UTC offset: add the store's, e.g. {t}+01:00 or {t}Z")
    return int(d.timestamp() * 1000)


def parse_receipts_csv(data: bytes) -> list[Receipt]:
    """A day's receipts as CSV: a header naming `receipt`, `at`, `gtin` and optionally `qty`
    (default 1), in any order (other columns are ignored), then one line per receipt line;
    lines of one receipt share its `at`. All or nothing: the first bad line raises LedgerError
    with its number and what is wrong."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LedgerError("bad-csv", f"the CSV is not UTF-8 (byte {exc.start}): export it as "
                                     "UTF-8", line=None) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise LedgerError("bad-csv", f"line 1: {exc}", 1) from None
    if header is None or not any(h.strip() for h in header):
        raise LedgerError("bad-header", "line 1: the CSV is empty: expected a header "
                                        "`receipt,at,gtin,qty`", 1)
    names = [h.strip().lower() for h in header]
    if len(names) == 1 and ";" in names[0]:
        raise LedgerError("bad-header", "line 1: columns are separated by `;`: use `,` "
                                        "(header `receipt,at,gtin,qty`)", 1)
    missing = [c for c in CSV_COLUMNS[:3] if c not in names]
    if missing:
        raise LedgerError("bad-header", f"line 1: the header lacks {', '.join(missing)}: "
                                        f"expected `receipt,at,gtin,qty` (got {','.join(names)})", 1)
    dupes = sorted({n for n in names if names.count(n) > 1 and n in CSV_COLUMNS})
    if dupes:
        raise LedgerError("bad-header", f"line 1: column {dupes[0]} appears twice", 1)
    col = {c: names.index(c) for c in CSV_COLUMNS if c in names}
    receipts: dict[str, tuple[int, list[tuple[str, int]], int]] = {}  # id -> at, items, line
    count = 0
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            raise LedgerError("bad-csv", f"line {reader.line_num}: {exc}", reader.line_num) from None
        if row is None:
            break
        line = reader.line_num
        if not any(f.strip() for f in row):
            continue
        count += 1
        if count > MAX_CSV_LINES:
            raise LedgerError("too-many-lines", f"line {line}: more than {MAX_CSV_LINES} receipt "
                                                "lines: split the file", line)
        if len(row) < len(names):
            raise LedgerError("bad-line", f"line {line}: {len(row)} fields, the header has "
                                          f"{len(names)}", line)
        fields = {c: row[i].strip() for c, i in col.items()}
        rid = fields["receipt"]
        if not rid or len(rid) > MAX_RECEIPT:
            raise LedgerError("bad-receipt", f"line {line}: receipt id must be 1-{MAX_RECEIPT} "
                                             f"characters, got {rid!r}", line)
        try:
            at = parse_at(fields["at"])
        except ValueError as exc:
            raise LedgerError("bad-at", f"line {line}: {exc}", line) from None
        try:
            gtin = gtin14(fields["gtin"])
        except LedgerError as exc:
            raise LedgerError("bad-gtin", f"line {line}: {exc}", line) from None
        q = fields.get("qty", "")
        if q and not (q.isdigit() and 1 <= int(q) <= MAX_QTY):
            raise LedgerError("bad-qty", f"line {line}: qty {q!r} must be a whole number "
                                         f"1-{MAX_QTY}", line)
        qty = int(q) if q else 1
        if rid in receipts and receipts[rid][0] != at:
            raise LedgerError("bad-at", f"line {line}: receipt {rid} has at {at} here and "
                                        f"{receipts[rid][0]} on line {receipts[rid][2]}: one "
                                        "time per receipt", line)
        receipts.setdefault(rid, (at, [], line))[1].append((gtin, qty))
    if not receipts:
        raise LedgerError("no-receipts", "the CSV has a header but no receipt lines", None)
    return [Receipt(rid, at, tuple(items)) for rid, (at, items, _) in receipts.items()]


# -- writes (writer thread) ------------------------------------------------------------------

def _purchase_row(row: Any) -> dict[str, Any]:
    return {"receipt": row[0], "at": row[1], "lines": json.loads(row[2])}


def get_purchase(store: Store, receipt: str) -> dict[str, Any] | None:
    row = store.conn.execute("SELECT receipt, at, lines FROM purchases WHERE receipt = ?",
                             (receipt,)).fetchone()
    return None if row is None else _purchase_row(row)


def record_purchases(store: Store, purchases: list[dict[str, Any]], source: str, now: int
                     ) -> list[tuple[dict[str, Any], bool]]:
    """Insert each purchase (`{"receipt", "at", "lines": [{gtin, qty, sessions}]}`) that is not
    in the ledger yet, with its rollup rows, in ONE transaction. Returns (the ledger's record,
    new?) per purchase, in order."""
    out = []
    d = Deltas()
    with store.transaction():
        for p in purchases:
            old = get_purchase(store, p["receipt"])
            if old is not None:
                out.append((old, False))
                continue
            units = sum(int(line["qty"]) for line in p["lines"])
            store.conn.execute(
                "INSERT INTO purchases (receipt, at, lines, units, source, recorded) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (p["receipt"], p["at"], json.dumps(p["lines"], separators=(",", ":")), units,
                 source, now))
            d.hour(p["at"], purchases=1, units=units)
            for line in p["lines"]:
                d.product(p["at"], line["gtin"], bought=int(line["qty"]))
            out.append(({"receipt": p["receipt"], "at": p["at"], "lines": p["lines"]}, True))
        d.flush(store)
    return out


def add_entries(store: Store, source: str, at: int, n: int) -> None:
    """`n` more people came in at `at` (unix ms), by `source`."""
    minute = at - at % MINUTE
    with store.transaction():
        store.conn.execute("INSERT INTO entries (source, minute, n) VALUES (?, ?, ?) ON CONFLICT "
                           "(source, minute) DO UPDATE SET n = n + excluded.n", (source, minute, n))
        d = Deltas()
        d.hour(minute, entries=n)
        d.flush(store)


def set_entries(store: Store, source: str, minute: int, n: int) -> int:
    """The hook for a door counter: `n` people came in during the minute starting at `minute`
    (unix ms, a whole minute), counted by `source` (its device id). Replaces what that source
    said for that minute (a replay changes nothing) and moves the hour's rollup by the
    difference. Call it on the writer thread (inside the caller's transaction is fine: it
    nests). Returns the change."""
    if minute % MINUTE:
        raise ValueError(f"minute {minute} is not a whole minute (unix ms, multiple of 60000)")
    if n < 0:
        raise ValueError("entries cannot be negative")
    with store.transaction():
        row = store.conn.execute("SELECT n FROM entries WHERE source = ? AND minute = ?",
                                 (source, minute)).fetchone()
        delta = n - (row[0] if row else 0)
        if delta:
            store.conn.execute("INSERT INTO entries (source, minute, n) VALUES (?, ?, ?) ON "
                               "CONFLICT (source, minute) DO UPDATE SET n = excluded.n",
                               (source, minute, n))
            d = Deltas()
            d.hour(minute, entries=delta)
            d.flush(store)
    return delta



def sync_entries_tx(store: Store, sources: Mapping[str, EntriesSource], limit: int) -> int:
    """Writer thread: for each source (a kind's `entries` hook, by kind name), the minutes that
    changed since its cursor (`an_meta` `entries:<name>`) become entries through `set_entries`
    (which replaces: a minute read again counts once), with the new cursor, in ONE transaction
    (the caller's, if any). Returns the most rows one source gave (`limit` or more: call again)."""
    most = 0
    with store.transaction():
        for name, source in sources.items():
            key = f"entries:{name}"
            row = store.conn.execute("SELECT value FROM an_meta WHERE name = ?", (key,)).fetchone()
            after = int(row[0]) if row else 0
            rows, upto = source(store, after, limit)
            for src, minute, n in rows:
                try:
                    set_entries(store, src, minute, n)
                except ValueError as exc:  # one bad row must not stop the fold for good
                    log.warning("entries of %s not counted source=%s minute=%s n=%s: %s (a "
                                "defect of the kind's entries hook: report it)", name, src,
                                minute, n, exc)
            if upto != after:
                store.conn.execute("INSERT INTO an_meta (name, value) VALUES (?, ?) ON CONFLICT "
                                   "(name) DO UPDATE SET value = excluded.value", (key, upto))
            most = max(most, len(rows))
    return most
