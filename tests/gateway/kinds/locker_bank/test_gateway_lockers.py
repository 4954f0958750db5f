"""The gateway's locker service (gateway/kinds/locker_bank/service.py) on a real SQLite store, with the
device's events written as ingest writes them and a clock the test moves. No broker."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.kinds.locker_bank.core import LockerBank, hash_code, key_id, mac_code, salt_id
from gateway.kinds.locker_bank.service import LockersService
from gateway.storage.db import Database
from gateway.storage.store import Store
from tests.support.lockers import BANK, KEY, device_tx, event_tx, locker_items
from tests.support.services import Clock, commands

DAY = 24 * 3600


class Rig:
    def __init__(self, path) -> None:
        self.path = path
        self.clock = Clock()
        self.seq = 0
        self.keys = {BANK: KEY}

    async def open(self) -> LockersService:
        self.db = Database(self.path)
        await self.db.__aenter__()
        svc = LockersService(self.db, None, clock=self.clock, keys=self.keys.get)  # type: ignore[arg-type]
        await svc.load()
        return svc

    async def event(self, etype: str, t_device: int | None = None, **body: Any) -> None:
        self.seq += 1
        await self.db.write(event_tx, self.seq, etype, body, self.clock(), t_device)


def test_ready_code_set_order_expiry_and_restart_never_double_send(tmp_path):
    async def main() -> None:
        rig = Rig(tmp_path / "gw.db")
        svc = await rig.open()
        await rig.db.write(device_tx, rig.clock())
        await svc.create_bank(BANK, [(1, "S"), (2, "M"), (3, "L")])
        assert (await svc.assign(BANK, "o-1", "S"))["compartment"] == 1
        assert (await svc.assign(BANK, "o-2", "L"))["compartment"] == 3

        # the device reports the parcel loaded: ready, a code, one set_order with its hash
        await rig.event("door.opened", compartment=1, why="load", order=None)
        await rig.event("door.closed", compartment=1, why="load", open_ms=900, occupied=1)
        await rig.event("order.loaded", compartment=1, occupied=1)
        await svc.step()
        o = await svc.order_view(BANK, "o-1")
        assert o["state"] == "ready"
        cmds = await rig.db.read(commands)
        assert [c["name"] for c in cmds] == ["set_order"]
        args = cmds[0]["args"]
        assert args["compartment"] == 1 and args["order"] == "o-1"
        assert args["salt_id"] == salt_id(BANK) and args["exp"] == int((rig.clock() / 1000 + 3 * DAY) * 1000)
        assert cmds[0]["idem_key"].startswith("lk:o-1:set_order:")
        ready = [i for i in await rig.db.read(locker_items) if i["type"] == "order.ready"]
        assert len(ready) == 1 and "code" not in ready[0], "the stored item has no code"
        code = svc.render(ready[0])["code"]
        assert mac_code(code, KEY, BANK) == args["mac"] and args["key_id"] == key_id(KEY)
        assert "hash" not in args
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("gw.db"))
        assert f'"code":"{code}"'.encode() not in raw
        assert hash_code(code, BANK).encode() not in raw and KEY.hex().encode() not in raw
        assert o["code_sync"]["status"] == "queued"

        # restart: state and cursor come back; nothing is applied or sent twice
        await rig.db.close()
        svc = await rig.open()
        await svc.step()
        assert len(await rig.db.read(commands)) == 1
        assert len([i for i in await rig.db.read(locker_items) if i["type"] == "order.ready"]) == 1
        assert svc.render(ready[0])["code"] is None, "a restarted gateway has forgotten the code"

        # time: o-2's reservation lapses, o-1's pickup window passes -> revoke, once
        rig.clock.advance(4 * 3600 + 1)
        await svc.step()
        assert (await svc.order_view(BANK, "o-2"))["state"] == "cancelled"
        rig.clock.advance(3 * DAY)
        await svc.step()
        await svc.step()
        assert (await svc.order_view(BANK, "o-1"))["state"] == "expired"
        cmds = await rig.db.read(commands)
        assert [(c["name"], c["idem_key"]) for c in cmds][1:] == [("revoke", "lk:o-1:revoke")]
        assert cmds[1]["args"] == {"compartment": 1, "order": "o-1"}
        types = [i["type"] for i in await rig.db.read(locker_items)]
        assert types == ["order.assigned", "order.assigned", "order.ready", "order.cancelled",
                         "order.expired"]
        await rig.db.close()

    asyncio.run(main())


def test_refusals_and_pickup_facts(tmp_path):
    async def main() -> None:
        rig = Rig(tmp_path / "gw.db")
        svc = await rig.open()
        await rig.db.write(device_tx, rig.clock())
        await svc.create_bank(BANK, [(1, "S"), (2, "M")])
        from gateway.kinds.locker_bank.core import Refused
        for order, size, reason in [("a", "L", "no-size"), ("b", "XL", "bad-size")]:
            try:
                await svc.assign(BANK, order, size)
            except Refused as exc:
                assert exc.reason == reason
            else:
                raise AssertionError("refused expected")
        await svc.assign(BANK, "a", "M")
        try:
            await svc.assign(BANK, "c", "M")
        except Refused as exc:
            assert exc.reason == "bank-full"
        await rig.event("order.loaded", compartment=2, occupied=1)
        # an unexpected fact is logged and skipped, the cursor moves on
        await rig.event("pickup.collected", compartment=1, order="zzz", occupied=0)
        await rig.event("door.opened", compartment=2, why="pickup", order="a")
        await rig.event("pickup.incomplete", compartment=2, order="a")
        await svc.step()
        # the spent-but-still-inside code is reissued: a second set_order, an order.code item
        cmds = await rig.db.read(commands)
        assert [c["name"] for c in cmds] == ["set_order", "set_order"]
        assert cmds[0]["args"]["mac"] != cmds[1]["args"]["mac"]
        items = await rig.db.read(locker_items)
        assert [i["type"] for i in items][-2:] == ["order.ready", "order.code"]
        assert svc.render(items[-1])["code"]
        await rig.event("door.opened", compartment=2, why="pickup", order="a")
        await rig.event("pickup.collected", compartment=2, order="a", occupied=0)
        await svc.step()
        assert (await svc.order_view(BANK, "a"))["state"] == "collected"
        assert svc.view(BANK)["compartments"][1]["state"] == "free"
        await rig.db.close()

    asyncio.run(main())


def test_the_keypad_lockout_of_the_bank_is_shown_and_survives_a_restart(tmp_path):
    async def main() -> None:
        rig = Rig(tmp_path / "gw.db")
        svc = await rig.open()
        await rig.db.write(device_tx, rig.clock())
        await svc.create_bank(BANK, [(1, "S"), (2, "M")])
        assert svc.view(BANK)["keypad_locked_until"] is None
        # the third wrong code locks the keypad at the bank (it counts and decides, offline too)
        t_lock = rig.clock() / 1000
        await rig.event("code.rejected", compartment=None, reason="unknown", failures=3)
        await rig.event("keypad.locked", for_s=600, level=1, failures=3)
        await svc.step()
        assert svc.view(BANK)["keypad_locked_until"] == t_lock + 600

        await rig.db.close()  # a gateway restart keeps it
        svc = await rig.open()
        await svc.step()
        rig.clock.advance(599)
        assert svc.view(BANK)["keypad_locked_until"] == t_lock + 600
        rig.clock.advance(1)  # over: the view clears
        assert svc.view(BANK)["keypad_locked_until"] is None

        # a lockout journaled while the bank was offline is dated by the bank's clock: one that
        # already ended is not shown as running, a running one ends when the bank's does
        now_ms = rig.clock()
        await rig.event("keypad.locked", t_device=now_ms - 1300_000, for_s=1200, level=2, failures=3)
        await svc.step()
        assert svc.view(BANK)["keypad_locked_until"] is None
        await rig.event("keypad.locked", t_device=now_ms - 100_000, for_s=1800, level=3, failures=3)
        await svc.step()
        assert svc.view(BANK)["keypad_locked_until"] == (now_ms - 100_000) / 1000 + 1800
        await rig.db.close()

    asyncio.run(main())


def test_the_wrong_codes_counted_at_the_bank_are_shown(tmp_path):
    async def main() -> None:
        rig = Rig(tmp_path / "gw.db")
        svc = await rig.open()
        await rig.db.write(device_tx, rig.clock())
        await svc.create_bank(BANK, [(1, "S"), (2, "M")])
        assert svc.view(BANK)["keypad_failures"] == 0
        await rig.event("code.rejected", compartment=None, reason="unknown", failures=1)
        await rig.event("code.reused", compartment=1, order="o-x", failures=2)
        await svc.step()
        assert svc.view(BANK)["keypad_failures"] == 2
        await rig.db.close()  # a gateway restart keeps them
        svc = await rig.open()
        assert svc.view(BANK)["keypad_failures"] == 2
        # the bank's count is the truth: after its reboot it goes on from where it was
        await rig.event("code.rejected", compartment=None, reason="unknown", failures=3)
        await rig.event("keypad.locked", for_s=600, level=1, failures=3)
        await svc.step()
        assert svc.view(BANK)["keypad_failures"] == 0, "a lockout starts a new count, as at the bank"
        rig.clock.advance(600)
        await rig.event("code.rejected", compartment=None, reason="unknown", failures=1)
        await svc.step()
        assert svc.view(BANK)["keypad_failures"] == 1
        rig.clock.advance(300)  # out of the window (the policy's window_s, the bank's default)
        assert svc.view(BANK)["keypad_failures"] == 0
        await rig.event("code.rejected", compartment=None, reason="unknown", failures=1)
        await svc.step()
        assert svc.view(BANK)["keypad_failures"] == 1
        # a good code at the keypad (its door opened for the pickup) clears the count
        await rig.event("door.opened", compartment=1, why="pickup", order="o-gone")
        await svc.step()
        assert svc.view(BANK)["keypad_failures"] == 0
        await rig.db.close()

def _put_row_tx(store: Store, state: dict[str, Any], now: int) -> None:
    with store.transaction():
        store.put_locker(BANK, state, 0, now)


def test_a_legacy_row_is_upgraded_once_the_key_is_known_and_the_bank_gets_the_macs(tmp_path):
    """A gateway before keyed codes stored SHA-256 hashes. Without a key the row is left as it
    is and the bank takes no orders; with the key the codes are recovered by search, the row
    holds MACs only and the bank gets them in one `load_codes replace` (sent once)."""
    async def main() -> None:
        rig = Rig(tmp_path / "gw.db")
        codes = {"o-1": "482913", "o-2": "130363"}
        draws = iter([482913, 130363])
        bank = LockerBank(BANK, [(1, "S"), (2, "M"), (3, "L")], salt=BANK, key=KEY,
                          rng=lambda n: next(draws))
        for oid, size in (("o-1", "S"), ("o-2", "M")):
            o = bank.assign(oid, size, 1_800_000_000.0)
            bank.loaded(o.compartment_id, True, 1_800_000_000.0)
        row = bank.to_dict()  # turned into what the old gateway wrote
        del row["verifier"], row["macs"]
        row["hashes"] = {}
        for o in row["orders"]:
            del o["code_mac"]
            o["code_hash"] = hash_code(codes[o["id"]], BANK)
            row["hashes"][o["code_hash"]] = o["id"]
        rig.keys = {}
        svc = await rig.open()
        await rig.db.write(device_tx, rig.clock())
        await rig.db.write(_put_row_tx, {"bank": row, "meta": {}}, rig.clock())
        await rig.db.close()

        svc = await rig.open()  # no key yet: nothing changes, nothing is sent
        await svc.step()
        from gateway.kinds.locker_bank.core import Refused
        try:
            await svc.assign(BANK, "o-3", "L")
        except Refused as exc:
            assert exc.reason == "no-key"
        else:
            raise AssertionError("a bank without a key must refuse orders")
        assert await rig.db.read(commands) == []
        stored = (await rig.db.read(Store.list_lockers))[0][1]["bank"]
        assert stored == row
        await rig.db.close()

        rig.keys = {BANK: KEY}
        svc = await rig.open()
        await svc.step()
        await svc.step()
        cmds = await rig.db.read(commands)
        assert [(c["name"], c["idem_key"]) for c in cmds] == [("load_codes", f"lk:upgrade:{key_id(KEY)}")]
        args = cmds[0]["args"]
        assert args["replace"] is True and args["key_id"] == key_id(KEY) and args["salt_id"] == salt_id(BANK)
        assert sorted((e["compartment"], e["order"], e["mac"]) for e in args["orders"]) == [
            (1, "o-1", mac_code("482913", KEY, BANK)), (2, "o-2", mac_code("130363", KEY, BANK))]
        stored = (await rig.db.read(Store.list_lockers))[0][1]["bank"]
        assert stored["verifier"] == "hmac-sha256" and "hashes" not in stored
        assert all(hash_code(c, BANK) not in json.dumps(stored) for c in codes.values())
        # keeps working: redeem by the new verifier, new orders get MAC codes
        assert svc.bank(BANK).redeem("482913", rig.clock() / 1000).id == "o-1"
        await svc.assign(BANK, "o-3", "L")
        await rig.db.close()
        svc = await rig.open()  # a restart upgrades nothing twice
        await svc.step()
        assert [c["name"] for c in await rig.db.read(commands)] == ["load_codes"]
        await rig.db.close()
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("gw.db"))
        # nor in the files (this SQLite rewrites the row's page; a backup made before the
        # upgrade still holds the hashes: docs/lockers.md)
        assert [c for c in codes.values() if hash_code(c, BANK).encode() in raw] == []

    asyncio.run(main())
