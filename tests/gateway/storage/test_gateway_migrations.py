"""Every table comes from a numbered migration (gateway/storage/store.py), including on a store upgraded
from a gateway whose services created their tables on start; `phygital schema` reports it."""
import asyncio
import json
import sqlite3

import pytest

from gateway.http import auth
from gateway.integrations import chain, webhooks
from gateway.kinds.fitting_room import service as fitting
from gateway.kinds.tube import service as tube
from gateway.storage.db import Database
from gateway.storage.store import (
    COMMAND_SPLIT,
    MIGRATIONS,
    Store,
    commands_path,
    connect,
    connect_all,
    migrate,
    migrate_all,
    migrate_commands,
)
from tools.cli import main as phygital

# What the services of a v4 gateway ran on start (before v5..v9 existed), verbatim: the test
# builds a database the way that code did, not with today's migrations.
OLD_SERVICE_DDL = {
    "tube": ["""CREATE TABLE IF NOT EXISTS tube_state (
        network TEXT PRIMARY KEY,
        state   TEXT NOT NULL,
        cursor  INTEGER NOT NULL,
        updated INTEGER NOT NULL)""",
             """CREATE TABLE IF NOT EXISTS tube_jobs (
        id      TEXT PRIMARY KEY,
        data    TEXT NOT NULL,
        updated INTEGER NOT NULL)"""],
    "fitting": ["""CREATE TABLE IF NOT EXISTS fitting (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    state   TEXT NOT NULL,
    cursor  INTEGER NOT NULL,
    updated INTEGER NOT NULL)"""],
    "webhooks": ["""CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    events      TEXT NOT NULL,
    description TEXT,
    created     INTEGER NOT NULL,
    delivered   INTEGER NOT NULL DEFAULT 0,
    failures    INTEGER NOT NULL DEFAULT 0,
    failing     INTEGER NOT NULL DEFAULT 0,
    last_attempt INTEGER,
    last_success INTEGER,
    last_error  TEXT)""",
                 """CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sub         TEXT NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
    stream_id   INTEGER NOT NULL,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created     INTEGER NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    last_attempt INTEGER,
    last_code   INTEGER,
    last_error  TEXT,
    delivered_at INTEGER)""",
                 """CREATE INDEX IF NOT EXISTS webhook_pending ON webhook_deliveries (sub, id)
    WHERE status = 'pending'"""],
    "auth": ["""CREATE TABLE IF NOT EXISTS api_tokens (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    scopes  TEXT NOT NULL,
    hash    TEXT NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER)""",
             """CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY,
    t       INTEGER NOT NULL,
    who     TEXT NOT NULL,
    token   TEXT,
    ip      TEXT,
    method  TEXT NOT NULL,
    path    TEXT NOT NULL,
    status  INTEGER NOT NULL,
    outcome TEXT)"""],
    # (no chain: that store never configured [chain], so it has no chain_outbox)
}


