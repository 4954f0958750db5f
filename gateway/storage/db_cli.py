"""`phygital db stats|backup|vacuum --db var/gw.db`: a gateway database, for the operator.

* `stats`: per table its rows, its bytes (SQLite's `dbstat`, which reads every page: seconds
  on a large file), its oldest row's time, the rows written in the last 24 hours and what that
  makes per day; the file, its WAL, its free pages and its auto-vacuum mode. Read-only, safe
  while the gateway runs.
The commands live in a file of their own beside it (`gw.commands.db` beside `gw.db`, issue
18): each command covers both files.

* `backup --to FILE`: SQLite's online backup API in ONE step from a read transaction: a
  consistent copy of the last commit, taken while the gateway runs (in WAL mode a reader never
  blocks the writer; a copy made in several steps would restart at every commit of a busy
  gateway). The copy is checked (`quick_check`) and left in rollback-journal mode, one
  self-contained file; a gateway started on it (`--db FILE`) migrates it as any database.
* `vacuum`: rewrites the file once (`VACUUM`) in incremental auto-vacuum, so retention
  (gateway/storage/retention.py) can give freed pages back to the file system. Not a migration:
  VACUUM rewrites the whole file, it needs up to twice its size free (the new copy goes through
  the WAL), it cannot run inside the migration's transaction, and it holds the writer for
  minutes on a large database (devices unacknowledged all along). So the operator chooses when,
  with the gateway stopped; the command refuses while another process has the file open.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from gateway.storage.store import commands_path, connect

DAY_MS = 86_400_000
#: tables whose rows carry a unix-ms time that grows with the rowid: oldest row, last 24 hours
TIME_COLUMNS = {"events": "t_gateway", "commands": "created", "audit": "t", "alerts": "created",
                "webhook_deliveries": "created", "chain_outbox": "created", "purchases": "recorded",
                "tube_jobs": "updated"}
AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}


class DbError(Exception):
    """A refusal: the message says what to do."""


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]


def _first_rowid_since(conn: sqlite3.Connection, table: str, col: str, since: int) -> int | None:
    """The first rowid whose `col` >= since, by bisection over the rowids (times grow with
    them): ~30 index lookups, no scan."""
    lo_row = conn.execute(f"SELECT MIN(rowid), MAX(rowid) FROM {table}").fetchone()
    if lo_row[0] is None:
        return None
    lo, hi = int(lo_row[0]), int(lo_row[1])
    last = conn.execute(f"SELECT {col} FROM {table} WHERE rowid = ?", (hi,)).fetchone()
    if last[0] is None or last[0] < since:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(f"SELECT rowid, {col} FROM {table} WHERE rowid >= ? ORDER BY rowid "
                           "LIMIT 1", (mid,)).fetchone()
        if row[1] is not None and row[1] >= since:
            hi = mid
        else:
            lo = int(row[0]) + 1
    return lo


def stats(path: Path, now_ms: int | None = None, sizes: bool = True) -> dict[str, Any]:
    """The gateway's file, and its command file (`commands_file`, issue 18) if it has one."""
    if not path.exists():
        raise DbError(f"{path}: no such database (give the gateway's --db)")
    out = _file_stats(path, now_ms, sizes)
    cpath = commands_path(path)
    out["commands_file"] = _file_stats(cpath, now_ms, sizes) if cpath.exists() else None
    return out


