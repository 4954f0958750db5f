"""gateway.devices.protocol: topics, validation with the protocol's rejection reasons, encoding."""
import json

import pytest

from gateway.devices import protocol
from gateway.devices.protocol import Birth, Event, ProtocolError, Reply, Status, decode


def env(dev="pad-1", type_="tag.placed", **over):
    m = {"v": 1, "dev": dev, "type": type_, "t": 1795426642001, "body": {}}
    m.update(over)
    return m


def raw(obj) -> bytes:
    return json.dumps(obj).encode()


BIRTH_BODY = {"kind": "sample-pad", "fw": "0.1.0", "caps": ["tag", "led", "blink"],
              "cfg": "5f2a9c01", "session": 42, "boot": 7, "reset": "power",
              "epoch": "9c1e44a0", "first": 118, "next": 121}


def reason(topic, payload) -> str:
    with pytest.raises(ProtocolError) as ei:
        decode(topic, payload)
    return ei.value.reason


def test_device_id_rule():
    assert protocol.is_device_id("pad-1") and protocol.is_device_id("a" * 32)
    for bad in ("", "Pad-1", "-pad", "a" * 33, "pad_1", "pad/1", "gateway", "pe-gateway", 7):
        assert not protocol.is_device_id(bad), bad


def test_parse_topic():
    assert protocol.parse_topic("pe/1/pad-1/evt") == ("pad-1", "evt")
    for bad in ("pe/1/pad-1/cmd", "pe/2/pad-1/evt", "pe/1/pad-1/evt/x"):
        with pytest.raises(ProtocolError) as ei:
            protocol.parse_topic(bad)
        assert ei.value.reason == "topic-mismatch"


@pytest.mark.parametrize("dev", ["PAD", "pad_1", "-pad", "a" * 33, "gateway", "pe-gateway"])
def test_an_invalid_or_reserved_device_id_has_its_own_reason(dev):
    """`gateway` is the gateway's state topic, `pe-gateway` its MQTT client id and broker
    user: a device may not use either (docs/protocol.md, Identifiers)."""
    ok = raw(env(dev=dev, seq=1))
    with pytest.raises(ProtocolError) as ei:
        decode(f"pe/1/{dev}/evt", ok)
    assert ei.value.reason == "bad-device-id" and repr(dev) in ei.value.detail
    assert "bad-device-id" in protocol.REASONS


def test_protocol_examples_decode():
    b = decode("pe/1/pad-1/birth", raw(env(type_="birth", body=BIRTH_BODY)))
    assert isinstance(b, Birth)
    assert (b.session, b.epoch, b.first, b.next) == (42, "9c1e44a0", 118, 121)
    e = decode("pe/1/pad-1/evt", raw(env(seq=121, body={"uid": "04a1b2c3d4e5f6", "tech": "ntag213",
                                                        "sample": "S-1001"})))
    assert isinstance(e, Event) and e.seq == 121 and e.body["sample"] == "S-1001"
    s = decode("pe/1/pad-1/status", raw(env(type_="offline", t=None, body={"session": 42})))
    assert s == Status(dev="pad-1", t=None, online=False, session=42)
    r = decode("pe/1/pad-1/reply", raw(env(type_="reply", id="c-7f3a2b",
                                           body={"status": "done", "reason": None, "result": {}})))
    assert isinstance(r, Reply) and r.final and r.id == "c-7f3a2b"


@pytest.mark.parametrize("payload,expected", [
    (b"x" * 4097, "oversized"),
    (b"not json", "malformed"),
    (b"\xff\xfe", "malformed"),
    (b"[1,2]", "malformed"),
    (b'{"v":1,"dev":"pad-1","type":"x","seq":1,"t":NaN,"body":{}}', "malformed"),
    (raw(env(v=2, seq=1)), "bad-version"),
    (raw(env(v=True, seq=1)), "bad-version"),
    (raw({k: v for k, v in env(seq=1).items() if k != "v"}), "bad-version"),
    (raw(env(dev="pad-2", seq=1)), "topic-mismatch"),
    (raw(env()), "bad-field"),                       # no seq
    (raw(env(seq=0)), "bad-field"),
    (raw(env(seq="1")), "bad-field"),
    (raw(env(seq=True)), "bad-field"),
    (raw(env(seq=1, t="now")), "bad-field"),
    (raw(env(seq=1, body=[])), "bad-field"),
    (raw({k: v for k, v in env(seq=1).items() if k != "t"}), "bad-field"),
    (raw(env(seq=1, type_="Tag Placed")), "bad-field"),
])
def test_event_rejections(payload, expected):
    assert reason("pe/1/pad-1/evt", payload) == expected


MAX_COUNTER = 2**53 - 1           # docs/protocol.md, "Limits"
MAX_T = 253402300799999           # 9999-12-31T23:59:59.999Z
BIG = [2**53, 2**63 - 1, 2**63, 2**64 - 1]  # orjson reads all of these as ints