def tables(conn: sqlite3.Connection) -> dict[str, str]:
    """name -> type of every table and index (SQLite's own ones left out)."""
    return {r[0]: r[1] for r in conn.execute(
        "SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}


def old_v4_store(path) -> None:
    """A store database as the v4 gateway left it: v1..v4 migrations, then the services'
    tables, with rows in them."""
    conn = connect(path)
    assert migrate(conn, upto=4) == 4
    for ddl in OLD_SERVICE_DDL.values():
        for stmt in ddl:
            conn.execute(stmt)
    conn.execute("INSERT INTO tube_state VALUES ('line-1', ?, 41, 1000)",
                 (json.dumps({"arbiter": {"jobs": []}, "meta": {"m": 1}}),))
    conn.execute("INSERT INTO tube_jobs VALUES ('job-1', ?, 1000)", (json.dumps({"id": "job-1", "final": 0}),))
    conn.execute("INSERT INTO fitting VALUES (1, ?, 17, 1000)", (json.dumps({"rooms": {}}),))
    conn.execute("INSERT INTO webhook_subscriptions (id, url, secret, events, created) "
                 "VALUES ('wh-1', 'http://pos.local/hook', 's3cret', '[\"locker.*\"]', 1000)")
    conn.execute("INSERT INTO webhook_deliveries (sub, stream_id, type, data, created, next_at) "
                 "VALUES ('wh-1', 5, 'locker.ready', '{}', 1000, 1000)")
    auth.create_token(conn, "kiosk-1", ["read"], token="pe_abc123_secretpart", now=1000)
    conn.close()


def test_a_fresh_database_gets_every_table_from_the_migrations(tmp_path):
    conn = connect(tmp_path / "gw.db")
    assert migrate(conn) == len(MIGRATIONS) == 23
    got = tables(conn)
    for name in ("tube_state", "tube_jobs", "fitting", "webhook_subscriptions",
                 "webhook_deliveries", "chain_outbox", "api_tokens", "audit", "alerts", "fw_rollouts",
                 "fw_cursor", "an_hour_dirty"):
        assert got.get(name) == "table", name
    assert got.get("webhook_pending") == "index"
    for name in ("events_by_device_type", "audit_by_who", "alerts_by_state", "webhook_by_sub",
                 "webhook_by_sub_status"):                    # v20: issue 17's read plans
        assert got.get(name) == "index", name
    assert got.get("queue_counts") == "table"
    assert "commands" not in got  # v22: in the command file (`migrate_all`)
    conn.close()


def _v21_with_commands(path):
    """A v21 gateway file with two commands in its own `commands` table (before the split)."""
    conn = connect(path)
    migrate(conn, upto=COMMAND_SPLIT - 1)
    conn.execute("INSERT INTO devices VALUES ('pad-1','sample-pad','0','[]','0',1,'e1',1,NULL,1,1,1)")
    conn.execute("""INSERT INTO commands (id, device, name, args, idem_key, status, deadline,
                    created, updated) VALUES ('c-1','pad-1','blink','{}','k1','done',5,1,2),
                    ('c-2','pad-1','blink','{}','k2','queued',5,1,1)""")
    conn.close()


def test_the_commands_move_to_their_own_file_and_a_crash_midway_loses_none(tmp_path):
    """Issue 18, session 11: v22 moves `commands` to the command file beside the gateway's.
    The rows are committed there before they are dropped here, so a crash between the two
    steps (simulated: the copy done, the drop not) copies them again without duplicates."""
    path = tmp_path / "gw.db"
    _v21_with_commands(path)
    # the crash: the copy committed in the command file, the gateway's file still at v21
    conn = connect(path)
    conn.execute("ATTACH DATABASE ? AS cmds", (str(commands_path(path)),))
    cconn = connect(commands_path(path))
    migrate_commands(cconn)
    cconn.close()
    conn.execute("INSERT INTO cmds.commands (id, device, name, args, idem_key, status, deadline, "
                 "created, updated) SELECT id, device, name, args, idem_key, status, deadline, "
                 "created, updated FROM main.commands")
    conn.execute("DETACH DATABASE cmds")
    conn.close()
    # the next start
    conn = connect(path)
    assert migrate_all(conn, path) == len(MIGRATIONS) > COMMAND_SPLIT
    assert "commands" not in tables(conn)
    conn.close()
    store = Store(connect_all(path))
    assert [(c["id"], c["status"]) for c in store.pending_commands()] == [("c-2", "queued")]
    assert store.get_command("c-1")["status"] == "done"
    assert store.count_commands() == {"done": 1, "queued": 1}  # the triggers counted each once
    store.conn.close()


def test_the_gateway_opens_an_old_file_with_its_commands(tmp_path):
    path = tmp_path / "gw.db"
    _v21_with_commands(path)

    async def opened():
        async with Database(path) as db:
            assert db.commands is not None
            return (await db.commands.read(Store.get_command, "c-2"),
                    await db.read(Store.devices_with_acks))

    cmd, devices = asyncio.run(opened())
    assert cmd is not None and cmd["status"] == "queued"
    assert devices[0]["pending_commands"] == ["c-2"]  # the gateway's reader sees the file


def test_a_store_upgraded_from_service_created_tables_keeps_its_data(tmp_path):
    old_v4_store(tmp_path / "gw.db")

    async def upgraded():
        # the gateway's own open path: Database migrates the writer connection
        async with Database(tmp_path / "gw.db") as db:
            return (await db.read(tube._load_tx, "line-1"), await db.read(tube._jobs_tx),
                    await db.read(fitting._load_tx), await db.read(webhooks.backlog),
                    await db.read(chain._count))

    tube_state, jobs, fit, pending, outbox = asyncio.run(upgraded())
    assert tube_state == ({"arbiter": {"jobs": []}, "meta": {"m": 1}}, 41)
    assert jobs == [{"id": "job-1", "final": 0}]
    assert fit == ({"rooms": {}}, 17)
    assert (pending, outbox) == (1, 0)  # chain_outbox was missing: v8 created it
    # (v20 counted the pending delivery the old store had: `pending` starts right)
    conn = connect(tmp_path / "gw.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert [t["name"] for t in auth.list_tokens(conn)] == ["kiosk-1"]
    assert auth.lookup(Store(conn), "pe_abc123_secretpart") is not None
    # the same tables (and indexes) as a database built by the migrations alone
    fresh = connect(tmp_path / "fresh.db")
    migrate(fresh)
    assert tables(conn) == tables(fresh)
    fresh.close()
    conn.close()


def test_a_failed_step_leaves_the_previous_version(tmp_path, monkeypatch):
    from gateway.storage import store as store_mod
    old_v4_store(tmp_path / "gw.db")
    conn = connect(tmp_path / "gw.db")
    broken = MIGRATIONS[:5] + ("CREATE TABLE fitting (x INTEGER);",) + MIGRATIONS[6:]
    monkeypatch.setattr(store_mod, "MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    monkeypatch.undo()
    assert migrate(conn) == len(MIGRATIONS)
    assert conn.execute("SELECT cursor FROM fitting").fetchone()[0] == 17
    conn.close()


def test_phygital_schema_reports_the_version(tmp_path, capsys):
    old_v4_store(tmp_path / "gw.db")
    assert phygital(["schema", "--db", str(tmp_path / "gw.db")]) == 0
    out = capsys.readouterr().out
    assert f"schema v4; this gateway: v{len(MIGRATIONS)}" in out and "applies v5.." in out
    conn = connect(tmp_path / "gw.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4  # only looked at
    migrate(conn)
    assert phygital(["schema", "--db", str(tmp_path / "gw.db")]) == 0
    assert "(up to date)" in capsys.readouterr().out
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    assert phygital(["schema", "--db", str(tmp_path / "gw.db")]) == 1
    assert "newer than this gateway" in capsys.readouterr().err
    assert phygital(["schema", "--db", str(tmp_path / "none.db")]) == 2
    assert "no such database" in capsys.readouterr().err
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    assert phygital(["schema", "--db", str(tmp_path / "junk.db")]) == 2
    assert "not a readable SQLite database" in capsys.readouterr().err


def test_token_cli_on_a_new_file_creates_the_schema(tmp_path, capsys):
    db = tmp_path / "gw.db"
    assert phygital(["token", "--db", str(db), "create", "--name", "oms", "--role", "orders"]) == 0
    assert capsys.readouterr().out.startswith("pe_")
    conn = connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert [t["name"] for t in auth.list_tokens(conn)] == ["oms"]
    conn.close()


def test_a_kind_s_own_tables_are_versioned_on_their_own_and_applied_by_the_gateway(tmp_path):
    """A kind added after the core schema keeps its migrations in its folder (DeviceKind
    .migrations): the gateway applies them after the core ones, each once, in order; the core
    version does not move; a database whose kind tables are newer than the code is refused."""
    from gateway.kinds.registry import migrations
    from gateway.storage.store import migrate_kind

    kinds = migrations()
    assert "doors" in kinds  # the door counter (gateway/kinds/door_counter) brings its tables
    assert "racks" in kinds  # so does the rack display (gateway/kinds/rack_display)

    async def open_twice():
        for _ in range(2):  # the second open finds everything applied and changes nothing
            async with Database(tmp_path / "gw.db", kind_migrations=kinds):
                pass
    asyncio.run(open_twice())
    conn = connect(tmp_path / "gw.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    for name in ("door_counts", "rack_likes", "rack_products", "racks"):
        assert tables(conn).get(name) == "table", name
    assert dict(conn.execute("SELECT kind, version FROM kind_schema").fetchall()) == \
        {name: len(steps) for name, steps in kinds.items()}
    # a later version of a kind adds a step: only that step runs
    assert migrate_kind(conn, "doors", (*kinds["doors"], "CREATE TABLE door_extra (x INTEGER)")) \
        == len(kinds["doors"]) + 1
    assert tables(conn).get("door_extra") == "table"
    with pytest.raises(RuntimeError, match="newer than this gateway"):
        migrate_kind(conn, "doors", kinds["doors"])
    # a failing step leaves the kind at its last good version
    with pytest.raises(sqlite3.OperationalError):
        migrate_kind(conn, "other", ("CREATE TABLE t1 (x)", "CREATE TABLE broken ("))
    assert conn.execute("SELECT version FROM kind_schema WHERE kind = 'other'").fetchone()[0] == 1
    conn.close()
