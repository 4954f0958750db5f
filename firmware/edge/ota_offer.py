# Over-the-air updates: an offer's check against the device's own key (docs/ota.md). Loaded for
# the check only (edge/ota.py drops it from sys.modules after): no heap kept for it.
from binascii import unhexlify
from hashlib import sha256

from edge.ota import Refused


def _pads(key):
    k = key + bytes(64 - len(key))
    return bytes(b ^ 0x36 for b in k), bytes(b ^ 0x5C for b in k)


def hmac(key, *parts):
    # HMAC-SHA256 (RFC 2104; the boards' hashlib has no hmac), key <= 64 bytes
    ki, ko = _pads(key)
    h = sha256(ki)
    for p in parts:
        h.update(p)
    o = sha256(ko)
    o.update(h.digest())
    return o.digest()


def ota_key(cfg):
    """The device's update key: derived from its CoAP key (tools/provision.py gives every
    device one), so an update MAC can never pass for a CoAP request tag or the reverse."""
    c = cfg.get("coap") or {}
    k = c.get("key") or (cfg.get("mqtt") or {}).get("key")
    if not isinstance(k, str) or len(k) != 64:
        return None
    return hmac(unhexlify(k), b"phygital-ota-v1")


def offer_mac(key, dev, version, sha):
    # what the gateway signs for this device: its id, the version and the manifest's sha256
    return hmac(key, b"pe-ota-1\0", dev.encode(), b"\0", version.encode(), b"\0", sha.encode())


def _eq(a, b):
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def check(rt, args):
    """The `ota` command's args (id, version, sha, mac, size) if the MAC is ours; else Refused."""
    oid, version, sha, mac, size = (args.get(k) for k in ("id", "version", "sha", "mac", "size"))
    if not (isinstance(oid, str) and 0 < len(oid) <= 32 and isinstance(version, str) and 0 < len(version) <= 32
            and isinstance(sha, str) and len(sha) == 64 and isinstance(mac, str) and len(mac) == 64
            and isinstance(size, int) and 0 < size <= 8192):
        raise Refused("bad-args")
    key = ota_key(rt.cfg)
    if key is None:
        raise Refused("no-key")
    try:
        ok = _eq(offer_mac(key, rt.dev, version, sha), unhexlify(mac))
    except ValueError:  # not hex
        ok = False
    if not ok:
        raise Refused("bad-signature")
    return oid, version, sha, mac, size
