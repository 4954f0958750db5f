"""Client ids bound to credentials (issue 14): on the broker `tools/provision.py` configures
(real Mosquitto, TLS with the store CA, per-device passwords, the ACL), a device's
credentials cannot take over another device's or the gateway's connections by connecting
with their client ids — by default Mosquitto drops the existing holder of an id, and the
tester saw the gateway kicked 5 times in 6 s and a locker bank go offline. Every client here
connects over the TLS listener as the devices and the gateway do."""
from __future__ import annotations

import json
import queue
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway import provision
from hil.harness import ProvisionedMosquitto, free_port
from tools import provision as provision_cli

WAIT = 20  # seconds for one message to arrive (a bound against hangs, not a timing claim)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    local = free_port()  # the loopback listener (no TLS) a gateway on the broker's host uses
    provision.init_store(d, store="ids", port=free_port(), bind="127.0.0.1", local_port=local)
    for dev, kind in (("pad-a", "sample-pad"), ("lk-b", "locker-bank")):
        provision.add_device(d, dev, kind)
    broker = ProvisionedMosquitto(d).start()
    yield d, broker.port, local
    broker.stop()


def creds(d, who):
    """(user, password): a device's from its config; `gateway`/`lane` from gateway.json (a
    gateway.json from before the lane had its own user: the lane used the main user)."""
    if who in ("gateway", "lane"):
        g = json.loads((d / "gateway.json").read_text())
        if who == "lane" and "cmd_user" in g:
            return g["cmd_user"], g["cmd_password"]
        return g["user"], g["password"]
    mq = json.loads((d / "devices" / f"{who}.config.json").read_text())["mqtt"]
    return mq["user"], mq["password"]


def _disconnects(conns) -> str:
    return ", ".join(f"{c.name}: {c.disconnects}" for c in conns)


