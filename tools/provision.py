"""Provision a store: a store CA, the broker's TLS certificate, per-device MQTT credentials, the
Mosquitto password file + ACL + listener config, and each device's firmware config.

    python -m tools.provision init var/store --hostname broker.store.lan --ip 192.168.1.10
    python -m tools.provision device var/store pad-1 --kind sample-pad
    python -m tools.provision device var/store pad-1 --kind sample-pad --rotate   # new password
    (or `phygital provision ...`)

What lands in the store directory (docs/operations.md):

    ca.crt ca.key                     store CA (keep ca.key offline once devices are made)
    server.crt server.key             broker certificate, signed by the store CA
    mosquitto/mosquitto.conf          TLS listener (+ optional loopback listener), no anonymous,
                                      client id = user name (`use_username_as_clientid`)
    mosquitto/passwd                  PBKDF2-SHA512 hashes, the format `mosquitto_passwd` writes
    mosquitto/acl                     each device only under pe/1/<its id>/; each of the gateway's
                                      two connections only what it does
    gateway.json                      the gateway's two MQTT users (main connection and command
                                      lane), their passwords and the CA (mode 0600)
    coap-keys.json                    each device's CoAP key, for the gateway (`[coap] keys_file`,
                                      `--coap-keys`; mode 0600; docs/protocol.md)
    locker-keys.json                  each locker bank's pickup-code key, for the gateway
                                      (`[lockers] keys_file`, `--locker-keys`; mode 0600;
                                      docs/lockers.md); the bank has it as `app.code_key`
    devices/<id>.config.json          firmware config.json with the device's credentials (0600)
    store.json                        what `device` needs: broker host/port, listener settings

Plain passwords exist only in `gateway.json` and the device configs; the broker keeps hashes.
CoAP keys are shared secrets (an HMAC needs the key at both ends): they are in
`coap-keys.json` and in each device's config. So are locker banks' code keys (`locker-keys.json`):
`--rotate` keeps a bank's code key (rotating it voids the codes the bank holds);
`--rotate-code-key` replaces it (after a theft: then reissue the bank's live codes).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import getpass
import hashlib
import ipaddress
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from gateway.devices import protocol
from gateway.kinds.locker_bank.keys import ensure_key as ensure_locker_key
from gateway.kinds.registry import device_kinds
from gateway.transport.coap_auth import add_key as add_coap_key

GATEWAY_USER = "pe-gateway"              # as in deploy/mosquitto/store.acl; never a device id
# the gateway's command lane (gateway/transport/bus.py: client id `<client_id>.cmd`) has its own user: the
# broker makes every client's id its user name, so one user cannot hold two connections
GATEWAY_CMD_USER = GATEWAY_USER + ".cmd"  # `.` is never in a device id
PBKDF2_ITERATIONS = 101                  # what mosquitto_passwd 2.0 writes for `$7$`
KINDS = device_kinds()                   # gateway/kinds/registry.py: every kind string
AUTOSAVE_S = 10                          # persistence save interval, as deploy/mosquitto/store.conf
COAP_KEYS = "coap-keys.json"
LOCKER_KEYS = "locker-keys.json"


class ProvisionError(Exception):
    """Bad input or a store directory in the wrong state; the message says what to do."""


# -- credentials ---------------------------------------------------------------------------------

def new_password() -> str:
    return secrets.token_urlsafe(24)


def hash_password(password: str, salt: bytes | None = None,
                  iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto 2.0 password-file hash: `$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>`."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, seven, iterations, salt, _dk = encoded.split("$")
        if seven != "7":
            return False
        expected = hash_password(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return secrets.compare_digest(expected, encoded)


def acl_text() -> str:
    """Devices publish only their inbound channels and read only their own cmd/ctl plus the
    gateway state. The gateway's main connection reads the devices' birth/status/evt and
    writes ctl (acks), cmd (while the lane is down), its state and the chain; the command lane
    writes cmd and reads replies (gateway/transport/bus.py)."""
    p = protocol.PREFIX
    lines = ["# generated by tools/provision.py: do not edit by hand (re-run it)",
             ("# every client: only its own topics (%u = its username = its device id = its "
             "client id: use_username_as_clientid)")]
    lines += [f"pattern write {p}/%u/{ch}" for ch in protocol.INBOUND]
    lines += [f"pattern read {p}/%u/{ch}" for ch in protocol.OUTBOUND]
    lines += [f"pattern read {protocol.GATEWAY_STATE_TOPIC}", "",
              "# the gateway's main connection", f"user {GATEWAY_USER}"]
    lines += [f"topic read {p}/+/{ch}" for ch in protocol.INBOUND if ch != "reply"]
    lines += [f"topic write {p}/+/{ch}" for ch in protocol.OUTBOUND]
    lines += [f"topic write {protocol.GATEWAY_STATE_TOPIC}",
              "# chain of stores: the bridge forwards what the gateway writes here (docs/chain.md)",
              "topic write chain/1/#", "",
              "# the gateway's command lane: commands out, replies in",
              f"user {GATEWAY_CMD_USER}", f"topic write {p}/+/cmd", f"topic read {p}/+/reply", ""]
    return "\n".join(lines)


# -- certificates --------------------------------------------------------------------------------

def _crypto() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ProvisionError("the `cryptography` package is missing: pip install -e .") from None
    return x509, hashes, serialization, ec, NameOID, ExtendedKeyUsageOID


def _write(path: Path, data: str | bytes, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def make_certs(out: Path, store: str, hostnames: list[str], ips: list[str],
               days: int = 3650) -> None:
    """Store CA (EC P-256) and a broker certificate for `hostnames`/`ips` signed by it."""
    x509, hashes, serialization, ec, NameOID, EKU = _crypto()
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    pem = serialization.Encoding.PEM

    def key_pem(key: Any) -> bytes:
        return key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{store} store CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    try:
        alt = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(i))
                                                      for i in ips]
    except ValueError as exc:
        raise ProvisionError(f"bad --ip: {exc}") from None
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
           .issuer_name(ca_name).public_key(srv_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(now).not_valid_after(now + dt.timedelta(days=min(days, 825)))
           .add_extension(x509.SubjectAlternativeName(alt), critical=False)
           .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
           .add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH]), critical=False)
           .sign(ca_key, hashes.SHA256()))
    _write(out / "ca.key", key_pem(ca_key), secret=True)
    _write(out / "ca.crt", ca.public_bytes(pem))
    _write(out / "server.key", key_pem(srv_key), secret=True)
    _write(out / "server.crt", srv.public_bytes(pem))


# -- the store directory --------------------------------------------------------------------------

def _load_store(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "store.json").read_text())
    except FileNotFoundError:
        raise ProvisionError(f"{out} is not a provisioned store: run "
                             f"`python -m tools.provision init {out}` first") from None


def _read_passwd(out: Path) -> dict[str, str]:
    path = out / "mosquitto" / "passwd"
    users: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if ":" in line:
                user, _, h = line.partition(":")
                users[user] = h
    return users


def _write_passwd(out: Path, users: dict[str, str]) -> None:
    _write(out / "mosquitto" / "passwd",
           "".join(f"{u}:{h}\n" for u, h in sorted(users.items())), secret=True)


# A client's id is its user name, so no one can connect with another client's id and make the
# broker drop that client (a device as the gateway, or as another device). A listener option:
# it must follow each `listener` line (before the first it silently does nothing).
BIND_IDS = "use_username_as_clientid true"


def mosquitto_conf(out: Path, st: dict[str, Any]) -> str:
    m = (out / "mosquitto").resolve()
    o = out.resolve()
    lines = ["# generated by tools/provision.py (docs/operations.md)",
             # the user mosquitto drops to when started as root: it must read the 0600 files
             f"user {st.get('run_as') or getpass.getuser()}",
             "per_listener_settings false", "allow_anonymous false",
             f"password_file {m}/passwd", f"acl_file {m}/acl",
             "persistence true", f"persistence_location {m}/",
             f"autosave_interval {AUTOSAVE_S}",
             "max_queued_messages 100000",
             f"log_dest file {m}/mosquitto.log",
             "log_type error", "log_type warning", "log_type notice", "",
             "# devices and the gateway: TLS with the store CA's server certificate",
             f"listener {st['port']} {st['bind']}".rstrip(),
             f"cafile {o}/ca.crt", f"certfile {o}/server.crt", f"keyfile {o}/server.key",
             "tls_version tlsv1.2", "require_certificate false", BIND_IDS, ""]
    if st.get("local_port"):
        lines += [("# loopback only, same passwords and ACL, no TLS (a gateway on the broker's "
                  "host)"), f"listener {st['local_port']} 127.0.0.1", BIND_IDS, ""]
    return "\n".join(lines)


def init_store(out: Path, *, store: str = "store", hostnames: list[str] | None = None,
               ips: list[str] | None = None, port: int = 8883, bind: str = "",
               local_port: int | None = None, run_as: str | None = None,
               force: bool = False) -> dict[str, Any]:
    """Create the CA, the broker certificate, the gateway's users and the Mosquitto config."""
    out = Path(out)
    if (out / "store.json").exists() and not force:
        raise ProvisionError(f"{out} is already provisioned (its devices trust its CA); "
                             "use --force to start over")
    if not 0 < port < 65536 or (local_port is not None and not 0 < local_port < 65536):
        raise ProvisionError("ports must be 1-65535")
    hostnames = hostnames or ["localhost"]
    ips = ips if ips is not None else ["127.0.0.1"]
    make_certs(out, store, hostnames, ips)
    st = {"store": store, "host": hostnames[0], "port": port, "bind": bind,
          "local_port": local_port, "hostnames": hostnames, "ips": ips,
          "run_as": run_as or getpass.getuser()}
    _write(out / "store.json", json.dumps(st, indent=2) + "\n")
    password, cmd_password = new_password(), new_password()
    _write_passwd(out, {GATEWAY_USER: hash_password(password),
                        GATEWAY_CMD_USER: hash_password(cmd_password)})
    _write(out / "mosquitto" / "acl", acl_text())
    _write(out / COAP_KEYS, "{}\n", secret=True)
    _write(out / LOCKER_KEYS, "{}\n", secret=True)
    _write(out / "mosquitto" / "mosquitto.conf", mosquitto_conf(out, st))
    _write(out / "gateway.json", json.dumps(
        {"user": GATEWAY_USER, "password": password,
         "cmd_user": GATEWAY_CMD_USER, "cmd_password": cmd_password,
         "ca": str((out / "ca.crt").resolve()),
         "host": hostnames[0], "port": port, "local_port": local_port}, indent=2) + "\n",
        secret=True)
    return st


