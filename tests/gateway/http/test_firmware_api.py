"""The /firmware routes and `phygital firmware upload | rollout | status | halt` against a gateway
process (docs/ota.md): scopes, the body limit, refusals that say what to do, typed answers
without keys or signatures. The rollouts on real firmware: tests/gateway/devices/test_ota_rollout.py."""
from __future__ import annotations

import json

import httpx
import pytest

from gateway.devices import ota
from gateway.devices.ota_service import bundle_dir
from hil.fakes import FakeDevice
from hil.harness import GatewayProcess, wait_for
from tests.support.auth import bearer, token
from tools.firmware import main as firmware

ZIP = {"Content-Type": "application/zip"}
KEY = "ab" * 32


def tiny(version: str) -> bytes:
    """A bundle the gateway accepts (the device would not boot it: these tests have no device
    that downloads)."""
    return ota.make_bundle(version, [("edge/__init__.mpy", b"M\x06init"), ("edge/boot.mpy", b"M\x06boot")],
                           ["sample-pad"], ["sim"], 96 * 1024)


@pytest.fixture
def fgw(tmp_path, broker):
    keys = tmp_path / "coap-keys.json"
    keys.write_text(json.dumps({"fw-pad-1": KEY}))
    g = GatewayProcess(tmp_path / "gw", broker.port, extra_args=["--coap-keys", str(keys)]).start()
    yield g
    g.stop()


def test_upload_scopes_limits_and_refusals(fgw):
    url = fgw.url + "/firmware"
    reader = token(fgw, "reader-1", "staff")
    r = httpx.post(url, content=tiny("1.0.0"), headers=ZIP | bearer(reader))
    assert r.status_code == 403 and "needs admin" in r.json()["detail"]
    assert httpx.get(url, headers=bearer(reader)).status_code == 200
    r = httpx.post(url, content=b"x" * (1024 * 1024 + 1), headers=ZIP)
    assert r.status_code == 413 and "at most 1024 KiB" in r.json()["detail"]
    r = httpx.post(url, content=b"PK not a zip", headers=ZIP)
    assert r.status_code == 422 and "phygital firmware build" in r.json()["detail"]
    r = httpx.post(url, content=tiny("1.0.0"), headers={"Content-Type": "application/json"})
    assert r.status_code == 415 and "application/zip" in r.json()["detail"]
    r = httpx.post(url, content=tiny("1.0.0"), headers=ZIP)
    assert r.status_code == 201, r.text
    assert r.json() | {"uploaded": 0} == {
        "version": "1.0.0", "kinds": ["sample-pad"], "boards": ["sim"], "min_heap": 98304, "files": 2,
        "bytes": 12, "sha256": ota.read_bundle(tiny("1.0.0")).sha, "uploaded": 0, "created": True}
    assert (bundle_dir(fgw.db) / "1.0.0.zip").read_bytes() == tiny("1.0.0")
    again = httpx.post(url, content=tiny("1.0.0"), headers=ZIP)
    assert again.status_code == 200 and again.json()["created"] is False
    other = ota.make_bundle("1.0.0", [("edge/__init__.mpy", b"other"), ("edge/boot.mpy", b"M")],
                            ["sample-pad"], ["sim"], 0)
    r = httpx.post(url, content=other, headers=ZIP)
    assert r.status_code == 409 and "new --version" in r.json()["detail"]
    # kept across a restart
    fgw.stop()
    fgw.start()
    assert [b["version"] for b in fgw.get("/firmware")["bundles"]] == ["1.0.0"]


def test_cli_upload_rollout_status_halt(fgw, broker, tmp_path, capsys):
    ota_caps = ("tag", "led", "blink", "ota")
    pad = FakeDevice("fw-pad-1", broker.port, caps=ota_caps).connect()  # `ota` and a key
    old = FakeDevice("fw-pad-2", broker.port).connect()                 # an old firmware: no `ota`
    nokey = FakeDevice("fw-pad-3", broker.port, caps=ota_caps).connect()  # not provisioned
    try:
        wait_for(lambda: len(fgw.get("/devices")) == 3, 10, what="three devices")
        path = tmp_path / "fw.zip"
        path.write_bytes(tiny("2.0.0"))
        base = ["--url", fgw.url]
        assert firmware([*base, "upload", str(path)]) == 0
        assert json.loads(capsys.readouterr().out)["version"] == "2.0.0"
        assert firmware([*base, "rollout", "9.9.9"]) == 1
        assert "upload it first" in capsys.readouterr().err
        assert firmware([*base, "rollout", "2.0.0", "--device", "fw-pad-2", "--device", "fw-pad-3"]) == 1
        err = capsys.readouterr().err
        assert "fw-pad-2: its firmware (0.1.0-fake) cannot update over the air" in err
        assert "fw-pad-3: the gateway has no key for it" in err
        # the fake pad answers the offer `done` but never reports ota.installed: the rollout
        # waits at the canary
        assert firmware([*base, "rollout", "2.0.0", "--device", "fw-pad-1", "--deadline", "60"]) == 0
        ro = json.loads(capsys.readouterr().out)
        assert ro["status"] == "running" and ro["devices"][0]["state"] == "offered"
        wait_for(lambda: pad.cmds, 10, what="the offer")
        args = pad.cmds[0]["body"]["args"]
        sha = ota.read_bundle(tiny("2.0.0")).sha
        assert args == {"id": ro["id"], "version": "2.0.0", "sha": sha, "size": args["size"],
                        "mac": ota.offer_mac(ota.ota_key(bytes.fromhex(KEY)), "fw-pad-1", "2.0.0", sha)}
        assert firmware([*base, "rollout", "2.0.0", "--device", "fw-pad-1"]) == 1
        assert "is running" in capsys.readouterr().err
        assert firmware([*base, "status", ro["id"]]) == 0
        assert json.loads(capsys.readouterr().out)["id"] == ro["id"]
        assert firmware([*base, "halt", ro["id"]]) == 0
        halted = json.loads(capsys.readouterr().out)
        assert halted["status"] == "halted" and halted["reason"].startswith("halted by ")
        assert firmware([*base, "status", "ro-nope"]) == 1
        assert "no rollout 'ro-nope'" in capsys.readouterr().err
        # what the read scope sees holds no key and no signature
        reader = token(fgw, "reader-2", "staff")
        text = httpx.get(fgw.url + "/firmware", headers=bearer(reader)).text
        assert KEY not in text and args["mac"] not in text and ro["id"] in text
        # nor does the offer as a command (gateway/http/redact.py: the `ota` row): the MAC only
        # lets that one device take that one bundle, but the read scope has no use for it
        r = httpx.get(fgw.url + f"/commands/{pad.cmds[0]['id']}", headers=bearer(reader))
        assert r.status_code == 200, r.text
        assert r.json()["args"]["mac"] == "[redacted]" and args["mac"] not in r.text
        assert r.json()["args"]["sha"] == sha and r.json()["idem_key"] == f"ota-{ro['id']}"
        assert firmware(["--url", "http://127.0.0.1:1", "status"]) == 3
    finally:
        for d in (pad, old, nokey):
            d.close()
