"""tools/provision.py against a REAL Mosquitto started with the generated config: passwords,
per-device ACL, TLS with the store CA, the firmware's MQTT client with its credentials (in
MicroPython) and the gateway connecting with its own."""
from __future__ import annotations

import json
import queue
import signal
import ssl
import subprocess

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway import provision
from hil.harness import Mosquitto, free_port, wait_for
from tests.support.micropython import run_micropython
from tools import provision as provision_cli


class ProvisionedMosquitto(Mosquitto):
    """The harness broker, but running the config tools/provision.py generated."""

    def __init__(self, store_dir, port):
        super().__init__(store_dir / "mosquitto", port=port)
        self.conf = store_dir / "mosquitto" / "mosquitto.conf"
        self.log = store_dir / "mosquitto" / "mosquitto.log"

    def write_conf(self) -> None:  # already written by the tool
        pass


BROKERS: dict = {}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    tls_port, local_port = free_port(), free_port()
    provision.init_store(d, store="test", port=tls_port, bind="127.0.0.1", local_port=local_port)
    for dev in ("pad-a", "pad-b"):
        provision.add_device(d, dev, "sample-pad")
    broker = ProvisionedMosquitto(d, local_port).start()
    BROKERS[d] = broker
    wait_for(lambda: _can_connect(tls_port), 10, what="TLS listener")
    yield d, tls_port, local_port
    broker.stop()