def add_device(out: Path, dev: str, kind: str, *, host: str | None = None,
               port: int | None = None, app: dict[str, Any] | None = None,
               rotate: bool = False, transport: str = "mqtt",
               coap_port: int = 5683, rotate_code_key: bool = False) -> dict[str, Any]:
    """Give a device its password (hash into the broker's file), its CoAP key (into the
    gateway's coap-keys.json) and its firmware config."""
    out = Path(out)
    st = _load_store(out)
    if not protocol.is_device_id(dev) or dev == GATEWAY_USER:
        raise ProvisionError(f"bad device id {dev!r}: 1-32 chars of a-z, 0-9 and '-' (not "
                             f"first), and not {GATEWAY_USER!r}")
    if kind not in KINDS:
        raise ProvisionError(f"kind must be one of {', '.join(KINDS)}")
    if transport not in ("mqtt", "coap"):
        raise ProvisionError("transport must be mqtt or coap")
    users = _read_passwd(out)
    if dev in users and not rotate:
        raise ProvisionError(f"device {dev!r} already has credentials; --rotate gives it a new "
                             "password (then deploy its new config)")
    password = new_password()
    ca_pem = (out / "ca.crt").read_text()
    cfg = {"device_id": dev, "kind": kind,
           "mqtt": {"host": host or st["host"], "port": port or st["port"], "keepalive": 30,
                    "user": dev, "password": password,
                    "tls": {"ca": ca_pem, "server_hostname": st["host"]}},
           # the same device over CoAP (`"transport": "coap"`): the gateway's CoAP edge
           "coap": {"host": host or st["host"], "port": coap_port, "keepalive": 30,
                    "key": add_coap_key(out / COAP_KEYS, dev, rotate=True)},
           "transport": transport, "app": app or {}}
    if kind == "locker-bank":
        cfg["app"] = {**cfg["app"], "code_key": locker_code_key(out, dev, rotate_code_key)}
    _write(out / "devices" / f"{dev}.config.json", json.dumps(cfg, indent=2) + "\n", secret=True)
    users[dev] = hash_password(password)
    _write_passwd(out, users)
    return cfg


