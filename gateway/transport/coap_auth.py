"""Authentication of CoAP devices: per-device keys, an HMAC on every request, replay windows.

No DTLS-PSK (MicroPython's `tls` does DTLS with certificates only, aiocoap's DTLS server PSK
only), so CoAP devices authenticate at the application level (docs/protocol.md, "CoAP
authentication"; docs/security.md):

* every device has a 32-byte key (`tools/provision.py device`, the same run that makes its
  MQTT password); the gateway reads `{device id: hex key}` from its keys file
  (`[coap] keys_file`, written 0600 by the provisioning tool) and re-reads it when it changes;
* a session starts with a challenge and a proof. `GET /pe/1/{dev}/auth` (unsigned) returns a
  fresh challenge and changes nothing; `POST /pe/1/{dev}/auth` whose payload is that challenge,
  signed like every request (below) with the all-zero nonce, proves the key over it: the
  gateway answers 2.04 with 8 random bytes, the new session nonce, and only then forgets the
  device's previous session. A challenge starts at most one session: challenges carry an
  issue number that grows with every challenge the gateway hands out, and a proof is taken
  only over a challenge newer than the last one that started a session for that device, and
  younger than `challenge_ttl_s`. Challenges are stateless (issue number, issue time and a
  MAC under a per-process secret, bound to the device id): a flood of challenge requests
  costs no memory, and cannot crowd out the device's own challenge. A gateway restart makes
  outstanding challenges invalid, and forgets all sessions (the devices' next request gets
  4.01 and they start a new session);
* every request carries the Edge-Auth option (number 65000, experimental range, elective):
  counter (4 bytes, big-endian, +1 per request; retransmissions repeat it) + the first 16
  bytes of HMAC-SHA256(key, nonce | counter | code | path | 0 | query | 0 | block1 | block2 |
  payload), see `mac_input`;
* the gateway checks it before anything else happens (before the device is registered, before
  the ingest sees a byte) and keeps a 64-counter sliding window per device session (as DTLS
  does): a counter seen before, or older than the window, is refused. CoAP's message-layer
  deduplication (by message id) runs first, so a retransmission of a request the gateway
  already answered gets the stored answer and never reaches this check.

A refused request (a replayed or forged proof included) is answered 4.01 Unauthorized with a
one-line diagnostic, counted (`auth_refused_<reason>` at `GET /stats` and `GET /metrics`) and
logged (rate-limited), and changes no session.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.logs import RateLimitedLog

log = logging.getLogger("gateway.coap")

OPTION = 65000          # Edge-Auth (RFC 7252 12.2: 65000-65535 are for experimental use)
KEY_LEN = 32
NONCE_LEN = 8
TAG_LEN = 16            # HMAC-SHA256 truncated to 128 bits (as RFC 4868's HMAC-SHA-256-128)
OPTION_LEN = 4 + TAG_LEN
WINDOW = 64             # counters accepted out of order (two request lanes, reordering links)
AUTH_CHANNEL = "auth"
ZERO_NONCE = bytes(NONCE_LEN)
# a challenge: issue number (8, big-endian) | issue time (4, s since the gateway started) |
# HMAC-SHA256(gateway secret, device id | 0 | the 12 bytes before)[:8]. Opaque to devices.
CHALLENGE_LEN = 20
CHALLENGE_TTL_S = 60.0


class KeyFileError(ValueError):
    """The keys file is unreadable or malformed; the message says which entry and why."""


def mac_input(nonce: bytes, counter: int, code: int, path: str, query: list[str],
              block1: int, block2: int, payload: bytes) -> bytes:
    """What the tag covers. `path` is the whole Uri-Path joined by "/" ("pe/1/pad-1/evt"),
    `query` the Uri-Query options in order, `block1`/`block2` the option values (0 if absent)."""
    return b"".join((nonce, counter.to_bytes(4, "big"), bytes((code,)), path.encode(), b"\0",
                     "&".join(query).encode(), b"\0", block1.to_bytes(4, "big"),
                     block2.to_bytes(4, "big"), payload))


def tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()[:TAG_LEN]


def option_value(key: bytes, nonce: bytes, counter: int, code: int, path: str,
                 query: list[str], payload: bytes = b"", block1: int = 0,
                 block2: int = 0) -> bytes:
    """The Edge-Auth option a device sends (tests and tools sign requests with it)."""
    return counter.to_bytes(4, "big") + tag(
        key, mac_input(nonce, counter, code, path, query, block1, block2, payload))


def proof_option(key: bytes, dev: str, challenge: bytes, counter: int = 1,
                 query: list[str] | None = None) -> bytes:
    """The Edge-Auth option of a proof: `POST /pe/1/{dev}/auth`, payload = the challenge,
    signed with the all-zero nonce."""
    return option_value(key, ZERO_NONCE, counter, 2, f"pe/1/{dev}/{AUTH_CHANNEL}",
                        query or [], challenge)


# -- the keys file -----------------------------------------------------------------------------

def parse_keys(text: str, source: str) -> dict[str, bytes]:
    from gateway.devices import protocol
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KeyFileError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise KeyFileError(f"{source}: expected an object {{device id: 64 hex digits}}")
    keys = {}
    for dev, hexkey in data.items():
        if not protocol.is_device_id(dev):
            raise KeyFileError(f"{source}: {dev!r} is not a device id")
        try:
            key = bytes.fromhex(hexkey) if isinstance(hexkey, str) else b""
        except ValueError:
            key = b""
        if len(key) != KEY_LEN:
            raise KeyFileError(f"{source}: key of {dev!r} must be {2 * KEY_LEN} hex digits")
        keys[dev] = key
    return keys


def add_key(path: Path, dev: str, rotate: bool = False) -> str:
    """Give `dev` a new random key in the keys file (0600); returns it as hex. Refuses to
    replace an existing key unless `rotate`."""
    path = Path(path)
    try:
        current = json.loads(path.read_text())
    except FileNotFoundError:
        current = {}
    if dev in current and not rotate:
        raise KeyFileError(f"device {dev!r} already has a CoAP key in {path} (rotate it)")
    current[dev] = secrets.token_hex(KEY_LEN)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(current, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return current[dev]


# -- sessions and replay windows ---------------------------------------------------------------

@dataclass
class Session:
    nonce: bytes
    high: int = 0       # highest counter accepted
    seen: int = 0       # bit i: counter high - i was accepted

    def accept(self, counter: int) -> bool:
        if counter > self.high:
            shift = counter - self.high
            self.seen = ((self.seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.high = counter
            return True
        back = self.high - counter
        if back >= WINDOW or self.seen >> back & 1:
            return False
        self.seen |= 1 << back
        return True


class Refused(Exception):
    """A request that must be answered 4.01; `reason` is the counter name, str() the text."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