def _file_stats(path: Path, now_ms: int | None, sizes: bool) -> dict[str, Any]:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    conn = connect(path, readonly=True)
    try:
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        by_name: dict[str, int] = {}
        if sizes:
            try:
                for name, size in conn.execute(
                        "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
                    by_name[name] = int(size)
            except sqlite3.OperationalError:  # SQLite built without dbstat
                by_name = {}
        index_of = {r[0]: r[1] for r in conn.execute(
            "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'index'")}
        table_bytes: dict[str, int] = {}
        for name, size in by_name.items():  # an index's pages count for its table
            owner = index_of.get(name, name)
            table_bytes[owner] = table_bytes.get(owner, 0) + size
        tables: list[dict[str, Any]] = []
        for table in _tables(conn):
            rows = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            entry: dict[str, Any] = {"table": table, "rows": rows,
                                     "bytes": table_bytes.get(table) if sizes and by_name else None,
                                     "oldest": None, "last_24h": None, "bytes_per_day": None}
            col = TIME_COLUMNS.get(table)
            if col is not None and rows:
                oldest = conn.execute(f"SELECT {col} FROM {table} ORDER BY rowid LIMIT 1").fetchone()
                entry["oldest"] = oldest[0]
                first = _first_rowid_since(conn, table, col, now - DAY_MS)
                day = 0 if first is None else int(conn.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE rowid >= ?", (first,)).fetchone()[0])
                entry["last_24h"] = day
                if entry["bytes"] is not None:
                    entry["bytes_per_day"] = round(entry["bytes"] / rows * day)
            tables.append(entry)
        wal = path.with_name(path.name + "-wal")
        return {"path": str(path), "file_bytes": path.stat().st_size,
                "wal_bytes": wal.stat().st_size if wal.exists() else 0,
                "page_size": page,
                "pages": int(conn.execute("PRAGMA page_count").fetchone()[0]),
                "free_pages": int(conn.execute("PRAGMA freelist_count").fetchone()[0]),
                "auto_vacuum": AUTO_VACUUM.get(int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]),
                                               "?"),
                "schema": int(conn.execute("PRAGMA user_version").fetchone()[0]),
                "tables": tables}
    finally:
        conn.close()


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


def format_stats(s: dict[str, Any]) -> str:
    lines = [(f"{s['path']}: schema v{s['schema']}, {_mb(s['file_bytes'])} MB "
             f"(+ WAL {_mb(s['wal_bytes'])} MB), {s['pages']} pages of {s['page_size']} B, "
             f"{s['free_pages']} free, auto_vacuum {s['auto_vacuum']}"),
             (f"{'table':<24} {'rows':>12} {'MB':>9} {'oldest (UTC)':>17} {'last 24 h':>10} "
             f"{'MB/day':>8}")]
    for t in sorted(s["tables"], key=lambda t: -(t["bytes"] or 0)):
        lines.append(f"{t['table']:<24} {t['rows']:>12} {_mb(t['bytes']):>9} "
                     f"{_when(t['oldest']):>17} {'-' if t['last_24h'] is None else t['last_24h']:>10} "
                     f"{_mb(t['bytes_per_day']):>8}")
    if s["auto_vacuum"] != "incremental":
        lines.append("note: not in incremental auto-vacuum: pruned space is reused but the file "
                     "never shrinks; stop the gateway and run `phygital db vacuum` once")
    if s.get("commands_file"):
        lines += ["", format_stats(s["commands_file"])]
    return "\n".join(lines)


def backup(path: Path, to: Path) -> dict[str, Any]:
    """Copy `path` to `to` (a new file) with the online backup API, then its command file to
    `commands_path(to)`; returns what was copied.

    The command file is copied second, so it is at least as new as the copy of the gateway's
    file: the order a crash between their commits leaves too (a kind's commands are committed
    before its state, `StatefulService._save`), which a gateway started on the copy handles.
    (A command's stream item copied into the main stream and dropped from the command file
    between the two copies is in neither: its command is, with its outcome.)"""
    if not path.exists():
        raise DbError(f"{path}: no such database (give the gateway's --db)")
    for p in (to, commands_path(to)):
        if p.exists():
            raise DbError(f"{p} exists: give a new file name (a backup never overwrites)")
    r = _backup_file(path, to)
    cpath = commands_path(path)
    if cpath.exists():
        c = _backup_file(cpath, commands_path(to))
        r["commands_to"], r["bytes"] = c["to"], r["bytes"] + c["bytes"]
        r["seconds"] = round(r["seconds"] + c["seconds"], 3)
    return r


