"""The HTTP API as a contract (issue 16 item 8): every operation's 2xx answer is a typed model
in the OpenAPI spec, the device list and the single-device view are one model with the same
fields and values, and docs/api.md is the spec rendered (`python -m tools.apidoc --write`)."""
from __future__ import annotations

import secrets

import httpx
import pytest

from gateway.testing import FakeDevice
from hil.harness import GatewayProcess
from tests.support import wait_for

PAD_BODY = {"uid": "04a1b2c3d4e5f6", "tech": "ntag213", "sample": "S-1001"}


@pytest.fixture(scope="module")
def gw(broker, tmp_path_factory):
    g = GatewayProcess(tmp_path_factory.mktemp("contract"), broker.port).start()
    yield g
    g.stop()


def test_device_list_and_view_agree(gw, broker):
    """`GET /devices` and `GET /devices/{device}` show every device with the same fields and the
    same values, `acked` and `pending_commands` included."""
    online = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port).connect()
    quiet = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port).connect()
    try:
        for _ in range(3):
            online.emit("tag.placed", PAD_BODY)
        online.wait_acked(3)
        quiet.ignore_commands = True  # its command stays pending
        r = gw.http.post(f"/devices/{quiet.dev}/commands",
                         json={"name": "blink", "idempotency_key": "contract-1", "wait": False})
        assert r.status_code == 202, r.text
        pending_id = r.json()["id"]
        wait_for(lambda: gw.http.get(f"/devices/{online.dev}").json().get("acked") == 3,
                 what="acked 3 in the view")
        listed = {d["id"]: d for d in gw.http.get("/devices").json()}
        for dev in (online.dev, quiet.dev):
            view = gw.http.get(f"/devices/{dev}").json()
            assert listed[dev] == view, (dev, sorted(set(listed[dev]) ^ set(view)))
        assert listed[online.dev]["acked"] == 3 and listed[online.dev]["pending_commands"] == []
        assert listed[quiet.dev]["pending_commands"] == [pending_id]
        assert listed[quiet.dev]["acked"] == 0
    finally:
        online.close()
        quiet.close()
