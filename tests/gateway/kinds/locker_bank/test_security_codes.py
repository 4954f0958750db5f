"""Pickup codes are stored as keyed MACs only: a real code from the locker flow (real gateway, real
locker firmware), then the gateway's database, its WAL and the bank's flash are grepped."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.kinds.locker_bank.core import hash_code, mac_code
from gateway.kinds.locker_bank.keys import LockerKeys
from tests.support.lockers import Bank

pytestmark = pytest.mark.rig_kinds("locker-bank")


def test_pickup_codes_are_stored_as_keyed_macs_only(bank: Bank):
    _, code = bank.load("o-hash", "S")
    db = Path(bank.gw.db)
    files = sorted(db.parent.glob(db.name + "*"))
    store = getattr(bank.rig, "store", None)  # the virtual rig: the bank's flash is a folder
    if store is not None:
        files += [p for p in Path(store.workdir).rglob("*") if p.is_file()]
    assert db in files
    plain = [p for p in files if code.encode() in p.read_bytes()]
    assert plain == [], f"plain pickup code {code} found in {plain}"
    # no unkeyed hash either: SHA-256(bank id + code) gives the code back in 10**6 tries
    h = hash_code(code, bank.id).encode()
    assert [p for p in files if h in p.read_bytes()] == [], "an unkeyed code hash is stored"
    # the MAC under the bank's key is what they hold, so the grep looked in the right places
    key = LockerKeys(bank.gw.locker_keys).get(bank.id)
    if key is not None:  # the virtual rig: the gateway's keys file is known here
        m = mac_code(code, key, bank.id).encode()
        assert any(m in p.read_bytes() for p in files if p.name.startswith(db.name))
        assert any(m in p.read_bytes() for p in files if p.name == "locker.json")
