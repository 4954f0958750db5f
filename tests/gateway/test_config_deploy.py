"""The TOML config file (validation, mapping, CLI), its documentation, and the systemd units."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.__main__ import build_parser, resolve
from gateway.app import GatewayConfig
from gateway.config_file import SPEC, ConfigError, load, parse

ROOT = Path(__file__).resolve().parents[2]


def test_example_file_loads_and_maps_onto_gateway_config():
    fc = load(ROOT / "deploy/gateway.toml")
    c = fc.gateway
    assert (c.broker_host, c.broker_port, c.http_port) == ("127.0.0.1", 1883, 8080)
    assert c.db_path == Path("/var/lib/phygital/gw.db")
    assert c.coap_port is None and c.store_id is None
    assert c.chain_kinds == ("event", "device", "command", "locker", "alert", "fitting", "tube",
                             "analytics")
    assert (fc.log_level, fc.log_format) == ("INFO", "json")
    # every key of the example is a default: the file documents the defaults truthfully
    d = GatewayConfig()
    assert c.ack_linger_s == d.ack_linger_s and c.webhook_backoff_max_s == d.webhook_backoff_max_s
    assert c.command_resend_s == d.command_resend_s and c.stream_keep == d.stream_keep


def test_values_types_and_relative_paths(tmp_path):
    fc = parse({"broker": {"host": "mqtt.store", "port": 8883, "publish_timeout_s": 3},
                "database": {"path": "data/gw.db"}, "ingest": {"ack_linger_ms": 5},
                "coap": {"enabled": True}, "chain": {"store_id": "store-0042",
                                                     "kinds": ["event"]},
                "logging": {"level": "DEBUG"}}, base=tmp_path)
    c = fc.gateway
    assert (c.broker_host, c.broker_port) == ("mqtt.store", 8883)
    assert c.publish_timeout_s == 3.0 and isinstance(c.publish_timeout_s, float)
    assert c.db_path == tmp_path / "data/gw.db"
    assert c.ack_linger_s == 0.005
    assert c.coap_port == 5683
    assert c.store_id == "store-0042" and c.chain_kinds == ("event",)
    assert fc.log_level == "DEBUG"


@pytest.mark.parametrize("data, message", [
    ({"broker": {"port": 70000}}, "[broker] port: expected an integer 1..65535, got 70000"),
    ({"broker": {"port": "1883"}}, "[broker] port: expected an integer 1..65535, got '1883'"),
    ({"http": {"hots": "x"}}, "[http] hots: unknown key (did you mean `host`?)"),
    ({"brokr": {}}, "[brokr]: unknown section (did you mean [broker]?)"),
    ({"ingest": {"batch_max": True}}, "[ingest] batch_max: expected an integer, got True"),
    ({"ingest": {"batch_max": 0}}, "[ingest] batch_max: must be > 0, got 0"),
    ({"logging": {"format": "xml"}}, "[logging] format: must be one of text, json"),
    ({"chain": {"store_id": "Store 1"}}, "[chain] store_id: must match"),
    ({"chain": {"kinds": ["event", "tubes"]}}, "unknown kind(s) ['tubes']"),
    ({"webhooks": {"backoff_min_s": 10, "backoff_max_s": 1}}, "must not exceed backoff_max_s"),
    ({"broker": 5}, "broker: expected a [broker] table"),
])
def test_bad_values_get_clear_errors(data, message):
    with pytest.raises(ConfigError) as exc:
        parse(data, source="gw.toml")
    assert message in str(exc.value)
    assert str(exc.value).startswith("gw.toml: 1 problem")


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        parse({"broker": {"port": 0, "nope": 1}, "http": {"port": -1}}, source="gw.toml")
    text = str(exc.value)
    assert text.startswith("gw.toml: 3 problems")
    assert "[broker] port" in text and "[broker] nope" in text and "[http] port" in text


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[broker\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)


def test_documentation_lists_exactly_the_keys_of_the_code():
    doc = (ROOT / "docs/configuration.md").read_text()
    sections = re.findall(r"^## `\[(\w+)\]`", doc, re.MULTILINE)
    assert sections == list(SPEC)
    for section, keys in SPEC.items():
        body = doc.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
        documented = re.findall(r"^\| `(\w+)` \|", body, re.MULTILINE)
        assert documented == list(keys), section
    example = (ROOT / "deploy/gateway.toml").read_text()
    for section, keys in SPEC.items():
        assert f"[{section}]" in example
        for key in keys:
            assert re.search(rf"^#? ?{key} = ", example, re.MULTILINE), (section, key)


# keys whose example value is a production choice, not the default (the file says so)
EXAMPLE_NOT_DEFAULT = {"db_path": Path("/var/lib/phygital/gw.db"), "coap_host": "0.0.0.0"}


def test_defaults_agree_in_code_cli_doc_and_example():
    """`--batch` said 2048 in --help (what GatewayConfig uses) while docs/configuration.md and
    deploy/gateway.toml said 256 (and the example file, copied to a store, set 256)."""
    import dataclasses
    d = GatewayConfig()
    cli = resolve(build_parser().parse_args([]), [])[0]
    assert {f.name: getattr(cli, f.name) for f in dataclasses.fields(d)} == \
        {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
    for action in build_parser()._actions:  # a default stated in --help is the real one
        m = re.search(r"\(default ([\d.]+)[);]", action.help or "")
        if m and isinstance(action.default, (int, float)):
            assert float(m.group(1)) == action.default, action.dest
    example = load(ROOT / "deploy/gateway.toml").gateway
    for f in dataclasses.fields(d):
        assert getattr(example, f.name) == EXAMPLE_NOT_DEFAULT.get(f.name, getattr(d, f.name)), \
            f.name
    doc = (ROOT / "docs/configuration.md").read_text()
    checked = 0
    for section, keys in SPEC.items():
        body = doc.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
        for key, spec in keys.items():
            m = re.search(rf"^\| `{key}` \| [^|]* \| `(-?[\d.]+)` \|", body, re.MULTILINE)
            if m is None or getattr(d, spec.field) is None:  # [coap] port: only when enabled
                continue
            value = getattr(d, spec.field) * (1000 if spec.kind == "ms" else 1)
            assert float(m.group(1)) == value, (section, key, m.group(1), value)
            checked += 1
    assert checked >= 15


def test_flags_given_explicitly_override_the_file(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[broker]\nport = 1999\n[http]\nport = 9001\n[logging]\nlevel = "WARNING"\n')
    argv = ["--config", str(cfg), "--http", "0.0.0.0:9100", "--log-level", "DEBUG"]
    config, level, fmt = resolve(build_parser().parse_args(argv), argv)
    assert (config.http_host, config.http_port) == ("0.0.0.0", 9100)   # flag
    assert config.broker_port == 1999                                   # file
    assert config.client_id == "pe-gateway"                             # default (flag not given)
    assert (level, fmt) == ("DEBUG", "text")


def test_cli_refuses_a_bad_file_with_exit_2(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[broker]\nport = 70000\n[http]\nhots = 'x'\n")
    p = subprocess.run([sys.executable, "-m", "tools.cli", "gateway", "--config", str(cfg)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2
    assert "bad configuration" in p.stderr and "2 problems" in p.stderr
    assert "[broker] port: expected an integer 1..65535, got 70000" in p.stderr
    assert "did you mean `host`?" in p.stderr


def _units(tmp_path):
    out = []
    for unit in sorted((ROOT / "deploy/systemd").glob("*.service")):
        text = unit.read_text().replace("/opt/phygital/.venv/bin/phygital",
                                        str(Path(sys.executable).with_name("phygital")))
        (tmp_path / unit.name).write_text(text)
        out.append(tmp_path / unit.name)
    return out


def test_systemd_units_verify(tmp_path):
    units = _units(tmp_path)
    assert [u.name for u in units] == ["phygital-gateway.service", "phygital-mosquitto.service"]
    gw = units[0].read_text()
    assert "--config /etc/phygital/gateway.toml" in gw and "RestartPreventExitStatus=2" in gw
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (the units are still parsed above)")
    p = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True,
                       text=True, timeout=60, check=False)
    # verify exits 0 on unknown keys too; it reports them on stderr
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


def test_json_log_lines_carry_the_key_value_pairs():
    import json
    import logging

    from gateway.logs import JsonFormatter

    rec = logging.LogRecord("gateway.bus", logging.WARNING, __file__, 1,
                            "mqtt connection lost broker=%s:%d error=%r retry_in=%.2fs",
                            ("127.0.0.1", 1883, OSError("refused"), 0.25), None)
    line = json.loads(JsonFormatter().format(rec))
    assert line["level"] == "WARNING" and line["logger"] == "gateway.bus"
    assert line["msg"].startswith("mqtt connection lost broker=127.0.0.1:1883")
    assert line["broker"] == "127.0.0.1:1883" and line["retry_in"] == "0.25s"
    assert "error" not in line                      # OSError('refused'): not a plain token
    assert line["ts"].endswith("Z")


def test_command_lane_credentials_from_file_and_gateway_json(tmp_path):
    """The lane's own broker user ([broker] cmd_user/cmd_password, or gateway.json's) reaches
    the bus; a main user without a lane user means no lane (the two would kick each other)."""
    from gateway.transport.bus import REPLY_TOPIC, MqttBus

    c = parse({"broker": {"user": "pe-gateway", "password": "a", "cmd_user": "pe-gateway.cmd",
                          "cmd_password": "b"}}).gateway
    assert (c.mqtt_cmd_user, c.mqtt_cmd_password) == ("pe-gateway.cmd", "b")
    with pytest.raises(ConfigError, match="cmd_user and cmd_password go together"):
        parse({"broker": {"cmd_user": "pe-gateway.cmd"}})
    auth = tmp_path / "gateway.json"
    auth.write_text('{"user": "pe-gateway", "password": "a", "cmd_user": "pe-gateway.cmd", '
                    '"cmd_password": "b", "tls": false}')
    argv = ["--mqtt-auth", str(auth)]
    config, _, _ = resolve(build_parser().parse_args(argv), argv)
    assert (config.mqtt_user, config.mqtt_cmd_user, config.mqtt_cmd_password) == \
        ("pe-gateway", "pe-gateway.cmd", "b")

    async def handler(topic, payload):
        pass

    bus = MqttBus("127.0.0.1", 1883, handler, username="pe-gateway", password="a",
                  lane_username="pe-gateway.cmd", lane_password="b")
    assert bus.auth["username"] == "pe-gateway" and bus.lane.auth == \
        {"username": "pe-gateway.cmd", "password": "b"}
    # one user for both connections: on a provisioned broker (client id := user name) the two
    # would take the id from each other forever, so there is no lane; commands and replies
    # travel on the main connection (an old gateway.json without cmd_user after an upgrade)
    shared = MqttBus("127.0.0.1", 1883, handler, username="u", password="p")
    assert shared.lane is None and REPLY_TOPIC in shared.subscriptions
    assert not shared.unsubscriptions
    anonymous = MqttBus("127.0.0.1", 1883, handler)  # a lab broker: ids are the clients' own
    assert anonymous.lane is not None and REPLY_TOPIC not in anonymous.subscriptions


def test_the_gateway_process_runs_with_a_short_gil_switch_interval(tmp_path, monkeypatch):
    """Issue 18, session 7: the event loop and the SQLite writer thread share the GIL; at
    CPython's 5 ms switch interval a loop that wakes for a command waits up to 5 ms at every
    hand-off while the writer applies a batch."""
    import sys

    import gateway.__main__ as gw_main

    seen: list[float] = []

    def fake_run(coro):
        coro.close()
        seen.append(sys.getswitchinterval())

    monkeypatch.setattr(gw_main.asyncio, "run", fake_run)
    monkeypatch.setattr(gw_main, "setup_logging", lambda *a: None)
    before = sys.getswitchinterval()
    try:
        assert gw_main.main(["--db", str(tmp_path / "gw.db")]) == 0
    finally:
        sys.setswitchinterval(before)
    assert seen == [pytest.approx(gw_main.GIL_SWITCH_S)] and gw_main.GIL_SWITCH_S <= 0.001