class CoapAuth:
    """Keys, sessions, challenges and the check. `challenge` hands out a challenge (and
    changes nothing); `check` returns the new session nonce for a valid proof (`POST auth`),
    None for any other accepted request, and raises `Refused` otherwise (changing nothing)."""

    def __init__(self, keys_file: Path | None = None, allow_unauthenticated: bool = False,
                 keys: dict[str, bytes] | None = None, log_every_s: float = 5.0,
                 challenge_ttl_s: float = CHALLENGE_TTL_S,
                 clock: Any = time.monotonic) -> None:
        self.keys_file = Path(keys_file) if keys_file is not None else None
        self.allow_unauthenticated = allow_unauthenticated
        self.keys: dict[str, bytes] = dict(keys or {})
        self.sessions: dict[str, Session] = {}
        self.challenge_ttl_s = challenge_ttl_s
        self.clock = clock
        self._t0 = clock()
        self._secret = secrets.token_bytes(KEY_LEN)  # per process: a restart voids challenges
        self._issued = 0  # challenges handed out (the issue number of the last one)
        self.used: dict[str, int] = {}  # device -> issue number of the challenge of its session
        self._mtime: int | None = None
        # refusals are logged at most once per reason every `log_every_s` (gateway/logs.py)
        self.refusal_log = RateLimitedLog(log, "coap request refused", log_every_s)
        if self.keys_file is not None:
            self.reload(force=True)

    @property
    def log_every_s(self) -> float:
        return self.refusal_log.every_s

    @log_every_s.setter
    def log_every_s(self, value: float) -> None:
        self.refusal_log.every_s = value

    @property
    def enforcing(self) -> bool:
        return not self.allow_unauthenticated

    def reload(self, force: bool = False) -> None:
        """Re-read the keys file if it changed. A bad file at start is an error; a bad
        file later is logged and the keys loaded before stay in force."""
        if self.keys_file is None:
            return
        try:
            st = self.keys_file.stat()
        except FileNotFoundError:
            if force:
                raise KeyFileError(f"CoAP keys file {self.keys_file} not found "
                                   "(tools/provision.py writes it)") from None
            return
        if not force and st.st_mtime_ns == self._mtime:
            return
        self._mtime = st.st_mtime_ns
        try:
            keys = parse_keys(self.keys_file.read_text(), str(self.keys_file))
        except (KeyFileError, OSError) as exc:
            if force:
                raise KeyFileError(str(exc)) from None
            log.error("coap keys file not reloaded (keeping %d keys) error=%s",
                      len(self.keys), exc)
            return
        for dev in [d for d in self.sessions if self.keys.get(d) != keys.get(d)]:
            del self.sessions[dev]  # a rotated or removed key ends the device's session
        for dev in [d for d in self.used if d not in keys]:
            del self.used[dev]  # (bounded by the provisioned devices)
        self.keys = keys
        log.info("coap keys loaded devices=%d file=%s", len(keys), self.keys_file)

    def key_of(self, dev: str) -> bytes | None:
        key = self.keys.get(dev)
        if key is None:
            self.reload()  # provisioned a minute ago? (one stat per miss)
            key = self.keys.get(dev)
        return key

    def _now_s(self) -> int:
        return int(self.clock() - self._t0)

    def _challenge_mac(self, dev: str, head: bytes) -> bytes:
        return hmac.new(self._secret, dev.encode() + b"\0" + head, hashlib.sha256).digest()[:8]

    def challenge(self, dev: str) -> bytes:
        """A fresh challenge for `dev` (`GET auth`). Keeps no state: it only moves the
        issue counter on. Refused for a device without a key (unless unauthenticated devices
        are allowed)."""
        if self.key_of(dev) is None and not self.allow_unauthenticated:
            raise Refused("unknown_device", f"unauthenticated: no CoAP key for device {dev!r} "
                          "(tools/provision.py device ...)")
        self._issued += 1
        head = self._issued.to_bytes(8, "big") + self._now_s().to_bytes(4, "big")
        return head + self._challenge_mac(dev, head)

    def _take_challenge(self, dev: str, challenge: bytes) -> int:
        """The issue number of a challenge `dev` may still use; raises `Refused` otherwise."""
        head = challenge[:12]
        if not hmac.compare_digest(self._challenge_mac(dev, head), challenge[12:]):
            raise Refused("bad_challenge", "unauthenticated: not a challenge this gateway "
                          f"gave {dev!r} (it restarted since?): GET .../{AUTH_CHANNEL} again")
        number = int.from_bytes(head[:8], "big")
        age = self._now_s() - int.from_bytes(head[8:], "big")
        if age > self.challenge_ttl_s:
            raise Refused("challenge_expired", f"unauthenticated: challenge expired ({age} s "
                          f"old, limit {self.challenge_ttl_s:.0f} s): GET .../{AUTH_CHANNEL} again")
        if number <= self.used.get(dev, 0):
            raise Refused("auth_replay", f"unauthenticated: replayed auth: challenge {number} "
                          "already used, or older than the one that started the session")
        return number

    def check(self, dev: str, channel: str, code: int, query: list[str],
              block1: int, block2: int, payload: bytes, opt: bytes | None) -> bytes | None:
        key = self.key_of(dev)
        if key is None:
            if self.allow_unauthenticated:
                return secrets.token_bytes(NONCE_LEN) if channel == AUTH_CHANNEL else None
            raise Refused("unknown_device", f"unauthenticated: no CoAP key for device {dev!r} "
                          "(tools/provision.py device ...)")
        if opt is None:
            raise Refused("missing", f"unauthenticated: Edge-Auth option ({OPTION}) missing "
                          "(docs/protocol.md, CoAP authentication)")
        if len(opt) != OPTION_LEN:
            raise Refused("malformed", f"unauthenticated: Edge-Auth option must be "
                          f"{OPTION_LEN} bytes, got {len(opt)}")
        counter = int.from_bytes(opt[:4], "big")
        path = f"pe/1/{dev}/{channel}"
        if channel == AUTH_CHANNEL:
            if len(payload) != CHALLENGE_LEN or block1 or block2:
                # what firmware from before challenge auth sends: an empty signed POST
                raise Refused("no_challenge", "unauthenticated: auth needs a challenge: GET "
                              f"/{path} first, then POST it back signed (firmware too old? "
                              "docs/protocol.md, CoAP authentication)")
            nonce = ZERO_NONCE
        else:
            session = self.sessions.get(dev)
            if session is None:
                raise Refused("no_session", f"unauthenticated: no session for {dev!r}: "
                              f"start one with /{path.rsplit('/', 1)[0]}/{AUTH_CHANNEL} first")
            nonce = session.nonce
        want = tag(key, mac_input(nonce, counter, code, path, query, block1, block2, payload))
        if not hmac.compare_digest(want, opt[4:]):
            raise Refused("bad_mac", "unauthenticated: bad MAC (wrong key, or a session that "
                          f"ended: start a new one with .../{AUTH_CHANNEL})")
        if channel == AUTH_CHANNEL:
            self.used[dev] = self._take_challenge(dev, payload)
            fresh = secrets.token_bytes(NONCE_LEN)
            self.sessions[dev] = Session(fresh)  # only now does the old session end
            return fresh
        assert session is not None  # looked up (or refused) above on every channel but the auth one
        if not session.accept(counter):
            raise Refused("replay", f"unauthenticated: replayed or stale counter {counter} "
                          f"(highest {session.high})")
        return None

    def note_refusal(self, dev: str, remote: Any, reason: str, text: str) -> None:
        """Log a refusal, at most one line per reason every `log_every_s` (a flood of forged
        datagrams must not flood the log; the counters have the totals, and the next line of
        the reason, or `refusal_log.flush()` from the edge's sweep, says how many were held
        back)."""
        self.refusal_log(reason, "device=%s remote=%s detail=%r", dev, remote, text)
