"""MQTT envelopes of a sample pad, as (topic, payload) the way the gateway's ingest takes them
(docs/protocol.md), for tests of the synchronous cores and the lanes without a broker."""
from __future__ import annotations

import json

NOW = 1_795_426_642_000


def birth(dev="pad-1", session=1, epoch="e1", first=1, nxt=None):
    return (f"pe/1/{dev}/birth", json.dumps({
        "v": 1, "dev": dev, "type": "birth", "t": None,
        "body": {"kind": "sample-pad", "fw": "0.1.0", "caps": ["blink"], "cfg": "0",
                 "session": session, "boot": 1, "reset": "power", "epoch": epoch,
                 "first": first, "next": nxt or first}}).encode())


def evt(seq, dev="pad-1", type_="tag.placed"):
    return (f"pe/1/{dev}/evt", json.dumps({"v": 1, "dev": dev, "type": type_, "seq": seq,
                                           "t": None, "body": {"n": seq}}).encode())


def status(online, session, dev="pad-1"):
    return (f"pe/1/{dev}/status", json.dumps({
        "v": 1, "dev": dev, "type": "online" if online else "offline", "t": None,
        "body": {"session": session}}).encode())


def reply(cid, st, dev="pad-1"):
    return (f"pe/1/{dev}/reply", json.dumps({
        "v": 1, "dev": dev, "type": "reply", "id": cid, "t": None,
        "body": {"status": st, "reason": None, "result": {"ok": st}}}).encode())