class Conn:
    """A paho client over TLS that records every connect and disconnect, subscribes again on
    every connect (as the gateway and the firmware do) and queues what it receives."""

    def __init__(self, d, port, who, client_id, *, subs=(), clean=True, will=None,
                 reconnect=True, tls=True):
        self.name = f"{who} as {client_id!r}"
        self.msgs: queue.Queue = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.disconnects: list = []
        self.subs = list(subs)
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean, reconnect_on_failure=reconnect)
        self.c.username_pw_set(*creds(d, who))
        if tls:
            self.c.tls_set(ca_certs=str(d / "ca.crt"))
        self.c.reconnect_delay_set(0.05, 0.5)
        if will:
            self.c.will_set(*will, qos=1)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(str(rc))
        self.c.on_message = lambda c, u, m: self.msgs.put((m.topic, m.payload))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.connacks.put("subscribed")
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()

    def _on_connect(self, c, u, flags, rc, p):
        self.connacks.put(rc)
        if not rc.is_failure and self.subs:
            c.subscribe([(t, 1) for t in self.subs])

    def wait_up(self):
        rc = self.connacks.get(timeout=WAIT)
        assert not rc.is_failure, f"{self.name}: CONNECT refused: {rc}"
        if self.subs:
            assert self.connacks.get(timeout=WAIT) == "subscribed"
        return self

    def pub(self, topic, payload, everyone=()):
        try:
            self.c.publish(topic, payload, qos=1).wait_for_publish(WAIT)
        except RuntimeError as exc:  # paho: "The client is not currently connected"
            raise AssertionError(f"{self.name}: publish failed: {exc}; disconnects: "
                                 + _disconnects(everyone)) from None

    def until(self, payload: bytes, everyone=()) -> list:
        """What arrived up to and including `payload` (the barrier)."""
        out = []
        while True:
            try:
                t, p = self.msgs.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"{self.name}: {payload!r} never arrived (got {out}); "
                                     f"disconnects: {_disconnects(everyone)}") from None
            out.append((t, p))
            if p == payload:
                return out

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_a_device_cannot_take_over_another_client_id(store):
    d, port, local = store
    # the connections to protect: the gateway's two (persistent sessions, the main one with
    # its last will) and locker bank lk-b (its last will says offline, as the firmware's)
    gw = Conn(d, port, "gateway", "pe-gateway", clean=False,
              subs=("pe/1/+/birth", "pe/1/+/status", "pe/1/+/evt"),
              will=("pe/1/gateway/state", b"gateway-offline")).wait_up()
    lane = Conn(d, port, "lane", "pe-gateway.cmd", clean=False,
                subs=("pe/1/+/reply",)).wait_up()
    bank = Conn(d, port, "lk-b", "lk-b", subs=("pe/1/lk-b/cmd", "pe/1/lk-b/ctl",
                                               "pe/1/gateway/state"),
                will=("pe/1/lk-b/status", b"lk-b-offline")).wait_up()
    everyone = (gw, lane, bank)
    try:
        # pad-a's credentials, with the bank's and both of the gateway's client ids, in turn,
        # on the TLS listener and on the loopback one (repeated: the tester's gateway was
        # kicked 5 times in 6 s)
        accepted = []
        for p, tls in ((port, True), (local, False)):
            for victim in ("lk-b", "pe-gateway", "pe-gateway.cmd"):
                attacker = Conn(d, p, "pad-a", victim, reconnect=False, tls=tls)
                rc = attacker.connacks.get(timeout=WAIT)
                accepted.append((victim, str(rc)))
                attacker.close()
        # each protected connection exchanges a message after the attempts: had the broker
        # dropped it, its client would have read the close first (recorded in `disconnects`)
        bank.pub("pe/1/lk-b/evt", b"bank-evt", everyone)
        gw_got = gw.until(b"bank-evt", everyone)
        lane.pub("pe/1/lk-b/cmd", b"lane-cmd", everyone)
        gw.pub("pe/1/lk-b/ctl", b"gw-ack", everyone)
        bank_got = bank.until(b"gw-ack", everyone)
        bank.pub("pe/1/lk-b/reply", b"bank-reply", everyone)
        lane_got = lane.until(b"bank-reply", everyone)

        assert {c.name: c.disconnects for c in everyone} == \
            {c.name: [] for c in everyone}, f"connections dropped (attempts: {accepted})"
        assert (b"lk-b-offline" not in [p for _, p in gw_got]), gw_got        # no offline event
        assert (b"gateway-offline" not in [p for _, p in bank_got]), bank_got
        assert [p for _, p in bank_got].count(b"lane-cmd") == 1               # nothing dropped
        assert gw_got[-1] == ("pe/1/lk-b/evt", b"bank-evt")
        assert lane_got == [("pe/1/lk-b/reply", b"bank-reply")]

        # pad-a with its own id still works, both ways
        pad = Conn(d, port, "pad-a", "pad-a", subs=("pe/1/pad-a/cmd",)).wait_up()
        pad.pub("pe/1/pad-a/evt", b"pad-evt")
        assert gw.until(b"pad-evt", everyone)[-1] == ("pe/1/pad-a/evt", b"pad-evt")
        lane.pub("pe/1/pad-a/cmd", b"pad-cmd")
        assert pad.until(b"pad-cmd", everyone) == [("pe/1/pad-a/cmd", b"pad-cmd")]
        pad.close()
        assert {c.name: c.disconnects for c in everyone} == {c.name: [] for c in everyone}
    finally:
        for c in everyone:
            c.close()


def test_each_gateway_connection_gets_only_what_it_does(store):
    """The gateway's two users (tools/provision.py): the main connection reads device
    birth/status/evt and writes acks (and commands), the lane writes commands and reads
    replies; neither reads the other's traffic, the lane cannot ack or announce."""
    d, port, _ = store
    gw = Conn(d, port, "gateway", "pe-gateway", subs=("pe/1/+/evt", "pe/1/+/reply")).wait_up()
    lane = Conn(d, port, "lane", "pe-gateway.cmd",
                subs=("pe/1/+/evt", "pe/1/+/reply")).wait_up()
    bank = Conn(d, port, "lk-b", "lk-b", subs=("pe/1/lk-b/#", "pe/1/gateway/state")).wait_up()
    try:
        bank.pub("pe/1/lk-b/reply", b"r1")
        bank.pub("pe/1/lk-b/evt", b"e1")
        assert gw.until(b"e1") == [("pe/1/lk-b/evt", b"e1")]        # no reply on main
        assert lane.until(b"r1") == [("pe/1/lk-b/reply", b"r1")]
        bank.pub("pe/1/lk-b/reply", b"r2")                          # lane: no evt
        assert lane.until(b"r2") == [("pe/1/lk-b/reply", b"r2")]
        lane.pub("pe/1/lk-b/ctl", b"lane-ack")                      # dropped by the ACL
        lane.pub("pe/1/gateway/state", b"lane-state")
        lane.pub("pe/1/lk-b/cmd", b"lane-cmd")
        assert bank.until(b"lane-cmd") == [("pe/1/lk-b/cmd", b"lane-cmd")]
        gw.pub("pe/1/gateway/state", b"gw-state")
        gw.pub("pe/1/lk-b/cmd", b"gw-cmd")
        gw.pub("pe/1/lk-b/ctl", b"gw-ack")
        assert [p for _, p in bank.until(b"gw-ack")] == [b"gw-state", b"gw-cmd", b"gw-ack"]
    finally:
        for c in (gw, lane, bank):
            c.close()


