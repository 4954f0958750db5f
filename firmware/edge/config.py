# Device config: one JSON file (config.json on a board). Validated here so a bad file stops the
# boot with a message that says which field is wrong.
import json
from binascii import hexlify

try:
    import hashlib
except ImportError:  # pragma: no cover
    hashlib = None


class ConfigError(Exception):
    pass


def _valid_id(s):
    if not isinstance(s, str) or not 0 < len(s) <= 32:
        return False
    for i, ch in enumerate(s):
        if not (("a" <= ch <= "z") or ("0" <= ch <= "9") or (ch == "-" and i > 0)):
            return False
    return True


def load(path, kinds=None):
    # kinds: the device kinds there are apps for; default boot.APPS (the one firmware list)
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        raise ConfigError("config file %s not found" % path)
    try:
        cfg = json.loads(raw)
    except ValueError:
        raise ConfigError("config file %s is not valid JSON" % path)
    if not isinstance(cfg, dict):
        raise ConfigError("config must be a JSON object")
    if not _valid_id(cfg.get("device_id")):
        raise ConfigError("device_id must be 1-32 chars of a-z, 0-9 and '-' (not first)")
    if kinds is None:
        from edge.boot import APPS as kinds  # loaded already on a board: boot loads us
    if cfg.get("kind") not in kinds:
        raise ConfigError("kind must be one of " + ", ".join(kinds))
    transport = cfg.setdefault("transport", "mqtt")
    if transport not in ("mqtt", "coap"):
        raise ConfigError('transport must be "mqtt" or "coap"')
    if transport == "coap" and "coap" in cfg:
        cfg["mqtt"] = cfg["coap"]  # the runtime takes the gateway's address from "mqtt"
    mq = cfg.get("mqtt")
    if not isinstance(mq, dict) or not isinstance(mq.get("host"), str):
        raise ConfigError(transport + ".host is required")
    port = mq.setdefault("port", 5683 if transport == "coap" else 1883)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(transport + ".port must be 1-65535")
    if transport == "coap":
        _coap_key(mq, cfg["device_id"])
    _check_credentials(mq, transport)
    _check_conformance(cfg, mq)
    wifi = cfg.get("wifi")
    if wifi is not None and not (isinstance(wifi, dict) and isinstance(wifi.get("ssid"), str)):
        raise ConfigError("wifi must be an object with an ssid (and a password)")
    cfg.setdefault("data_dir", "data")
    cfg.setdefault("journal_max", 200)
    cfg.setdefault("wdt_ms", 8000)
    cfg.setdefault("offline_reboot_s", 900)
    cfg.setdefault("app", {})
    cfg["cfg_hash"] = digest(raw)
    return cfg


def _coap_key(mq, dev):
    # coap.key (tools/provision.py): 64 hex digits; the transport takes it as the password
    key = mq.get("key")
    if key is None:
        return
    if not isinstance(key, str) or len(key) != 64 or \
            any(c not in "0123456789abcdefABCDEF" for c in key):
        raise ConfigError("coap.key must be 64 hex digits")
    mq["user"] = dev
    mq["password"] = key


# the conformance kit's throwaway CoAP keys begin with b"conformance-kit\0" (tools/conformance/
# coap.py); tools/provision.py makes 32 random bytes, so a provisioned key never does (2^-128)
KIT_KEY = "636f6e666f726d616e63652d6b697400"


def _check_conformance(cfg, mq):
    # the test hook (docs/protocol.md "Conformance") never runs against a store's gateway: every
    # provisioned config has credentials (the store broker refuses anonymous clients), and the
    # only CoAP key allowed next to it is a kit key, which no store gateway holds
    hook = cfg.get("conformance", False)
    if not isinstance(hook, bool):
        raise ConfigError("conformance must be true or false")
    if not hook:
        return
    key = mq.get("key") if cfg["transport"] == "coap" else None
    kit = isinstance(key, str) and key.lower().startswith(KIT_KEY)
    if mq.get("tls") is not None or (mq.get("user") is not None and not kit):
        raise ConfigError("conformance (a test hook) cannot be enabled in a config with broker "
                          "credentials, a provisioned CoAP key or TLS: remove it, or use a test "
                          "config without them (the conformance kit writes one)")


def _check_credentials(mq, transport):
    # written by tools/provision.py: user + password together, TLS with the store CA (PEM)
    user = mq.get("user")
    password = mq.get("password")
    if (user is None) != (password is None):
        raise ConfigError(transport + ".user and " + transport + ".password go together")
    if user is not None and not (isinstance(user, str) and isinstance(password, str)
                                 and 0 < len(user) <= 64 and 0 < len(password) <= 256):
        raise ConfigError(transport + ".user/password must be non-empty strings")
    tls = mq.get("tls")
    if tls is None:
        return
    if transport != "mqtt":
        raise ConfigError("tls is only supported with the mqtt transport")
    if not isinstance(tls, dict) or not isinstance(tls.get("ca"), str) \
            or "BEGIN CERTIFICATE" not in tls["ca"]:
        raise ConfigError("mqtt.tls must be an object with ca = the store CA certificate (PEM)")
    name = tls.get("server_hostname")
    if name is not None and not (isinstance(name, str) and name):
        raise ConfigError("mqtt.tls.server_hostname must be a host name")


def digest(raw):
    if hashlib is None:
        return "00000000"
    return hexlify(hashlib.sha256(raw.encode() if isinstance(raw, str) else raw).digest()).decode()[:8]