def locker_code_key(out: Path, dev: str, rotate: bool = False) -> str:
    """The bank's pickup-code key (hex): the one in `locker-keys.json`, or a new random one
    written there (0600). Codes are verified as HMAC-SHA256 under it (docs/lockers.md)."""
    return ensure_locker_key(Path(out) / LOCKER_KEYS, dev, rotate)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="provision", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="create the store CA, broker cert, gateway users and "
                                    "Mosquitto config")
    i.add_argument("dir", type=Path)
    i.add_argument("--store", default="store", help="store name (in the CA's name)")
    i.add_argument("--hostname", action="append", help="broker DNS name (repeatable; first "
                   "is what devices connect to; default localhost)")
    i.add_argument("--ip", action="append", help="broker IP address in the certificate "
                   "(repeatable; default 127.0.0.1)")
    i.add_argument("--port", type=int, default=8883, help="TLS listener port (default 8883)")
    i.add_argument("--bind", default="", help="TLS listener address (default: all)")
    i.add_argument("--local-port", type=int, default=None,
                   help="also listen on 127.0.0.1:PORT without TLS (same ACL)")
    i.add_argument("--run-as", default=None, help="user mosquitto runs as (owner of the "
                   "store files; default: whoever runs this tool)")
    i.add_argument("--force", action="store_true", help="overwrite an existing store")
    d = sub.add_parser("device", help="credentials + firmware config for one device")
    d.add_argument("dir", type=Path)
    d.add_argument("device_id")
    d.add_argument("--kind", required=True, choices=KINDS)
    d.add_argument("--host", help="broker host the device connects to (default: the store's)")
    d.add_argument("--port", type=int, help="broker port (default: the TLS listener)")
    d.add_argument("--app", type=json.loads, default=None, help="app config as JSON")
    d.add_argument("--rotate", action="store_true", help="replace an existing password "
                   "and CoAP key")
    d.add_argument("--transport", choices=("mqtt", "coap"), default="mqtt",
                   help="what the device speaks (default mqtt; coap: the gateway's CoAP edge "
                        "with the device's key)")
    d.add_argument("--coap-port", type=int, default=5683, help="the gateway's CoAP port")
    d.add_argument("--rotate-code-key", action="store_true", help="locker bank: a new pickup-code "
                   "key (voids the codes the bank holds: reissue them)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "init":
            st = init_store(args.dir, store=args.store, hostnames=args.hostname, ips=args.ip,
                            port=args.port, bind=args.bind, local_port=args.local_port,
                            run_as=args.run_as, force=args.force)
            print(f"store CA and broker certificate for {', '.join(st['hostnames'])} in "
                  f"{args.dir}; run: mosquitto -c {args.dir}/mosquitto/mosquitto.conf")
        else:
            add_device(args.dir, args.device_id, args.kind, host=args.host, port=args.port,
                       app=args.app, rotate=args.rotate, transport=args.transport,
                       coap_port=args.coap_port, rotate_code_key=args.rotate_code_key)
            print(f"{args.dir}/devices/{args.device_id}.config.json: deploy it as config.json "
                  "(mosquitto reloads its password file on SIGHUP; the gateway re-reads "
                  f"{args.dir}/{COAP_KEYS} by itself)")
    except ProvisionError as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
