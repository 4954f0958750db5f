"""Locker banks' pickup-code keys: provisioned per bank into the bank's config and the
gateway's 0600 keys file, read (and re-read) by the gateway (gateway/kinds/locker_bank/keys.py)."""
from __future__ import annotations

import json
import os
import stat

import pytest

from gateway import provision
from gateway.kinds.locker_bank.core import KEY_LEN
from gateway.kinds.locker_bank.keys import LockerKeys
from gateway.transport.coap_auth import KeyFileError
from tools import provision as provision_cli


def test_provisioning_gives_each_bank_its_own_key_in_its_config_and_the_gateways_0600_file(tmp_path):
    d = tmp_path / "store"
    provision.init_store(d, store="t")
    keys_file = d / provision.LOCKER_KEYS
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600 and json.loads(keys_file.read_text()) == {}
    a = provision.add_device(d, "lk-a", "locker-bank", app={"compartments": ["S"]})
    b = provision.add_device(d, "lk-b", "locker-bank")
    pad = provision.add_device(d, "pad-1", "sample-pad")
    assert "code_key" not in pad["app"]
    assert a["app"]["compartments"] == ["S"]
    keys = LockerKeys(keys_file)
    assert keys.get("lk-a").hex() == a["app"]["code_key"] and len(keys.get("lk-a")) == KEY_LEN
    assert keys.get("lk-b").hex() == b["app"]["code_key"] != a["app"]["code_key"]
    assert keys.get("pad-1") is None
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
    # --rotate (a new password) keeps the code key: the bank's live codes keep working
    again = provision.add_device(d, "lk-a", "locker-bank", rotate=True)
    assert again["app"]["code_key"] == a["app"]["code_key"]
    assert again["mqtt"]["password"] != a["mqtt"]["password"]
    # --rotate-code-key replaces it (after a theft), and the gateway sees it without a restart
    assert provision_cli.main(["device", str(d), "lk-a", "--kind", "locker-bank", "--rotate",
                           "--rotate-code-key"]) == 0
    new = json.loads((d / "devices" / "lk-a.config.json").read_text())["app"]["code_key"]
    assert new != a["app"]["code_key"]
    os.utime(keys_file, ns=(1, 1))  # a different mtime even on a coarse clock
    assert keys.get("lk-a").hex() == new


def test_a_missing_or_bad_keys_file_stops_the_gateway_at_start_with_what_to_do(tmp_path):
    with pytest.raises(KeyFileError, match="not found"):
        LockerKeys(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lk-1": "abcd"}))
    with pytest.raises(KeyFileError, match="64 hex digits"):
        LockerKeys(bad)
    assert LockerKeys(None).get("lk-1") is None  # no file configured: no bank has a key
