"""Pickup codes are stored hashed only: a real code from the locker flow (real gateway, real
locker firmware), then the gateway's database, its WAL and the bank's flash are grepped."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.lockers import hash_code
from tests.test_hil_lockers import Bank, bank, gateway_args  # noqa: F401  (fixtures)

pytest_plugins = ["hil.pytest_plugin"]
pytestmark = pytest.mark.rig_kinds("locker-bank")


def test_pickup_codes_are_stored_hashed_only(bank: Bank):  # noqa: F811
    _, code = bank.load("o-hash", "S")
    db = Path(bank.gw.db)
    files = sorted(db.parent.glob(db.name + "*"))
    store = getattr(bank.rig, "store", None)  # the virtual rig: the bank's flash is a folder
    if store is not None:
        files += [p for p in Path(store.workdir).rglob("*") if p.is_file()]
    assert db in files
    plain = [p for p in files if code.encode() in p.read_bytes()]
    assert plain == [], f"plain pickup code {code} found in {plain}"
    # the hash is what they hold, so the grep looked in the right places (the salt is the
    # bank's id: docs/security.md says what that means for a stolen board)
    h = hash_code(code, bank.id).encode()
    assert any(h in p.read_bytes() for p in files if p.name.startswith(db.name))
