"""The conformance kit (tools/conformance, docs/protocol.md "Conformance"): our real firmware
passes it on the virtual rig over MQTT and over CoAP; a device with one broken clause fails
exactly that clause; the test hook is off unless the config enables it, and refused in a
provisioned one (over CoAP: next to any key but the kit's throwaway one)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import tools.conformance as kit
from hil.harness import Mosquitto
from hil.sim.firmware import FIRMWARE, FirmwareProcess, build_mpy, kit_device_cmd
from hil.sim.mfrc522 import MFRC522Emulator
from hil.sim.rig import VirtualRig
from tests.support.micropython import run_micropython
from tools.cli import main as phygital
from tools.conformance.coap import KIT_KEY_MARKER, kit_key

ALL = [c.id for c in kit.CLAUSES]
MQTT = [c.id for c in kit.CLAUSES if c.not_applicable("mqtt") is None]
COAP = [c.id for c in kit.CLAUSES if c.not_applicable("coap") is None]
FAULTY = Path(__file__).resolve().parents[1] / "support" / "faulty_device.py"
FAULTY_COAP = Path(__file__).resolve().parents[1] / "support" / "faulty_coap_device.py"


@pytest.fixture
def rig():
    r = VirtualRig().start()
    yield r
    r.stop()


def firmware_cmd(workdir: Path, monkeypatch, heap: str = "96k") -> str:
    """`--device-cmd` for our firmware, the .mpy build on MICROPYPATH (hil.sim.firmware)."""
    monkeypatch.setenv("MICROPYPATH", f"{build_mpy()}:.frozen")
    return kit_device_cmd(workdir, heap)


def test_our_sample_pad_firmware_passes_every_clause_over_mqtt(tmp_path, rig, monkeypatch):
    rig.device("pad-cf").attach_spi("rfid", MFRC522Emulator())
    opts = kit.Options("pad-cf", device_cmd=firmware_cmd(tmp_path / "kit", monkeypatch),
                       device_config={"board": "sim", "sim": {"host": rig.host, "port": rig.port}},
                       workdir=tmp_path / "kit")
    report = kit.run(opts)
    print(report.text())
    assert report.error is None
    assert {r.clause.id: r.status for r in report.results} == \
        {c: "pass" if c in MQTT else "n/a" for c in ALL}, report.text()


# Our firmware over CoAP, every clause asserted, at the 96 KB goal (issue 16, docs/coap.md "Heap
# at 96 KB"): on a quiet machine it failed one run in two until a response whose payload found no
# hole in the heap ended its exchange at once (before, the poll waited for retransmissions that
# met the same heap: a `ping` left unanswered for 20 s); and `ack-cumulative` failed (CI, and 2
# of 10 runs) until a message so dropped was asked for again (`again=1`, docs/coap.md fix 6);
# `bad-input` about one run in 10 until a datagram that `recv()` took and lost to the heap was
# asked for again at once instead of after 2-3 s, 4-6 s ... of retransmission timers (fix 7).
COAP_HEAP = "96k"
KNOWN_FLAKY: set[str] = set()


def test_our_sample_pad_firmware_passes_every_applicable_clause_over_coap(tmp_path, rig, monkeypatch):
    """The same firmware over CoAP (edge/coap.py: challenge, proof, a signed request each), at
    COAP_HEAP (see above), against the kit's CoAP gateway role with a throwaway kit key: every
    applicable clause passes."""
    rig.device("pad-cc").attach_spi("rfid", MFRC522Emulator())
    opts = kit.Options("pad-cc", device_cmd=firmware_cmd(tmp_path / "kit", monkeypatch, COAP_HEAP),
                       device_config={"board": "sim", "sim": {"host": rig.host, "port": rig.port}},
                       workdir=tmp_path / "kit", transport="coap")
    report = kit.run(opts)
    print(report.text())
    assert report.error is None, report.text()
    status = {r.clause.id: r.status for r in report.results if r.clause.id not in KNOWN_FLAKY}
    assert status == {c: "pass" if c in COAP else "n/a" for c in ALL if c not in KNOWN_FLAKY}, \
        report.text()
    assert "last will" in next(r.detail for r in report.results if r.clause.id == "will")


@pytest.mark.parametrize("fault, broken", [
    ("no-replay", {"replay"}),
    ("apply-duplicates", {"duplicate-command", "redelivery"}),
])
@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_the_kit_fails_exactly_the_clause_a_faulty_device_breaks(tmp_path, capsys, fault, broken):
    cmd = f"{sys.executable} {FAULTY} --config {{config}} --fault {fault}"
    rc = phygital(["conformance", "--dev", "faulty-1", "--device-cmd", cmd, "--workdir",
                   str(tmp_path), "--json"])
    report = json.loads(capsys.readouterr().out)
    status = {c["id"]: c["status"] for c in report["clauses"]}
    assert rc == 1 and report["ok"] is False
    assert {c for c, s in status.items() if s == "fail"} == broken, report
    assert {c for c, s in status.items() if s == "pass"} == set(MQTT) - broken, report
    assert {c for c, s in status.items() if s == "n/a"} == set(ALL) - set(MQTT), report
    for c in report["clauses"]:  # each line names its section of the doc
        assert c["anchor"].startswith("docs/protocol.md#") and c["section"]


@pytest.mark.slow  # a long scenario: `pytest -m slow` (README, "Tests")
def test_over_coap_the_kit_fails_exactly_the_clause_a_faulty_device_breaks(tmp_path, capsys):
    """A CoAP device written from the doc alone (aiocoap client, its own HMAC) that applies a
    repeated command id again. Every clause but `resend-unacked` (its 10 s wait is covered over
    MQTT and by our firmware above), to keep the run short."""
    broken = {"duplicate-command", "redelivery"}
    only = [a for c in COAP if c != "resend-unacked" for a in ("--only", c)]
    cmd = f"{sys.executable} {FAULTY_COAP} --config {{config}} --fault apply-duplicates"
    rc = phygital(["conformance", "--dev", "faulty-c", "--transport", "coap", "--device-cmd", cmd,
                   "--workdir", str(tmp_path), "--json", *only])
    report = json.loads(capsys.readouterr().out)
    status = {c["id"]: c["status"] for c in report["clauses"]}
    assert rc == 1 and report["ok"] is False and report["transport"] == "coap"
    assert {c for c, s in status.items() if s == "fail"} == broken, report
    assert {c for c, s in status.items() if s == "pass"} == set(COAP) - broken - {"resend-unacked"}, report


def test_without_the_config_flag_the_firmware_has_no_test_hook(tmp_path, rig, capsys):
    """A device started with no `conformance` in its config (every production device): no
    capability, the command is unknown, and the kit skips the clauses that need the hook."""
    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    rig.device("pad-nohook").attach_spi("rfid", MFRC522Emulator())
    fw = FirmwareProcess({"device_id": "pad-nohook", "kind": "sample-pad", "board": "sim",
                          "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive": 10},
                          "sim": {"host": rig.host, "port": rig.port}}, tmp_path)
    try:
        fw.start()
        rc = kit.main(["--dev", "pad-nohook", "--broker", f"127.0.0.1:{broker.port}", "--only", "birth",
                       "--only", "bad-input", "--only", "replay", "--json"])
        report = json.loads(capsys.readouterr().out)
        status = {c["id"]: (c["status"], c["detail"]) for c in report["clauses"]}
        assert status["birth"][0] == "pass"
        assert status["bad-input"][0] == status["replay"][0] == "skip"
        assert "no `conformance` capability" in status["replay"][1]
        assert rc == 1  # a skipped clause is not a pass
        import tools.conformance.link as link_mod
        side = link_mod.MqttGatewaySide("127.0.0.1", broker.port, "pad-nohook")
        side.start()
        try:
            since = side.mark()
            side.publish("ctl", side.envelope("rebirth", {}))
            birth = side.wait(lambda m: m.channel == "birth", since, 20)
            assert birth is not None and "conformance" not in birth.body["caps"]
            since = side.mark()
            side.command("c-hook", side.envelope("cmd", {"name": "conformance", "args": {
                "action": "emit", "n": 1}, "deadline": link_mod.now_ms() + 60000}, id="c-hook"))
            reply = side.wait(lambda m: m.channel == "reply" and m.body.get("status") == "rejected", since, 20)
            assert reply is not None and reply.body["reason"] == "unknown-command"
            assert not side.find(lambda m: m.channel == "evt", since)
        finally:
            side.stop()
    finally:
        fw.stop()
        broker.stop()


KIT_KEY = kit_key().hex()
PROVISIONED_KEY = "a" * 64  # tools/provision.py: 32 random bytes


@pytest.mark.parametrize("transport, mqtt, refused", [
    ("mqtt", {"host": "h"}, False),
    ("mqtt", {"host": "h", "user": "pad-1", "password": "pw"}, True),
    ("mqtt", {"host": "h", "tls": {"ca": "-----BEGIN CERTIFICATE-----\nx\n"}}, True),
    ("mqtt", {"host": "h", "user": "pad-1", "password": KIT_KEY}, True),  # a kit key is no MQTT pass
    ("coap", {"host": "h", "key": PROVISIONED_KEY}, True),
    ("coap", {"host": "h", "key": KIT_KEY}, False),
    ("coap", {"host": "h", "key": KIT_KEY.upper()}, False),
    ("coap", {"host": "h", "key": KIT_KEY[:30] + "ff" + KIT_KEY[32:]}, True),  # marker altered
    ("coap", {"host": "h"}, False),  # no key: only a gateway allowing unauthenticated devices
])
def test_the_device_config_refuses_the_hook_next_to_broker_credentials(tmp_path, transport, mqtt, refused):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"device_id": "pad-1", "kind": "sample-pad", "transport": transport,
                               transport: mqtt, "conformance": True}))
    r = run_micropython(f"""
