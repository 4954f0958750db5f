"""The secrets model's rule tables (gateway/http/redact.py), for argument shapes the locker scenario
of tests/gateway/http/test_secrets_exposure.py does not send: `load_codes` (firmware
edge/apps/locker_staff.py) and a keyed verifier named `mac`."""
from __future__ import annotations

from gateway.http.redact import REDACTED, may_see_codes, redact_command, redact_event, redact_item
from gateway.storage.store import public_command

H = "ab" * 32


def test_set_order_and_load_codes_verifiers_and_key_are_redacted():
    cmd = {"id": "c-1", "name": "set_order", "idem_key": "lk:o-1:set_order:" + H[:16],
           "args": {"compartment": 2, "order": "o-1", "hash": H, "mac": H, "exp": 5,
                    "salt_id": "12345678"}}
    out = redact_command(cmd)
    assert out["args"] == {"compartment": 2, "order": "o-1", "hash": REDACTED, "mac": REDACTED,
                           "exp": 5, "salt_id": "12345678"}
    assert out["idem_key"] == REDACTED
    assert cmd["args"]["hash"] == H, "the stored record is not changed"
    load = {"id": "c-2", "name": "load_codes", "idem_key": "k", "args": {
        "salt_id": "12345678", "orders": [{"compartment": 1, "order": "a", "mac": H, "exp": 1},
                                          {"compartment": 2, "order": "b", "hash": H}, "junk"]}}
    assert H not in repr(redact_command(load))
    assert redact_command(load)["args"]["orders"][0] == {"compartment": 1, "order": "a",
                                                         "mac": REDACTED, "exp": 1}
    other = {"id": "c-3", "name": "open", "idem_key": "k", "args": {"compartment": 1}}
    assert redact_command(other) == other


def test_public_command_and_stream_items_carry_no_verifier():
    row = {"id": "c-1", "device": "lk-1", "name": "set_order", "args": {"hash": H},
           "idem_key": "lk:o:set_order:" + H[:16], "status": "done", "reason": None,
           "result": None, "deadline": 1, "created": 1, "updated": 1, "late": False, "sends": 1,
           "last_sent": 1}
    assert H[:12] not in repr(public_command(row))
    assert H[:12] not in repr(redact_item("command", row))  # rows stored before the model
    ev = {"type": "code.rejected", "body": {"compartment": 1, "code": "123456"}}
    assert redact_event(ev)["body"] == {"compartment": 1, "code": REDACTED}
    assert redact_item("event", {"type": "door.opened", "body": {"code": 1}})["body"] == {"code": 1}


def test_who_sees_plain_codes():
    assert may_see_codes({"read", "lockers"}) and may_see_codes({"admin"})
    for scopes in ({"read", "requests"}, {"read", "operations"}, {"read"}, set()):
        assert not may_see_codes(scopes), scopes


def test_a_stored_locker_item_never_carries_a_plain_code():
    """Locker stream rows are committed without the code (the service adds it from memory for
    readers that may see it). A row that has one anyway (an old or hand-made row) loses it
    wherever committed items are read: stream, webhooks, chain."""
    from gateway.http.redact import REDACTED, redact_item

    row = {"type": "order.ready", "bank": "lk-1", "order": "o1", "ready_id": "r1", "code": "482913"}
    out = redact_item("locker", row)
    assert out["code"] == REDACTED and "482913" not in repr(out)
    assert out["ready_id"] == "r1" and row["code"] == "482913"  # a copy
    clean = {"type": "order.ready", "bank": "lk-1", "order": "o1", "ready_id": "r1"}
    assert redact_item("locker", clean) == clean
