"""`phygital schema --db var/gw.db`: which schema version a gateway database is at.

The version is SQLite's `PRAGMA user_version`, one step per entry of `store.MIGRATIONS`; the
gateway applies the missing steps when it opens the file. Read-only: safe while the gateway runs.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from gateway.storage.store import MIGRATIONS, connect


def describe(path: Path) -> tuple[int, str]:
    """(exit status, one line for the operator) for the database at `path`."""
    if not path.exists():
        return 2, f"{path}: no such database (the gateway creates it at v{len(MIGRATIONS)} on start)"
    try:
        conn = connect(path, readonly=True)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return 2, f"{path}: not a readable SQLite database ({exc})"
    newest = len(MIGRATIONS)
    if version > newest:
        return 1, (f"{path}: schema v{version}, newer than this gateway (v{newest}): "
                   "upgrade the gateway before starting it on this file")
    if version < newest:
        return 0, (f"{path}: schema v{version}; this gateway: v{newest} "
                   f"(applies v{version + 1}..v{newest} when it next opens the file)")
    return 0, f"{path}: schema v{version}; this gateway: v{newest} (up to date)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="phygital schema",
                                 description="show a gateway database's schema version")
    ap.add_argument("--db", type=Path, default=Path("var/gw.db"),
                    help="the gateway's SQLite file (default var/gw.db)")
    args = ap.parse_args(argv)
    status, line = describe(args.db)
    print(line, file=sys.stderr if status else sys.stdout)
    return status