@pytest.mark.parametrize("value", BIG)
@pytest.mark.parametrize("where", ["seq", "t", "birth.session", "birth.boot", "birth.first",
                                   "birth.next", "status.session"])
def test_integers_beyond_the_documented_bounds_are_bad_field(where, value):
    """seq or t in [2^63, 2^64) used to pass decoding and crash the SQLite insert
    (`internal-error`); 2^63 - 1 was stored."""
    if where in ("seq", "t"):
        topic, m = "pe/1/pad-1/evt", env(seq=1)
        m[where] = value
    elif where.startswith("birth."):
        body = dict(BIRTH_BODY, first=1, next=1)
        body[where[6:]] = value
        if where == "birth.first":
            body["next"] = value  # first <= next: only the bound is wrong
        topic, m = "pe/1/pad-1/birth", env(type_="birth", body=body)
    else:
        topic, m = "pe/1/pad-1/status", env(type_="online", body={"session": value})
    with pytest.raises(ProtocolError) as ei:
        decode(topic, raw(m))
    assert ei.value.reason == "bad-field", ei.value
    assert where.split(".")[-1] in ei.value.detail


def test_the_largest_values_in_bounds_are_accepted():
    e = decode("pe/1/pad-1/evt", raw(env(seq=MAX_COUNTER, t=MAX_T)))
    assert (e.seq, e.t) == (MAX_COUNTER, MAX_T)
    b = decode("pe/1/pad-1/birth", raw(env(type_="birth", t=0, body=dict(
        BIRTH_BODY, session=MAX_COUNTER, boot=MAX_COUNTER, first=MAX_COUNTER,
        next=MAX_COUNTER))))
    assert (b.session, b.boot, b.first, b.next, b.t) == (MAX_COUNTER,) * 4 + (0,)
    assert reason("pe/1/pad-1/evt", raw(env(seq=1, t=MAX_T + 1))) == "bad-field"
    assert reason("pe/1/pad-1/evt", raw(env(seq=1, t=-1))) == "bad-field"
    assert reason("pe/1/pad-1/evt", raw(env(seq=1, t=1.0))) == "bad-field"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize("field", ["seq", "t"])
def test_nan_and_infinity_are_not_json(field, literal):
    other = {"seq": '"seq":1', "t": '"t":1'}
    fields = ",".join(f'"{field}":{literal}' if k == field else v for k, v in other.items())
    payload = ('{"v":1,"dev":"pad-1","type":"x",' + fields + ',"body":{}}').encode()
    assert reason("pe/1/pad-1/evt", payload) == "malformed"


def test_string_length_limits():
    assert decode("pe/1/pad-1/evt", raw(env(seq=1, type_="a" * 64))).type == "a" * 64
    assert reason("pe/1/pad-1/evt", raw(env(seq=1, type_="a" * 65))) == "bad-field"
    assert reason("pe/1/pad-1/evt", raw(env(seq=1, type_=""))) == "bad-field"
    for f in ("kind", "fw", "cfg", "epoch", "reset"):
        body = dict(BIRTH_BODY, **{f: "x" * 65})
        assert reason("pe/1/pad-1/birth", raw(env(type_="birth", body=body))) == "bad-field", f
    for caps in (["x" * 65], [""]):
        body = dict(BIRTH_BODY, caps=caps)
        assert reason("pe/1/pad-1/birth", raw(env(type_="birth", body=body))) == "bad-field"
    assert decode("pe/1/pad-1/birth", raw(env(type_="birth", body=dict(
        BIRTH_BODY, caps=["x" * 64])))).caps == ("x" * 64,)
    reply = env(type_="reply", id="c-1", body={"status": "rejected", "reason": "r" * 257})
    assert reason("pe/1/pad-1/reply", raw(reply)) == "bad-field"


def test_the_protocol_doc_states_the_limits_the_decoder_enforces():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[3] / "docs/protocol.md").read_text()
    limits = doc.split("### Limits", 1)[1].split("\n## ", 1)[0]
    assert (protocol.MAX_COUNTER, protocol.MAX_T) == (MAX_COUNTER, MAX_T)
    for text in ("2⁵³ − 1", "253402300799999", "4096", "`bad-device-id`", "`pe-gateway`",
                 "NaN"):
        assert text in limits, text
    for name in ("seq", "t", "session", "boot", "first", "next", "type", "id", "caps",
                 "kind", "fw", "cfg", "epoch", "reset", "reason"):
        assert f"`{name}`" in limits, name


def test_exactly_4096_bytes_is_accepted():
    m = env(seq=1, body={"pad": ""})
    base = len(raw(m))
    m["body"]["pad"] = "x" * (4096 - base)
    assert len(raw(m)) == 4096
    assert decode("pe/1/pad-1/evt", raw(m)).seq == 1


@pytest.mark.parametrize("field,value", [
    ("caps", "tag"), ("caps", [1]), ("session", -1), ("first", 0), ("epoch", ""), ("kind", None),
    ("next", 100),  # next < first
])
def test_birth_field_rules(field, value):
    body = dict(BIRTH_BODY, **{field: value})
    assert reason("pe/1/pad-1/birth", raw(env(type_="birth", body=body))) == "bad-field"