def _backup_file(path: Path, to: Path) -> dict[str, Any]:
    if not to.parent.is_dir():
        raise DbError(f"{to.parent}: no such folder")
    size = path.stat().st_size
    free = shutil.disk_usage(to.parent).free
    if free < size * 1.1:
        raise DbError(f"{to.parent}: {free / 1e6:.0f} MB free, the database is {size / 1e6:.0f} MB: "
                      "back up to another disk or free space first")
    t0 = time.perf_counter()
    src = connect(path, readonly=True)
    part = to.with_name(to.name + ".part")
    part.unlink(missing_ok=True)
    try:
        dst = sqlite3.connect(str(part), isolation_level=None)
        try:
            src.backup(dst, pages=-1)  # one step: one snapshot, never restarted by a commit
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise DbError(f"the copy failed its check ({check}); {path} was not changed")
            version = int(dst.execute("PRAGMA user_version").fetchone()[0])
        finally:
            dst.close()
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    part.rename(to)
    return {"from": str(path), "to": str(to), "bytes": to.stat().st_size, "schema": version,
            "seconds": round(time.perf_counter() - t0, 3)}


def vacuum(path: Path) -> dict[str, Any]:
    """Rewrite the file once in incremental auto-vacuum (the gateway must be stopped), then its
    command file."""
    if not path.exists():
        raise DbError(f"{path}: no such database (give the gateway's --db)")
    r = _vacuum_file(path)
    cpath = commands_path(path)
    if cpath.exists():
        c = _vacuum_file(cpath)
        for k in ("bytes_before", "bytes_after", "seconds"):
            r[k] += c[k]
    return r


def _vacuum_file(path: Path) -> dict[str, Any]:
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    free = shutil.disk_usage(path.parent).free
    if free < size * 2.1:
        raise DbError(f"{path.parent}: {free / 1e6:.0f} MB free; VACUUM needs about twice the "
                      f"database's {size / 1e6:.0f} MB: free space first")
    conn = connect(path)  # sets auto_vacuum = INCREMENTAL: VACUUM applies it
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        try:
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("COMMIT")
        except sqlite3.OperationalError:
            raise DbError(f"{path} is open in another process (the gateway?): stop it, then run "
                          "`phygital db vacuum` again") from None
        before = path.stat().st_size
        t0 = time.perf_counter()
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        mode = AUTO_VACUUM.get(int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]), "?")
    finally:
        conn.close()
    return {"path": str(path), "bytes_before": before, "bytes_after": path.stat().st_size,
            "auto_vacuum": mode, "seconds": round(time.perf_counter() - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="phygital db",
                                 description="a gateway database: sizes, backup, vacuum")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stats", help="rows, MB, oldest row and growth per day of each table "
                        "(read-only, safe while the gateway runs)")
    st.add_argument("--db", type=Path, default=Path("var/gw.db"),
                    help="the gateway's SQLite file (default var/gw.db)")
    st.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    st.add_argument("--no-sizes", action="store_true",
                    help="skip the per-table sizes (dbstat reads every page of the file)")
    bk = sub.add_parser("backup", help="a consistent copy while the gateway runs "
                        "(SQLite online backup)")
    bk.add_argument("--db", type=Path, default=Path("var/gw.db"),
                    help="the gateway's SQLite file (default var/gw.db)")
    bk.add_argument("--to", type=Path, required=True,
                    help="the copy: a new file (never overwritten); start a gateway with "
                    "--db FILE to restore")
    vc = sub.add_parser("vacuum", help="rewrite the file once in incremental auto-vacuum "
                        "(stop the gateway first; needs twice the file's size free)")
    vc.add_argument("--db", type=Path, default=Path("var/gw.db"),
                    help="the gateway's SQLite file (default var/gw.db)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "stats":
            s = stats(args.db, sizes=not args.no_sizes)
            print(json.dumps(s, indent=2) if args.json else format_stats(s))
        elif args.cmd == "backup":
            r = backup(args.db, args.to)
            also = f" and {r['commands_to']}" if r.get("commands_to") else ""
            print(f"{r['to']}{also}: {_mb(r['bytes'])} MB, schema v{r['schema']}, "
                  f"{r['seconds']} s (restore: start the gateway with --db {r['to']})")
        else:
            r = vacuum(args.db)
            print(f"{r['path']}: {_mb(r['bytes_before'])} MB -> {_mb(r['bytes_after'])} MB, "
                  f"auto_vacuum {r['auto_vacuum']}, {r['seconds']} s")
    except DbError as exc:
        print(f"phygital db {args.cmd}: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"phygital db {args.cmd}: {args.db}: {exc}", file=sys.stderr)
        return 2
    return 0