def _listeners(conf: str) -> list[list[str]]:
    """The option lines of each `listener` block (up to the next listener or the end)."""
    blocks = []
    for line in conf.splitlines():
        if line.startswith("listener "):
            blocks.append([])
        elif blocks and line and not line.startswith("#"):
            blocks[-1].append(line)
    return blocks


def test_provisioned_broker_binds_ids_and_saves_as_deployed(store):
    """`use_username_as_clientid` is a listener option: Mosquitto 2.0 accepts it before the
    first `listener` line and then ignores it (the first version of this fix did that, and
    the takeover test above failed). Both configs set it in every listener block."""
    d, _, _ = store
    conf = (d / "mosquitto" / "mosquitto.conf").read_text()
    deployed = (Path(__file__).parents[3] / "deploy/mosquitto/store.conf").read_text()
    for text in (conf, deployed):
        blocks = _listeners(text)
        assert blocks and all("use_username_as_clientid true" in b for b in blocks), blocks
        assert f"autosave_interval {provision.AUTOSAVE_S}" in text.splitlines()
    assert len(_listeners(conf)) == 2 and "allow_anonymous false" in conf.splitlines()
    users = {ln.split(":")[0] for ln in (d / "mosquitto" / "passwd").read_text().splitlines()}
    assert users == {"pe-gateway", "pe-gateway.cmd", "pad-a", "lk-b"}
    g = json.loads((d / "gateway.json").read_text())
    assert (g["user"], g["cmd_user"]) == ("pe-gateway", "pe-gateway.cmd")
    assert g["password"] != g["cmd_password"]


def test_tube_line_controllers_get_credentials(store, capsys):
    d, _, _ = store
    cfg = provision.add_device(d, "tl-1", "tube-line")
    assert cfg["kind"] == "tube-line" and cfg["mqtt"]["user"] == "tl-1"
    assert provision_cli.main(["device", str(d), "tl-2", "--kind", "tube-line"]) == 0, \
        capsys.readouterr().err
    assert json.loads((d / "devices" / "tl-2.config.json").read_text())["kind"] == "tube-line"
    with pytest.raises(provision.ProvisionError, match="kind must be one of"):
        provision.add_device(d, "tl-3", "tube-lines")


def test_a_device_reads_only_its_own_firmware_chunks_and_asks_only_for_its_own(store):
    """OTA on the provisioned broker (docs/ota.md, "Chunks"): a device writes its chunk requests
    on its own pe/1/<id>/ota only and reads the chunks on its own ctl only. pad-a cannot ask
    for chunks as lk-b (its request never reaches the gateway), nor read lk-b's requests or
    the chunks the gateway sends lk-b."""
    d, port, _ = store
    gw = Conn(d, port, "gateway", "pe-gateway", subs=("pe/1/+/ota",)).wait_up()
    pad = Conn(d, port, "pad-a", "pad-a",
               subs=("pe/1/pad-a/ctl", "pe/1/lk-b/ota", "pe/1/lk-b/ctl")).wait_up()
    bank = Conn(d, port, "lk-b", "lk-b", subs=("pe/1/lk-b/ctl",)).wait_up()
    everyone = (gw, pad, bank)
    try:
        bank.pub("pe/1/lk-b/ota", b"lk-req", everyone)
        assert gw.until(b"lk-req", everyone) == [("pe/1/lk-b/ota", b"lk-req")]
        pad.pub("pe/1/lk-b/ota", b"forged-req", everyone)   # dropped by the ACL
        pad.pub("pe/1/pad-a/ota", b"pad-req", everyone)
        assert gw.until(b"pad-req", everyone) == [("pe/1/pad-a/ota", b"pad-req")]
        gw.pub("pe/1/lk-b/ctl", b"lk-chunk", everyone)
        assert bank.until(b"lk-chunk", everyone) == [("pe/1/lk-b/ctl", b"lk-chunk")]
        gw.pub("pe/1/pad-a/ctl", b"pad-chunk", everyone)
        # everything above was acknowledged before this chunk was sent: nothing of lk-b's
        # (its request, its chunk) came to pad-a before its own chunk, so nothing came at all
        assert pad.until(b"pad-chunk", everyone) == [("pe/1/pad-a/ctl", b"pad-chunk")]
    finally:
        for c in everyone:
            c.close()
