"""The upgrade to keyed pickup codes, end to end: a store that ran before keyed codes (the
gateway's `lockers` row and the bank's `locker.json` hold SHA-256(salt + code)) restarts with
the new gateway and firmware. The order loaded before keeps its code, at the keypad and at
the gateway, and afterwards neither side holds an unkeyed hash. Real gateway process, real
firmware (MicroPython), a real broker."""
from __future__ import annotations

import json
import sqlite3

import httpx

from gateway.kinds.locker_bank.core import hash_code, mac_code
from gateway.kinds.locker_bank.keys import LockerKeys
from gateway.storage.store import commands_path
from hil.fakes import SseReader
from hil.harness import GatewayProcess, wait_for
from hil.sim.store import VirtualStore

BANK = "lk-up1"


def _legacy_gateway_row(db, code: str) -> None:
    """Rewrite the bank's row as the gateway before keyed codes stored it."""
    con = sqlite3.connect(db)
    with con:
        (state,) = con.execute("SELECT state FROM lockers WHERE bank = ?", (BANK,)).fetchone()
        state = json.loads(state)
        bank = state["bank"]
        del bank["verifier"], bank["macs"]
        bank["hashes"] = {}
        # the old gateway kept the orders inside the row (no locker_orders table)
        bank["orders"] = [json.loads(d) for (d,) in con.execute(
            "SELECT data FROM locker_orders WHERE bank = ? ORDER BY rowid", (BANK,))]
        con.execute("DELETE FROM locker_orders WHERE bank = ?", (BANK,))
        for o in bank["orders"]:
            o["code_hash"] = hash_code(code, BANK) if o.pop("code_mac") else None
            if o["code_hash"]:
                bank["hashes"][o["code_hash"]] = o["id"]
        state["meta"].pop("code_cmd", None)
        con.execute("UPDATE lockers SET state = ? WHERE bank = ?", (json.dumps(state), BANK))
    con.close()


def _command(db, name: str, status: str) -> dict | None:
    con = sqlite3.connect(db)
    con.execute("ATTACH DATABASE ? AS cmds", (str(commands_path(db)),))  # the command file
    try:
        row = con.execute("SELECT args, result FROM commands WHERE device = ? AND name = ? AND status = ?",
                          (BANK, name, status)).fetchone()
    finally:
        con.close()
    return None if row is None else {"args": json.loads(row[0]), "result": json.loads(row[1])}


def test_an_order_loaded_before_keyed_codes_is_collected_with_its_code_after_the_upgrade(broker, tmp_path):
    gw = GatewayProcess(tmp_path / "gw", broker.port).start()
    store = VirtualStore(tmp_path / "store", broker_port=broker.port, locker_keys=gw.locker_keys)
    lk = store.add_locker(BANK, ["S", "M"], occupancy=True, pulse_ms=300, verify_ms=300)
    fw = store.devices[BANK]
    flash = fw.workdir / "flash" / "locker.json"
    try:
        store.start()
        wait_for(lambda: httpx.get(f"{gw.url}/lockers/{BANK}", timeout=5).status_code == 200, 30,
                 what="bank created from its status")
        with SseReader(gw.url) as stream:
            r = httpx.post(f"{gw.url}/lockers/{BANK}/orders", json={"order": "o-1", "size": "S"}, timeout=15)
            assert r.status_code == 201, r.text
            n = r.json()["compartment"]
            r = httpx.post(f"{gw.url}/lockers/{BANK}/orders/o-1/load", timeout=30)
            assert r.status_code == 200, r.text
            lk.set_occupied(n, True)
            lk.close_door(n)
            ready = wait_for(lambda: [m for m in stream.messages if m.get("type") == "order.ready"], 20,
                             what="order.ready")
            code = ready[0]["code"]
        wait_for(lambda: (gw.get(f"/lockers/{BANK}/orders/o-1")["code_sync"] or {}).get("status") == "done",
                 20, what="the code on the bank")
        key = LockerKeys(gw.locker_keys).get(BANK)
        mac = mac_code(code, key, BANK)

        # both sides stop and get the state the versions before keyed codes wrote
        fw.stop()
        gw.stop()
        st = json.loads(flash.read_text())
        assert st["c"][n - 1][1] == "m" + mac
        st["c"][n - 1][1] = hash_code(code, BANK)
        flash.write_text(json.dumps(st))
        _legacy_gateway_row(gw.db, code)

        gw.start()
        fw.start()
        # the gateway recovers the code from its hash and gives the bank the MAC (replace)
        cmd = wait_for(lambda: _command(gw.db, "load_codes", "done"), 30, what="load_codes done")
        assert cmd["args"]["replace"] is True and cmd["args"]["orders"][0]["mac"] == mac
        assert cmd["result"] == {"set": [n], "refused": []}
        assert json.loads(flash.read_text())["c"][n - 1][1] == "m" + mac
        row = sqlite3.connect(gw.db).execute("SELECT state FROM lockers WHERE bank = ?", (BANK,)).fetchone()[0]
        assert hash_code(code, BANK) not in row and mac in row

        # the customer's code, issued before the upgrade, opens the door once
        lk.type_code(code)
        wait_for(lambda: [e for e in gw.events(BANK, "door.opened") if e["body"]["why"] == "pickup"], 20,
                 what="pickup door.opened")
        lk.set_occupied(n, False)
        lk.close_door(n)
        wait_for(lambda: gw.get(f"/lockers/{BANK}/orders/o-1")["state"] == "collected", 20,
                 what="o-1 collected")
    finally:
        store.stop()
        gw.stop()
