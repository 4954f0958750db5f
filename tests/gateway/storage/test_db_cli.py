"""`phygital db stats|backup|vacuum` (gateway/storage/db_cli.py): sizes and growth per table, an
online backup taken while the gateway's connections are open and restored into a gateway,
refusals that say what to do."""
import asyncio
import json
import time

from gateway.storage.db import Database
from gateway.storage.store import MIGRATIONS, Store
from tools.cli import main as phygital

DAY_MS = 86_400_000


def _fill(store: Store, now: int) -> None:
    store.upsert_device(id="pad-1", kind="sample-pad", fw="1", caps=[], cfg="c", session=1,
                        epoch="e1", boot=1, reset=None, online=True, now=now)
    with store.transaction():
        for seq in range(1, 31):  # 10 three days ago, 20 in the last hour
            t = now - 3 * DAY_MS if seq <= 10 else now - 3_600_000
            store.insert_event("pad-1", "e1", seq, "tag.placed", t, t, {"uid": "04aa", "n": seq})


def _command(store, now):
    with store.transaction():
        store.insert_command(id="c-1", device="pad-1", name="blink", args={}, idem_key="k",
                             deadline=now + 60_000, now=now)


def test_stats_backup_restore_while_open(tmp_path, capsys):
    now = int(time.time() * 1000)
    src, copy = tmp_path / "gw.db", tmp_path / "backup" / "gw-copy.db"
    copy.parent.mkdir()

    async def main():
        async with Database(src) as db:  # the gateway's writer and reader are open throughout
            await db.write(_fill, now)
            await db.commands.write(_command, now)  # in the command file beside it
            assert phygital(["db", "stats", "--db", str(src), "--json"]) == 0
            stats = json.loads(capsys.readouterr().out)
            assert phygital(["db", "stats", "--db", str(src)]) == 0
            table = capsys.readouterr().out
            assert phygital(["db", "backup", "--db", str(src), "--to", str(copy)]) == 0
            said = capsys.readouterr().out
            await db.write(_more)           # after the copy: not in it
            again = phygital(["db", "backup", "--db", str(src), "--to", str(copy)])
            return stats, table, said, again, capsys.readouterr().err

    stats, table, said, again, refused = asyncio.run(main())
    events = next(t for t in stats["tables"] if t["table"] == "events")
    assert events["rows"] == 30 and events["last_24h"] == 20
    assert events["oldest"] == now - 3 * DAY_MS
    assert events["bytes"] > 0 and events["bytes_per_day"] == round(events["bytes"] / 30 * 20)
    assert stats["auto_vacuum"] == "incremental" and stats["schema"] == len(MIGRATIONS)
    assert "events" in table and "auto_vacuum incremental" in table
    assert f"schema v{len(MIGRATIONS)}" in said and str(copy) in said
    assert again == 2 and "exists: give a new file name" in refused
    cmds = next(t for t in stats["commands_file"]["tables"] if t["table"] == "commands")
    assert cmds["rows"] == 1 and cmds["last_24h"] == 1
    assert "gw.commands.db" in table and "gw-copy.commands.db" in said

    async def restored():
        async with Database(copy) as db:   # a gateway started on the copy: opens, migrates
            return (await db.read(lambda s: s.conn.execute("SELECT COUNT(*), MAX(seq) FROM events")
                                  .fetchone()[:]),
                    await db.read(Store.list_devices),
                    await db.commands.read(Store.get_command, "c-1"))

    (n, top), devices, cmd = asyncio.run(restored())
    assert (n, top) == (30, 30)
    assert cmd is not None and cmd["name"] == "blink"  # the command file was copied too
    assert [d["id"] for d in devices] == ["pad-1"]


def _more(store: Store) -> None:
    with store.transaction():
        store.insert_event("pad-1", "e1", 31, "tag.removed", 1, 1, {})


def test_vacuum_refuses_while_the_database_is_open(tmp_path, capsys):
    path = tmp_path / "gw.db"

    async def main():
        async with Database(path):
            return phygital(["db", "vacuum", "--db", str(path)]), capsys.readouterr().err

    status, err = asyncio.run(main())
    assert status == 2 and "open in another process (the gateway?): stop it" in err
    assert phygital(["db", "vacuum", "--db", str(path)]) == 0  # closed: it runs
    assert "auto_vacuum incremental" in capsys.readouterr().out


def test_a_missing_database_is_refused(tmp_path, capsys):
    for cmd in (["stats"], ["backup", "--to", str(tmp_path / "b.db")], ["vacuum"]):
        assert phygital(["db", *cmd, "--db", str(tmp_path / "nope.db")]) == 2
        assert "no such database (give the gateway's --db)" in capsys.readouterr().err