def _can_connect(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def creds(d, dev):
    if dev == "gateway":
        g = json.loads((d / "gateway.json").read_text())
        return g["user"], g["password"]
    mq = json.loads((d / "devices" / f"{dev}.config.json").read_text())["mqtt"]
    return mq["user"], mq["password"]


class Client:
    """A paho client that records what it receives and how CONNECT/SUBSCRIBE went."""

    def __init__(self, port, user, password, *, ca=None, client_id=None):
        self.msgs: queue.Queue = queue.Queue()
        self.rc = queue.Queue()
        self.granted = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or user or "")
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca is not None:
            self.c.tls_set(ca_certs=str(ca))
        self.c.on_connect = lambda c, u, f, rc, p: self.rc.put(rc)
        self.c.on_message = lambda c, u, m: self.msgs.put((m.topic, m.payload))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.granted.put(rcs)
        self.c.connect("127.0.0.1", port, 10)
        self.c.loop_start()

    def connected(self):
        rc = self.rc.get(timeout=20)
        return not rc.is_failure, rc

    def sub(self, topic):
        self.c.subscribe(topic, 1)
        return self.granted.get(timeout=20)

    def pub(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(20)

    def received(self, until: bytes):
        """Messages up to and including the one whose payload is `until` (the barrier)."""
        out = []
        while True:
            t, p = self.msgs.get(timeout=20)
            out.append((t, p))
            if p == until:
                return out

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_password_hash_is_mosquitto_pbkdf2_sha512():
    h = provision.hash_password("s3cret", salt=b"\x01" * 12)
    assert h.startswith("$7$101$") and provision.verify_password("s3cret", h)
    assert not provision.verify_password("other", h)
    r = subprocess.run(["mosquitto_passwd", "-h"], capture_output=True, text=True, check=False)
    assert "sha512-pbkdf2" in (r.stdout + r.stderr)  # the format this broker reads


def test_passwd_file_holds_only_hashes_and_bad_input_is_refused(store, tmp_path):
    d, _, _ = store
    text = (d / "mosquitto" / "passwd").read_text()
    assert {line.split(":")[0] for line in text.splitlines()} == {"pe-gateway", "pe-gateway.cmd",
                                                                  "pad-a", "pad-b"}
    for dev in ("pad-a", "pad-b", "gateway"):
        assert creds(d, dev)[1] not in text
    assert (d / "devices" / "pad-a.config.json").stat().st_mode & 0o077 == 0
    with pytest.raises(provision.ProvisionError, match="already has credentials"):
        provision.add_device(d, "pad-a", "sample-pad")
    with pytest.raises(provision.ProvisionError, match="bad device id"):
        provision.add_device(d, "pe-gateway", "sample-pad")
    with pytest.raises(provision.ProvisionError, match="not a provisioned store"):
        provision.add_device(tmp_path, "pad-z", "sample-pad")
    with pytest.raises(provision.ProvisionError, match="already provisioned"):
        provision.init_store(d)


def test_wrong_password_and_anonymous_are_refused(store):
    d, _, port = store
    for user, pw in (("pad-a", "wrong"), ("pad-a", creds(d, "pad-b")[1]), (None, None)):
        c = Client(port, user, pw, client_id="x-" + str(user))
        ok, _rc = c.connected()
        c.close()
        assert not ok, f"{user} with a bad password was let in"
    good = Client(port, *creds(d, "pad-a"))
    assert good.connected()[0]
    good.close()


def test_a_device_cannot_publish_as_another(store):
    d, _, port = store
    gw = Client(port, *creds(d, "gateway"))
    assert gw.connected()[0]
    gw.sub("pe/1/+/evt")
    b = Client(port, *creds(d, "pad-b"))
    assert b.connected()[0]
    b.pub("pe/1/pad-a/evt", b"forged")      # impersonation: the broker drops it
    b.pub("pe/1/pad-a/cmd", b"forged-cmd")
    b.pub("pe/1/pad-b/evt", b"barrier")     # its own topic: delivered, after the forged one
    got = gw.received(until=b"barrier")
    gw.close(); b.close()
    assert got == [("pe/1/pad-b/evt", b"barrier")]


def test_a_device_cannot_read_another_devices_commands(store):
    d, _, port = store
    b = Client(port, *creds(d, "pad-b"))
    assert b.connected()[0]
    b.sub("pe/1/pad-a/cmd")  # mosquitto 2.0 grants it, then filters delivery by the ACL
    b.sub("pe/1/pad-b/cmd")
    gw = Client(port, *creds(d, "gateway"))
    assert gw.connected()[0]
    gw.pub("pe/1/pad-a/cmd", b"for-a")
    gw.pub("pe/1/pad-b/cmd", b"for-b")
    got = b.received(until=b"for-b")
    b.close(); gw.close()
    assert got == [("pe/1/pad-b/cmd", b"for-b")]


def test_tls_with_the_store_ca_works_and_without_it_fails(store):
    d, tls_port, _ = store
    c = Client(tls_port, *creds(d, "pad-a"), ca=d / "ca.crt")
    assert c.connected()[0]
    c.close()
    with pytest.raises(ssl.SSLError):  # the system CAs do not know the store CA
        Client(tls_port, *creds(d, "pad-a"), ca=ssl.get_default_verify_paths().cafile
               or "/etc/ssl/certs/ca-certificates.crt")


FW_CLIENT = """
import asyncio, json
from edge import config
from edge.tls import TLSClient
cfg = config.load({path!r})
mq = cfg["mqtt"]
done = []
async def on_connect(c):
    await c.publish("pe/1/" + cfg["device_id"] + "/evt", b"from-firmware", 1)
    done.append(1)
async def main():
    c = TLSClient(cfg["device_id"], "127.0.0.1", {port}, keepalive=10, user=mq["user"],
                   password=mq["password"], tls=mq.get("tls"), on_connect=on_connect,
                   response_timeout=5)
    asyncio.create_task(c.run())
    for _ in range(300):
        if done or c.stats["errors"]:
            break
        await asyncio.sleep_ms(50)
    print("RESULT", len(done), repr(c.last_error))
    await c.close()
asyncio.run(main())
"""


def test_firmware_connects_with_its_credentials_over_tls(store, tmp_path):
    d, tls_port, _ = store
    gw = Client(store[2], *creds(d, "gateway"))
    assert gw.connected()[0]
    gw.sub("pe/1/+/evt")
    r = run_micropython(FW_CLIENT.format(path=str(d / "devices" / "pad-a.config.json"),
                                         port=tls_port))
    assert "RESULT 1 None" in r.stdout, r.stdout + r.stderr
    assert gw.received(until=b"from-firmware") == [("pe/1/pad-a/evt", b"from-firmware")]
    # the same device trusting another store's CA refuses this broker
    other = tmp_path / "other"
    provision.init_store(other, port=free_port())
    cfg = json.loads((d / "devices" / "pad-a.config.json").read_text())
    cfg["mqtt"]["tls"]["ca"] = (other / "ca.crt").read_text()
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    r = run_micropython(FW_CLIENT.format(path=str(tmp_path / "cfg.json"), port=tls_port))
    assert "RESULT 0" in r.stdout and "None" not in r.stdout, r.stdout + r.stderr
    gw.close()


def test_gateway_connects_with_its_credentials_over_tls(store, tmp_path):
    from hil.harness import GatewayProcess
    d, tls_port, _ = store
    gw = GatewayProcess(tmp_path / "gw", tls_port,
                        client_id="gateway-tls", extra_args=["--mqtt-auth", str(d / "gateway.json")])
    try:
        gw.start()  # waits for /health mqtt == connected
        assert gw.get("/health")["mqtt"] == "connected"
    finally:
        gw.stop()


def test_cli_errors_are_clear(tmp_path, capsys):
    assert provision_cli.main(["device", str(tmp_path), "pad-1", "--kind", "sample-pad"]) == 2
    assert "not a provisioned store" in capsys.readouterr().err
    assert provision_cli.main(["init", str(tmp_path / "s"), "--ip", "not-an-ip"]) == 2
    assert "bad --ip" in capsys.readouterr().err
    assert provision_cli.main(["init", str(tmp_path / "s2"), "--port", "0"]) == 2
    assert "ports must be" in capsys.readouterr().err


@pytest.mark.parametrize("heap", ["96k"])
def test_provisioned_pad_end_to_end_over_tls(store, tmp_path, heap):
    """The real pad firmware (main.py, its provisioned config.json) and the gateway, both over
    TLS with their own credentials: the pad comes online and a tag reaches the database."""
    from hil.harness import GatewayProcess
    from hil.sim.store import VirtualStore
    from tests.support.e2e import sample_tag
    d, tls_port, _ = store
    cfg = provision.add_device(d, "pad-tls", "sample-pad", host="127.0.0.1", port=tls_port)
    BROKERS[d].proc.send_signal(signal.SIGHUP)  # mosquitto re-reads its password file
    gw = GatewayProcess(tmp_path / "gw", tls_port, client_id="gw-tls-e2e",
                        extra_args=["--mqtt-auth", str(d / "gateway.json")])
    vs = VirtualStore(tmp_path / "vs", broker_port=tls_port, heap=heap)
    try:
        gw.start()
        pad = vs.add_pad("pad-tls")
        pad.fw.config["mqtt"] = {**cfg["mqtt"], "keepalive": 10}  # user, password, tls.ca
        pad.fw.config_path.write_text(json.dumps(pad.fw.config))
        vs.start()
        wait_for(lambda: (gw.http.get("/devices/pad-tls").json() or {}).get("online") is True,
                 30, what="pad online through TLS")
        pad.place(sample_tag(1, "S-TLS"))
        ev = wait_for(lambda: gw.events("pad-tls", type="tag.placed"), 20, what="tag.placed")
        assert ev[0]["body"]["sample"] == "S-TLS"
    finally:
        vs.stop()
        gw.stop()


def test_coap_keys_come_with_the_device_and_rotate_with_it(tmp_path):
    """The device config's CoAP key is the one the gateway reads from coap-keys.json; a
    rotation replaces both (and the gateway then refuses the old key)."""
    import json

    from gateway.transport.coap_auth import CoapAuth, Refused, proof_option

    d = tmp_path / "store"
    provision.init_store(d, port=free_port())
    keys = d / "coap-keys.json"
    assert json.loads(keys.read_text()) == {} and keys.stat().st_mode & 0o077 == 0
    cfg = provision.add_device(d, "pad-c", "sample-pad", transport="coap")
    assert cfg["transport"] == "coap" and cfg["coap"]["port"] == 5683
    old = bytes.fromhex(cfg["coap"]["key"])
    auth = CoapAuth(keys)
    assert auth.keys == {"pad-c": old}

    def session(key):
        ch = auth.challenge("pad-c")
        return auth.check("pad-c", "auth", 2, [], 0, 0, ch, proof_option(key, "pad-c", ch))

    assert len(session(old)) == 8
    new = provision.add_device(d, "pad-c", "sample-pad", rotate=True)
    assert json.loads((d / "devices" / "pad-c.config.json").read_text())["coap"]["key"] == \
        new["coap"]["key"] != cfg["coap"]["key"]
    auth.reload(force=True)
    with pytest.raises(Refused, match="bad MAC"):
        session(old)
    assert len(session(bytes.fromhex(new["coap"]["key"]))) == 8
