"""The HTTP API as a contract (issue 16 item 8): every operation's 2xx answer is a typed model
in the OpenAPI spec, the device list and the single-device view are one model with the same
fields and values, and docs/api.md is the spec rendered (`python -m tools.apidoc --write`)."""
from __future__ import annotations

import secrets

import pytest

from hil.fakes import FakeDevice
from hil.harness import GatewayProcess, wait_for

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


def _spec() -> dict:
    from tools import apidoc
    return apidoc.spec()


def test_every_operation_has_a_typed_2xx_answer():
    """Each operation's success answer names its schema: a model (or a list of one), or a
    documented non-JSON type (the SSE stream, /metrics, the mirror page); a 204 has no body.
    `{}` (FastAPI's default for a route typed `dict[str, Any]`) fails."""
    spec = _spec()
    untyped, seen = [], 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            ok = {c: r for c, r in op["responses"].items() if c.startswith("2")}
            assert ok, f"{method.upper()} {path}: no 2xx answer"
            for code, resp in ok.items():
                seen += 1
                if code == "204":
                    if resp.get("content"):
                        untyped.append(f"{method.upper()} {path} 204 has a body")
                    continue
                for ctype, media in (resp.get("content") or {"(none)": {}}).items():
                    schema = media.get("schema") or {}
                    if ctype == "application/json":
                        inner = schema.get("items", schema) if schema.get("type") == "array" else schema
                        if "$ref" not in inner:
                            untyped.append(f"{method.upper()} {path} {code}: {schema}")
                    elif schema.get("type") != "string":
                        untyped.append(f"{method.upper()} {path} {code} {ctype}: {schema}")
    assert seen >= 50
    assert untyped == []


def test_models_keep_every_field_and_secrets_stay_redacted(gw, broker):
    """FastAPI serializes through the response model: a field it does not declare is dropped.
    The typed answers carry exactly what the gateway's records hold."""
    from gateway.storage.store import public_command
    dev = FakeDevice(f"pad-{secrets.token_hex(3)}", broker.port).connect()
    try:
        dev.emit("tag.placed", PAD_BODY)
        dev.emit("button.pressed", {"n": 1})
        dev.wait_acked(2)
        r = gw.http.post(f"/devices/{dev.dev}/commands",
                         json={"name": "blink", "args": {"times": 2}, "idempotency_key": "keep-1"})
        assert r.status_code == 200, r.text
        cmd = r.json()
        assert set(cmd) == set(public_command(
            {k: None for k in ("id", "device", "name", "args", "idem_key", "status", "reason",
                               "result", "deadline", "created", "updated", "late", "sends",
                               "last_sent")} | {"status": "done"}))
        assert cmd["result"] == {"times": 2} and cmd["final"] is True and "late_outcome" in cmd
        assert r.headers["location"] == f"/commands/{cmd['id']}"
        assert gw.http.get(f"/commands/{cmd['id']}").json() == cmd
        events = gw.http.get("/events", params={"device": dev.dev}).json()["events"]
        placed, pressed = events
        assert placed["body"] == PAD_BODY and "content" in placed and placed["content"] is None
        assert "content" not in pressed  # absent on other types, as before the models
        assert pressed["body"] == {"n": 1}
        stats = gw.http.get("/stats").json()
        assert {"messages_received", "mqtt", "coap", "rejections"} <= set(stats)
    finally:
        dev.close()


def test_api_md_is_the_spec_rendered():
    """docs/api.md is what `python -m tools.apidoc --write` renders from the spec now."""
    from tools import apidoc
    text = apidoc.render(_spec())
    assert "| GET | [`/devices`]" in text and "### DeviceOut" in text
    assert apidoc.DOC.read_text("utf-8") == text, (
        "docs/api.md is stale: run `python -m tools.apidoc --write` and commit it")


def test_apidoc_shows_each_operations_scope_from_the_policy():
    from gateway.http import auth
    from tools import apidoc
    assert apidoc.scope_of("post", "/lockers/{bank}/orders/{order}/load") == \
        "`operations` or `lockers` (or `admin`)"
    assert apidoc.scope_of("get", "/health") == "none (public)"
    assert apidoc.scope_of("get", "/webhooks") == "`admin`"
    assert auth.required_scopes("DELETE", "/webhooks/{sub_id}") == ("admin",)