from edge import config
try:
    config.load({str(cfg)!r})
    print("LOADED")
except config.ConfigError as e:
    print("REFUSED", e)
""")
    assert ("REFUSED conformance (a test hook) cannot be enabled" in r.stdout) is refused, r.stdout + r.stderr
    assert ("LOADED" in r.stdout) is (not refused)


def test_over_coap_the_kit_must_launch_the_device(capsys):
    """It is the gateway and makes the device's key, so it writes the config."""
    with pytest.raises(SystemExit) as e:
        phygital(["conformance", "--dev", "pad-1", "--transport", "coap"])
    assert e.value.code == 2
    assert "over CoAP the kit is the gateway" in capsys.readouterr().err


def test_the_kit_key_is_marked_and_the_firmware_knows_the_marker():
    key = kit_key()
    assert key.startswith(KIT_KEY_MARKER) and len(key) == 32 and kit_key() != key
    assert f'KIT_KEY = "{KIT_KEY_MARKER.hex()}"' in (FIRMWARE / "edge" / "config.py").read_text()


def test_over_mqtt_the_kit_redelivers_a_command_without_a_final_reply_as_the_gateway_does(tmp_path):
    """The gateway re-sends a command every 2 s until a final answer (docs/protocol.md
    "Commands", Redelivery); our firmware at 96 KB drops a command it finds no heap for (its
    task or parse) and counts on that. The kit's MQTT role re-sent only on a birth, so a ping
    after `bad-input`'s burst, dropped so, was never answered (CI: 1 run in 6 under load)."""
    import queue
    import time

    import paho.mqtt.client as mqtt

    import tools.conformance.link as link_mod
    broker = Mosquitto(tmp_path / "broker", persistence=False).start()
    got: queue.Queue[bytes] = queue.Queue()
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="starved-1")
    dev.on_message = lambda c, u, m: got.put(bytes(m.payload))
    dev.on_connect = lambda c, u, f, rc, p=None: c.subscribe("pe/1/starved-1/cmd", 1)
    side = link_mod.MqttGatewaySide("127.0.0.1", broker.port, "starved-1")
    try:
        dev.connect("127.0.0.1", broker.port)
        dev.loop_start()
        side.start()
        while not dev.is_connected():
            time.sleep(0.05)
        time.sleep(0.5)  # the device's SUBACK before the first delivery
        raw = json.dumps(side.envelope("cmd", {"name": "ping", "args": {},
                                               "deadline": link_mod.now_ms() + 60000}, id="c-1")).encode()
        side.command("c-1", raw)
        assert got.get(timeout=10) == raw  # taken in, not answered: dropped for want of heap
        assert got.get(timeout=15) == raw  # the same command again, with no birth in between
        assert not side.find(lambda m: m.channel == "birth")
    finally:
        side.stop()
        dev.loop_stop()
        dev.disconnect()
        broker.stop()
