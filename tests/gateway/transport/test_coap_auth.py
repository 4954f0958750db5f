"""CoAP device authentication (gateway/transport/coap_auth.py, docs/protocol.md "CoAP authentication"):
the firmware's HMAC against Python's, the gateway against an independent peer (`coap-client`,
libcoap3-bin) sending unsigned, forged and replayed requests, and the firmware's own signing."""
from __future__ import annotations

import hashlib
import hmac
import json
import random

import httpx
import pytest
from aiocoap.numbers.codes import Code

from gateway.transport import coap_auth
from gateway.transport.coap_auth import CoapAuth, KeyFileError, Refused, Session, add_key, parse_keys
from tests.support.coap_harness import CoapGateway
from tests.support.coap_peer import CLIENT, birth, coap, envelope
from tests.support.micropython import run_micropython

needs_client = pytest.mark.skipif(CLIENT is None, reason="coap-client not installed "
                                  "(apt-get install libcoap3-bin)")


# -- the firmware's HMAC and signature -----------------------------------------------------------

FW_HMAC = '''
from binascii import hexlify, unhexlify
from hashlib import sha256
from edge.coap import hmac_pads, hmac_end, CoapTransport, POST, OPT_URI_PATH, OPT_URI_QUERY, \\
    OPT_CONTENT_FORMAT, OPT_BLOCK1, block_opt
for k, m in %(cases)r:
    ipad, opad = hmac_pads(unhexlify(k))
    h = sha256(ipad)
    h.update(unhexlify(m))
    print(hexlify(hmac_end(opad, h)).decode())
t = CoapTransport("pad-1", "127.0.0.1", password=%(key)r)
t._nonce = unhexlify(%(nonce)r)
t._ctr = 41
opts = [(OPT_URI_PATH, "pe"), (OPT_URI_PATH, "1"), (OPT_URI_PATH, "pad-1"), (OPT_URI_PATH, "evt"),
        (OPT_CONTENT_FORMAT, 50), (OPT_URI_QUERY, "hb=30"), (OPT_URI_QUERY, "s=7"),
        (OPT_BLOCK1, block_opt(1, True))]
print(hexlify(t._sign(POST, opts, b'{"a":1}')).decode())
t._nonce = None
print(hexlify(t._sign(POST, opts[:3] + [(OPT_URI_PATH, "auth")], None)).decode())
print(hexlify(t._sign(POST, opts[:4] + [(OPT_URI_QUERY, "hold=5")], None)).decode())
'''


def test_firmware_hmac_and_signature_match_python():
    rng = random.Random(5)
    # key lengths around the block size, messages empty to several blocks
    cases = [(bytes(rng.randrange(256) for _ in range(kl)).hex(),
              bytes(rng.randrange(256) for _ in range(ml)).hex())
             for kl, ml in [(32, 0), (32, 5), (1, 64), (63, 65), (64, 200), (32, 1500)]]
    key = bytes(range(32))
    nonce = bytes.fromhex("0102030405060708")
    r = run_micropython(FW_HMAC % {"cases": cases, "key": key.hex(), "nonce": nonce.hex()})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    for (k, m), got in zip(cases, lines):
        assert got == hmac.new(bytes.fromhex(k), bytes.fromhex(m), hashlib.sha256).hexdigest()
    b1 = (1 << 4) | 8 | 6
    assert lines[len(cases)] == coap_auth.option_value(
        key, nonce, 42, int(Code.POST), "pe/1/pad-1/evt", ["hb=30", "s=7"], b'{"a":1}',
        block1=b1).hex()
    assert lines[len(cases) + 1] == coap_auth.option_value(
        key, bytes(8), 43, int(Code.POST), "pe/1/pad-1/auth", []).hex()
    assert lines[len(cases) + 2] == coap_auth.option_value(
        key, bytes(8), 44, int(Code.POST), "pe/1/pad-1/evt", ["hold=5"]).hex()