def test_birth_without_reset_is_accepted_and_wrong_type_rejected():
    body = {k: v for k, v in BIRTH_BODY.items() if k != "reset"}
    assert decode("pe/1/pad-1/birth", raw(env(type_="birth", body=body))).reset is None
    assert reason("pe/1/pad-1/birth", raw(env(type_="hello", body=BIRTH_BODY))) == "bad-field"


def test_reply_and_status_rules():
    no_id = raw(env(type_="reply", body={"status": "done"}))
    assert reason("pe/1/pad-1/reply", no_id) == "bad-field"
    assert reason("pe/1/pad-1/reply", raw(env(type_="reply", id="c-1",
                                              body={"status": "maybe"}))) == "bad-field"
    assert reason("pe/1/pad-1/reply", raw(env(type_="reply", id="x" * 65,
                                              body={"status": "done"}))) == "bad-field"
    assert reason("pe/1/pad-1/status", raw(env(type_="lost", body={"session": 1}))) == "bad-field"
    assert reason("pe/1/pad-1/status", raw(env(type_="online", body={}))) == "bad-field"


def test_encoders_roundtrip_and_never_exceed_limit():
    ack = json.loads(protocol.encode_ack("pad-1", "9c1e44a0", 121, 1795426642010))
    assert ack == {"v": 1, "dev": "pad-1", "type": "ack", "t": 1795426642010,
                   "body": {"epoch": "9c1e44a0", "upto": 121, "now": 1795426642010}}
    cmd = json.loads(protocol.encode_cmd("pad-1", "c-7f3a2b", "blink", {"times": 3},
                                         1795426660000, 1795426650000))
    assert cmd["id"] == "c-7f3a2b" and cmd["body"] == {"name": "blink", "args": {"times": 3},
                                                       "deadline": 1795426660000}
    assert json.loads(protocol.encode_ctl_rebirth("pad-1", 5))["type"] == "rebirth"
    with pytest.raises(ProtocolError) as ei:
        protocol.encode_cmd("pad-1", "c-1", "blink", {"x": "y" * 5000}, 1, 0)
    assert ei.value.reason == "oversized"
    assert json.loads(protocol.encode_gateway_state(False, None))["type"] == "offline"


def _outcome(fn, topic, payload):
    try:
        return ("ok", fn(topic, payload))
    except ProtocolError as exc:
        return ("refused", exc.reason, exc.detail)


def _event_variants():
    """Events with every field missing, of each wrong type, at and past its bounds, extra and
    duplicated keys, and payloads that are not JSON objects."""
    base = {"v": 1, "dev": "pad-1", "type": "tag.placed", "seq": 7, "t": 1795426642001,
            "body": {"uid": "04a1b2", "n": 1}}
    values = [None, True, False, 0, 1, -1, 1.0, 7.5, 2**53 - 1, 2**53, 2**63, 2**64 - 1, 2**64,
              MAX_T, MAX_T + 1, "", "1", "pad-1", "pad-2", "tag.placed", "Tag Placed",
              "a" * 64, "a" * 65, [], [1], {}, {"a": None}]
    out = [raw(base)]
    for field in base:
        out.append(raw({k: v for k, v in base.items() if k != field}))
        for value in values:
            out.append(raw(base | {field: value}))
    out.append(raw(base | {"extra": 1, "id": "x"}))
    text = raw(base).decode()
    out += [(text[:-1] + f',"{k}":{v}}}').encode()   # a duplicated key: the last one counts
            for k, v in (("seq", '"x"'), ("seq", "8"), ("t", "null"), ("body", "[]"),
                         ("v", "2"), ("dev", '"pad-2"'), ("type", '"x y"'))]
    out += [b"[]", b"null", b"7", b'"evt"', b"{", b"", b"\xff", text.encode()[:-1],
            (b'{"v":1,"dev":"pad-1","type":"x","seq":1,"t":null,"body":{"n":1e400}}'),
            (b'{"v":1,"dev":"pad-1","type":"x","seq":1,"t":null,"body":{"n":"\\ud800"}}'),
            b" " + raw(base) + b" ", raw(base | {"body": {"pad": "x" * 4096}})]
    return out


def test_the_event_fast_path_accepts_and_refuses_exactly_as_the_checked_path():
    """`decode` takes a fast path for events on a known topic (issue 18): for every variant,
    the same Event or the same refusal (reason and detail) as `decode_checked`."""
    topic = "pe/1/pad-1/evt"
    protocol.parse_topic(topic)  # a topic seen before: the fast path applies
    variants = _event_variants()
    accepted = 0
    for payload in variants:
        fast, checked = _outcome(decode, topic, payload), _outcome(protocol.decode_checked, topic,
                                                                   payload)
        assert fast == checked, payload
        accepted += fast[0] == "ok"
    assert 0 < accepted < len(variants) // 2  # the corpus has both, mostly refusals