def test_firmware_config_checks_the_key():
    r = run_micropython('''
import json
from edge import config
def load(key):
    with open("/tmp/pe-auth-cfg.json", "w") as f:
        json.dump({"device_id": "pad-1", "kind": "sample-pad", "transport": "coap",
                   "coap": {"host": "10.0.0.1", "key": key}}, f)
    try:
        c = config.load("/tmp/pe-auth-cfg.json")
        print(c["mqtt"]["password"] == key, c["mqtt"]["user"])
    except config.ConfigError as e:
        print("error", e)
load("ab" * 32)
load("ab" * 31)
load("zz" * 32)
''')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["True pad-1", "error coap.key must be 64 hex digits",
                                     "error coap.key must be 64 hex digits"]


# -- the check, the window and the keys file -----------------------------------------------------

def test_replay_window_accepts_reordering_refuses_repeats_and_stale_counters():
    s = Session(b"n" * 8)
    assert all(s.accept(c) for c in (1, 3, 2, 10))
    assert not s.accept(3) and not s.accept(10)
    assert s.accept(9) and s.accept(10 + 70)            # jumps ahead
    assert not s.accept(80 - 64) and s.accept(80 - 63)  # the window is 64 counters
    assert not s.accept(80 - 63)


def test_keys_file_is_validated_and_rotation_ends_the_session(tmp_path):
    keys = tmp_path / "coap-keys.json"
    with pytest.raises(KeyFileError, match="not found"):
        CoapAuth(keys)
    k1 = add_key(keys, "pad-1")
    assert keys.stat().st_mode & 0o777 == 0o600
    with pytest.raises(KeyFileError, match="already has"):
        add_key(keys, "pad-1")
    for bad, why in [("[]", "expected an object"), ('{"Pad": "00"}', "not a device id"),
                     ('{"pad-2": "abcd"}', "64 hex digits"), ("{", "not valid JSON")]:
        with pytest.raises(KeyFileError, match=why):
            parse_keys(bad, "f")
    auth = CoapAuth(keys)
    challenge = auth.challenge("pad-1")
    opt = coap_auth.proof_option(bytes.fromhex(k1), "pad-1", challenge, 7)
    nonce = auth.check("pad-1", "auth", int(Code.POST), [], 0, 0, challenge, opt)
    assert len(nonce) == 8 and "pad-1" in auth.sessions
    add_key(keys, "pad-1", rotate=True)
    auth.reload(force=True)
    assert "pad-1" not in auth.sessions  # the old key's session is over
    challenge = auth.challenge("pad-1")
    with pytest.raises(Refused) as e:
        auth.check("pad-1", "auth", int(Code.POST), [], 0, 0, challenge,
                   coap_auth.proof_option(bytes.fromhex(k1), "pad-1", challenge, 8))
    assert e.value.reason == "bad_mac"
    keys.write_text("{broken")  # a bad edit later: logged, the loaded keys stay
    auth.reload(force=False)
    assert "pad-1" in auth.keys


# -- the gateway against coap-client -------------------------------------------------------------

@pytest.fixture(scope="module")
def agw(broker, tmp_path_factory):
    g = CoapGateway(tmp_path_factory.mktemp("coap-auth"), broker.port, heartbeat_s=5.0).start()
    yield g
    g.stop()


def signed(g: CoapGateway, key: bytes, nonce: bytes, counter: int, method: str, path: str,
           payload: str | None = None, as_dev: str | None = None) -> tuple[str, bytes]:
    """coap-client with the Edge-Auth option; the MAC is made for `as_dev`'s path if given
    (a forgery: another device's valid MAC on this request)."""
    uri_path, _, query = path.lstrip("/").partition("?")
    mac_path = uri_path if as_dev is None else uri_path.replace(uri_path.split("/")[2], as_dev, 1)
    opt = coap_auth.option_value(key, nonce, counter, int(getattr(Code, method.upper())),
                                 mac_path, query.split("&") if query else [],
                                 (payload or "").encode())
    return coap(g, method, path, payload, extra=("-O", f"{coap_auth.OPTION},0x{opt.hex()}"),
                keep_body=True)


def challenge(g: CoapGateway, dev: str) -> bytes:
    code, ch = coap(g, "get", f"/pe/1/{dev}/auth", keep_body=True)
    assert code == "2.05" and len(ch) == coap_auth.CHALLENGE_LEN, (code, ch)
    return ch


def prove(g: CoapGateway, dev: str, key: bytes, ch: bytes, counter: int = 12345
          ) -> tuple[str, bytes]:
    """coap-client POSTs the challenge back, signed: (code, session nonce or diagnostic)."""
    opt = coap_auth.proof_option(key, dev, ch, counter)
    return coap(g, "post", f"/pe/1/{dev}/auth", ch,
                extra=("-O", f"{coap_auth.OPTION},0x{opt.hex()}"), keep_body=True)


def session(g: CoapGateway, dev: str, key: bytes) -> bytes:
    code, nonce = prove(g, dev, key, challenge(g, dev))
    assert code == "2.04" and len(nonce) == 8, (code, nonce)
    return nonce


@needs_client
def test_unsigned_requests_get_401_and_nothing_is_kept(agw):
    add_key(agw.keys_file, "ca-1")
    before = agw.get("/stats")["coap"].get("auth_refused", 0)
    code, body = coap(agw, "post", "/pe/1/ca-1/birth?s=1", birth("ca-1"), keep_body=True)
    assert code == "4.01" and b"Edge-Auth option (65000) missing" in body
    # a device nobody provisioned: refused too (no key, and unauthenticated devices are off)
    code, body = coap(agw, "post", "/pe/1/ca-zz/evt?s=1",
                      envelope("ca-zz", "tag.placed", {}, seq=1), keep_body=True)
    assert code == "4.01" and b"no CoAP key for device 'ca-zz'" in body
    code, _ = coap(agw, "get", "/pe/1/ca-1/cmd?hold=0", keep_body=True)
    assert code == "4.01"
    stats = agw.get("/stats")["coap"]
    assert stats["auth_refused"] == before + 3
    assert stats["auth_refused_missing"] >= 2 and stats["auth_refused_unknown_device"] >= 1
    assert not agw.edge.handles("ca-1") and not agw.edge.handles("ca-zz")  # not registered
    assert agw.device("ca-1") is None and agw.events("ca-1") == []
    r = httpx.get(agw.url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert 'pe_coap_auth_refused_total{reason="missing"}' in r.text


@needs_client
def test_signed_requests_work_forged_and_replayed_ones_are_refused(agw):
    k1 = bytes.fromhex(add_key(agw.keys_file, "ca-2"))
    k3 = bytes.fromhex(add_key(agw.keys_file, "ca-3"))
    nonce = session(agw, "ca-2", k1)
    nonce3 = session(agw, "ca-3", k3)  # ca-3 is up: only its key can speak for it
    code, body = signed(agw, k1, nonce, 1, "post", "/pe/1/ca-2/birth?s=1", birth("ca-2"))
    assert code == "2.04" and json.loads(body)["type"] == "ack"
    evt = envelope("ca-2", "tag.placed", {"uid": "04a1"}, seq=1)
    code, body = signed(agw, k1, nonce, 2, "post", "/pe/1/ca-2/evt?s=1", evt)
    assert code == "2.04" and json.loads(body)["body"]["upto"] == 1
    # the same request again (a new message id: not a retransmission): a replay
    code, body = signed(agw, k1, nonce, 2, "post", "/pe/1/ca-2/evt?s=1", evt)
    assert code == "4.01" and b"replayed or stale counter 2" in body
    # ca-2's valid MAC on a request that speaks for ca-3
    forged = envelope("ca-3", "tag.placed", {"uid": "66"}, seq=1)
    code, body = signed(agw, k1, nonce, 3, "post", "/pe/1/ca-3/evt?s=1", forged, as_dev="ca-2")
    assert code == "4.01" and b"bad MAC" in body
    # ca-2's key on ca-3's path, with either nonce
    for n in (nonce, nonce3):
        code, body = signed(agw, k1, n, 4, "post", "/pe/1/ca-3/evt?s=1", forged)
        assert code == "4.01" and b"bad MAC" in body
    # a changed payload under a valid MAC
    code, body = coap(agw, "post", "/pe/1/ca-2/evt?s=1",
                      envelope("ca-2", "tag.placed", {"uid": "ff"}, seq=2),
                      extra=("-O", f"{coap_auth.OPTION},0x" + coap_auth.option_value(
                          k1, nonce, 5, int(Code.POST), "pe/1/ca-2/evt", ["s=1"],
                          evt.encode()).hex()), keep_body=True)
    assert code == "4.01" and b"bad MAC" in body
    # a new session: the old nonce's requests are refused
    nonce2 = session(agw, "ca-2", k1)
    code, _ = signed(agw, k1, nonce, 6, "post", "/pe/1/ca-2/hb?s=1")
    assert code == "4.01"
    code, _ = signed(agw, k1, nonce2, 1, "post", "/pe/1/ca-2/hb?s=1")
    assert code == "2.04"
    code, _ = signed(agw, k1, bytes(8), 7, "put", "/pe/1/ca-2/auth")
    assert code == "4.05"  # GET a challenge, POST a proof
    assert [e["seq"] for e in agw.events("ca-2")] == [1] and agw.events("ca-3") == []
    stats = agw.get("/stats")["coap"]
    assert stats["auth_refused_replay"] >= 1 and stats["auth_refused_bad_mac"] >= 3


@needs_client
def test_allow_unauthenticated_is_explicit(broker, tmp_path):
    g = CoapGateway(tmp_path / "gw", broker.port, allow_unauthenticated=True).start()
    try:
        add_key(g.keys_file, "cu-keyed")
        code, _ = coap(g, "post", "/pe/1/cu-open/birth?s=1", birth("cu-open"), keep_body=True)
        assert code == "2.04"  # a device without a key: served, as configured
        code, _ = coap(g, "post", "/pe/1/cu-keyed/birth?s=1", birth("cu-keyed"), keep_body=True)
        assert code == "4.01"  # a device with a key must always use it
    finally:
        g.stop()


def _datagram(key: bytes, nonce: bytes, counter: int, dev: str, channel: str, mid: int,
              payload: bytes = b"", query: tuple[str, ...] = ()) -> bytes:
    from aiocoap import Message
    from aiocoap.numbers.types import Type
    from aiocoap.optiontypes import OpaqueOption

    m = Message(code=Code.POST, payload=payload, uri_path=("pe", "1", dev, channel),
                uri_query=query)
    m.mid, m.token, m.mtype = mid, mid.to_bytes(2, "big"), Type.CON
    m.opt.add_option(OpaqueOption(coap_auth.OPTION, coap_auth.option_value(
        key, nonce, counter, int(Code.POST), f"pe/1/{dev}/{channel}", list(query), payload)))
    return m.encode()


def _exchange(sock, data: bytes) -> tuple[str, bytes]:
    from aiocoap import Message

    sock.send(data)
    while True:
        r = Message.decode(sock.recv(2048))
        if r.code != Code.EMPTY:
            return r.code.dotted, r.payload


def test_a_retransmission_is_answered_again_a_replay_after_the_dedupe_table_is_refused(
        broker, tmp_path):
    """The same datagram (same message id) again is a CoAP retransmission: answered from the
    dedupe table, never taken for a replay. Once its entry is gone (a table of one entry
    here), the same counter is a replay: 4.01, and the device starts a new session."""
    import socket

    g = CoapGateway(tmp_path / "gw", broker.port, dedupe_max=1).start()
    try:
        key = bytes.fromhex(add_key(g.keys_file, "rt-1"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(10)
            s.connect(("127.0.0.1", g.coap_port))
            ch = g.edge.auth.challenge("rt-1")
            code, nonce = _exchange(s, _datagram(key, bytes(8), 99, "rt-1", "auth", 1, ch))
            assert code == "2.04" and len(nonce) == 8
            hb = _datagram(key, nonce, 1, "rt-1", "hb", 2, query=("hb=60",))
            assert _exchange(s, hb) == ("2.04", b"")
            assert _exchange(s, hb) == ("2.04", b"")  # retransmission: same answer
            hits = g.get("/stats")["coap"]["dedupe_hits"]
            assert hits >= 1 and g.get("/stats")["coap"].get("auth_refused_replay", 0) == 0
            assert _exchange(s, _datagram(key, nonce, 2, "rt-1", "hb", 3)) == ("2.04", b"")
            code, why = _exchange(s, hb)  # mid 2 left the one-entry table: a replay now
            assert code == "4.01" and b"replayed or stale counter 1" in why
    finally:
        g.stop()


# -- replaying a captured `auth` (issue 14) -----------------------------------------------------

class RecordingRelay:
    """A UDP relay between one device and the gateway that records every datagram the device
    sends (what a sniffer on the Wi-Fi sees) and passes everything on unchanged."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent: list[bytes] = []
        self.client = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select

        while not self._stop:
            ready, _, _ = select.select([self.sock, self.up], [], [], 0.1)
            for s in ready:
                try:
                    data, addr = s.recvfrom(2048)
                except OSError:
                    return
                if s is self.sock:
                    self.client = addr
                    self.sent.append(data)
                    self.up.sendto(data, self.target)
                elif self.client is not None:
                    self.sock.sendto(data, self.client)

    def auth_requests(self) -> list[bytes]:
        """The device's requests on .../auth, as captured (the exact bytes)."""
        from aiocoap import Message

        out = []
        for d in self.sent:
            try:
                m = Message.decode(d)
            except Exception:  # noqa: BLE001, S112 - pings, not our business
                continue
            if m.code.is_request() and m.opt.uri_path[-1:] == ("auth",):
                out.append(d)
        return out

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        self.up.close()


REPLAY_DEVICE = r'''
import asyncio, os
from edge.coap import CoapTransport
def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
async def main():
    c = CoapTransport("%(dev)s", "127.0.0.1", %(port)d, keepalive=60, password="%(key)s",
                      ack_timeout=300)
    asyncio.create_task(c.run())
    while not c.is_connected():
        await asyncio.sleep_ms(20)
    while not exists("%(go)s"):  # the test replays the captured auth meanwhile
        await asyncio.sleep_ms(20)
    try:
        await c.publish("pe/1/%(dev)s/hb", b"")
        print("next request ok")
    except OSError as e:
        print("next request failed", e)
    print("connects", c.stats["connects"], "unauth", c.stats["unauth"])
asyncio.run(main())
'''


def test_replaying_a_captured_auth_does_not_reset_the_session(broker, tmp_path):
    """The real firmware authenticates through a relay that records its datagrams; the
    captured `auth` requests are sent again, byte for byte, from another address (a sniffer
    replaying them). The device's session must be untouched: its next request succeeds, no
    4.01, no reconnect; the replayed proof is answered 4.01 and counted."""
    import socket
    import subprocess

    from aiocoap import Message

    from hil.harness import wait_for
    from hil.sim.firmware import build_mpy, micropython_binary, micropython_env

    g = CoapGateway(tmp_path / "gw", broker.port).start()
    relay = RecordingRelay(g.coap_port)
    go = tmp_path / "go"
    script = tmp_path / "replay_device.py"
    dev = "rp-1"
    key = add_key(g.keys_file, dev)
    script.write_text(REPLAY_DEVICE % {"dev": dev, "port": relay.port, "key": key,
                                       "go": go})
    proc = subprocess.Popen([micropython_binary(), str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=micropython_env(path=build_mpy()))
    try:
        wait_for(lambda: dev in g.edge.auth.sessions, 20, what="the device's session")
        session = g.edge.auth.sessions[dev]
        captured = relay.auth_requests()
        assert captured, relay.sent
        before = dict(g.edge.counters)
        answers = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the attacker
            s.settimeout(10)
            s.connect(("127.0.0.1", g.coap_port))
            for data in captured:
                s.send(data)
                while True:
                    r = Message.decode(s.recv(2048))
                    if r.code.is_response():
                        answers.append((r.code.dotted, bytes(r.payload)))
                        break
        untouched = g.edge.auth.sessions.get(dev) is session
        go.write_text("go")
        out, _ = proc.communicate(timeout=60)
        # the device did not notice: its next request succeeds, no 4.01, no new session
        assert "next request ok" in out and "connects 1 unauth 0" in out, (out, answers)
        assert untouched
        # the replayed session start is refused, and counted
        post = [a for d, a in zip(captured, answers) if Message.decode(d).code == Code.POST]
        assert post and all(code == "4.01" for code, _ in post), answers
        assert all(b"replayed auth" in why for _, why in post), answers
        # (asking for a challenge is unsigned and harmless: the replay just gets a new one)
        for d, (code, _) in zip(captured, answers):
            if Message.decode(d).code == Code.GET:
                assert code == "2.05" and not Message.decode(d).opt.get_option(
                    coap_auth.OPTION)
        assert g.edge.counters["auth_refused"] > before.get("auth_refused", 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        relay.close()
        g.stop()


@needs_client
def test_a_replayed_or_forged_proof_is_refused_and_the_session_stays(agw, caplog):
    """coap-client as the attacker: the same proof again (a new message id, so not a
    retransmission), proofs over a forged, another device's or a superseded challenge, and
    firmware from before challenges (an empty signed POST): all 4.01, counted, logged, and
    the device's current session still works."""
    import logging

    key = bytes.fromhex(add_key(agw.keys_file, "cr-1"))
    k2 = bytes.fromhex(add_key(agw.keys_file, "cr-2"))
    ch = challenge(agw, "cr-1")
    code, nonce = prove(agw, "cr-1", key, ch)
    assert code == "2.04" and len(nonce) == 8
    code, _ = signed(agw, key, nonce, 1, "post", "/pe/1/cr-1/hb?hb=60")
    assert code == "2.04"
    before = dict(agw.get("/stats")["coap"])
    agw.edge.auth.log_every_s = 1e9  # one log line per reason, however long this takes
    caplog.set_level(logging.WARNING, logger="gateway.coap")
    refused = []
    for _ in range(3):  # the captured proof, again and again
        refused.append(prove(agw, "cr-1", key, ch))
    later = challenge(agw, "cr-1")  # a challenge issued after ch, never used: still fine...
    forged = bytearray(later)
    forged[7] ^= 1  # ...but not with another issue number
    refused.append(prove(agw, "cr-1", key, bytes(forged)))
    refused.append(prove(agw, "cr-1", key, challenge(agw, "cr-2")))  # cr-2's challenge
    refused.append(prove(agw, "cr-1", k2, later))  # another device's key
    old = coap_auth.option_value(key, bytes(8), 99, int(Code.POST), "pe/1/cr-1/auth", [])
    refused.append(coap(agw, "post", "/pe/1/cr-1/auth",  # firmware before challenges
                        extra=("-O", f"{coap_auth.OPTION},0x{old.hex()}"), keep_body=True))
    assert [c for c, _ in refused] == ["4.01"] * 7, refused
    assert all(b"replayed auth: challenge" in b for _, b in refused[:3]), refused
    assert b"not a challenge this gateway gave" in refused[3][1]
    assert b"not a challenge this gateway gave" in refused[4][1]
    assert b"bad MAC" in refused[5][1]
    assert b"auth needs a challenge: GET /pe/1/cr-1/auth first" in refused[6][1]
    # the session the device started is untouched: its next counter is accepted
    code, _ = signed(agw, key, nonce, 2, "post", "/pe/1/cr-1/hb?hb=60")
    assert code == "2.04"
    stats = agw.get("/stats")["coap"]
    for reason, n in [("auth_replay", 3), ("bad_challenge", 2), ("bad_mac", 1),
                      ("no_challenge", 1)]:
        assert stats.get(f"auth_refused_{reason}", 0) - before.get(f"auth_refused_{reason}", 0) \
            == n, reason
    lines = [r.getMessage() for r in caplog.records if "reason=auth_replay" in r.getMessage()]
    assert len(lines) == 1 and "device=cr-1" in lines[0], lines  # rate-limited
    r = httpx.get(agw.url + "/metrics", timeout=10)
    assert 'pe_coap_auth_refused_total{reason="auth_replay"}' in r.text
    # the unused later challenge still starts a session (and only once)
    code, nonce2 = prove(agw, "cr-1", key, later)
    assert code == "2.04" and nonce2 != nonce
    assert prove(agw, "cr-1", key, later)[0] == "4.01"
    assert signed(agw, key, nonce, 3, "post", "/pe/1/cr-1/hb?hb=60")[0] == "4.01"  # old one ended
    assert signed(agw, key, nonce2, 1, "post", "/pe/1/cr-1/hb?hb=60")[0] == "2.04"


def test_challenges_expire_are_single_use_and_bound_to_the_gateway_run():
    now = [1000.0]
    key = bytes(range(32))
    auth = CoapAuth(keys={"pad-1": key, "pad-2": bytes(32)}, challenge_ttl_s=60,
                    clock=lambda: now[0])

    def prove_(ch, dev="pad-1", a=auth):
        return a.check(dev, "auth", int(Code.POST), [], 0, 0, ch,
                       coap_auth.proof_option(key, dev, ch, 5))

    ch = auth.challenge("pad-1")
    assert auth.sessions == {} and auth.used == {}  # asking changes nothing
    now[0] += 61
    with pytest.raises(Refused) as e:
        prove_(ch)
    assert e.value.reason == "challenge_expired" and auth.sessions == {}
    ch = auth.challenge("pad-1")
    now[0] += 60
    first = prove_(ch)  # 60 s old: still fine
    with pytest.raises(Refused) as e:
        prove_(ch)
    assert e.value.reason == "auth_replay" and auth.sessions["pad-1"].nonce == first
    restarted = CoapAuth(keys={"pad-1": key}, clock=lambda: now[0])  # a new gateway process
    with pytest.raises(Refused) as e:
        prove_(auth.challenge("pad-1"), a=restarted)
    assert e.value.reason == "bad_challenge" and restarted.sessions == {}
    with pytest.raises(Refused) as e:
        auth.challenge("pad-9")  # nobody provisioned it
    assert e.value.reason == "unknown_device"


def test_a_challenge_flood_keeps_no_state_and_does_not_crowd_out_the_device():
    """Challenges are stateless: 20,000 of them for one device leave the gateway's memory
    where it was, and the challenge the device asked for before the flood still works."""
    import tracemalloc

    key = bytes(range(32))
    auth = CoapAuth(keys={"pad-1": key})
    mine = auth.challenge("pad-1")
    auth.challenge("pad-1")  # warm up
    only_auth = [tracemalloc.Filter(True, coap_auth.__file__)]  # not other tests' threads
    tracemalloc.start()
    try:
        base = tracemalloc.take_snapshot().filter_traces(only_auth)
        for _ in range(20_000):
            auth.challenge("pad-1")
        after = tracemalloc.take_snapshot().filter_traces(only_auth)
    finally:
        tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(base, "filename"))
    assert grown < 4096, grown  # (a table of 20,000 challenges would be over a megabyte)
    assert auth.sessions == {} and auth.used == {}
    nonce = auth.check("pad-1", "auth", int(Code.POST), [], 0, 0, mine,
                       coap_auth.proof_option(key, "pad-1", mine))
    assert auth.sessions["pad-1"].nonce == nonce


def test_the_documented_examples_are_what_the_code_computes():
    """docs/protocol.md is the contract other teams implement the exchange from: its example
    proof and request options must be the real ones."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text()
    key = bytes(range(32))
    ch = bytes.fromhex("000000000000002a0000012c9d41e07b5a6c2f18")
    assert ch.hex() in doc and len(ch) == coap_auth.CHALLENGE_LEN
    assert "0x" + coap_auth.proof_option(key, "pad-1", ch, 0x3039).hex() in doc
    printf = "".join(f"\\x{b:02x}" for b in ch)
    assert printf in doc
    evt = b'{"v":1,"dev":"pad-1","type":"tag.placed","seq":121,"t":1795426642001,' \
          b'"body":{"uid":"04a1b2c3d4e5f6"}}'
    assert evt.decode() in doc
    assert "0x" + coap_auth.option_value(key, bytes.fromhex("5b0e9f1c33a27d41"), 1, 2,
                                         "pe/1/pad-1/evt", ["s=42"], evt).hex() in doc


def _signed_blocks(g: CoapGateway, key: bytes, nonce: bytes, counter: int, dev: str,
                   query: str) -> list[tuple[str, bytes]]:
    """GET /pe/1/{dev}/cmd block by block, as a device does: every block request signed with a
    counter of its own (aiocoap's own blockwise handling would resend one counter: a replay)."""
    import asyncio

    import aiocoap
    from aiocoap.optiontypes import BlockOption, OpaqueOption

    path = f"pe/1/{dev}/cmd"

    async def main() -> list[tuple[str, bytes]]:
        ctx = await aiocoap.Context.create_client_context()
        out: list[tuple[str, bytes]] = []
        try:
            for num in range(16):
                b2 = BlockOption.BlockwiseTuple(num, False, 6)  # 1024-byte blocks
                msg = aiocoap.Message(code=Code.GET,
                                      uri=f"coap://127.0.0.1:{g.coap_port}/{path}?{query}")
                msg.opt.block2 = b2
                value = (num << 4) | 6
                msg.opt.add_option(OpaqueOption(coap_auth.OPTION, coap_auth.option_value(
                    key, nonce, counter + num, int(Code.GET), path, [query], b"", 0, value)))
                res = await asyncio.wait_for(
                    ctx.request(msg, handle_blockwise=False).response, 20)
                out.append((res.code.dotted, res.payload))
                if not res.code.is_successful() or res.opt.block2 is None or not res.opt.block2.more:
                    return out
            return out
        finally:
            await ctx.shutdown()

    return asyncio.run(main())


@needs_client
def test_a_command_larger_than_one_block_reaches_a_signed_device(agw):
    """Responses over 1024 bytes go Block2 (RFC 7959), each block request signed with its own
    counter. aiocoap serves blocks 1.. from a cache keyed by the request's options: with the
    Edge-Auth option (a new counter each time) in the key, block 1 never matched (4.08
    Request Entity Incomplete) and a command over ~1 KB (a locker's `load_codes`) never
    arrived. The option is checked, then dropped before the cache sees the request."""
    dev = "ca-big"
    key = bytes.fromhex(add_key(agw.keys_file, dev))
    nonce = session(agw, dev, key)
    code, _ = signed(agw, key, nonce, 1, "post", f"/pe/1/{dev}/birth?s=1", birth(dev))
    assert code == "2.04"
    text = "x" * 2500  # args of ~2.5 KB: three blocks
    cmd = agw.command(dev, "blink", {"pattern": text}, f"big-{random.random()}", wait=False)
    got = _signed_blocks(agw, key, nonce, 10, dev, "s=1&hold=0")
    assert [c for c, _ in got] == ["2.05"] * len(got) and len(got) >= 3, \
        [(c, p[:60]) for c, p in got]
    msg = json.loads(b"".join(p for _, p in got))
    assert msg["id"] == cmd["id"] and msg["body"]["args"]["pattern"] == text, str(msg)[:300]
