"""The firmware type-checked against each port's published MicroPython stubs (tools/fwtypes.py).

The stubs are installed by .ci/run (`python -m tools.fwtypes --install`, into .venv-stubs/);
without them these tests are skipped, saying how to install them."""
import pytest

from tools import fwtypes

pytestmark = pytest.mark.skipif(
    not all(fwtypes.installed(p) for p in fwtypes.PORTS),
    reason="MicroPython stubs not installed in .venv-stubs/: run `python -m tools.fwtypes --install` "
           "(.ci/run does)")

WRONG = '''\
import machine
import time


class Counter:
    def bump(self):
        self.n += 1          # our own dynamic attribute: not the port's business, not a finding
        return self.n


def run():
    led = machine.Pin(2, machine.Pin.OUT)
    led.toggle()                          # fine on both ports
    time.sleep_ms(5)                      # fine on both ports
    t = time.monotonic()                  # CPython's, not MicroPython's
    wdt = machine.WDT(timeout_ms=5000)    # the keyword is `timeout`
    import ffi                            # the unix port's, no board has it
    import esp32                          # ESP32 only
    esp32.Partition.find(esp32.Partition.TYPE_APP)
    time.ticks_ms()  # type: ignore[attr-defined]
    return t, wdt, ffi
'''


@pytest.mark.parametrize("port", sorted(fwtypes.PORTS))
def test_the_firmware_passes_on_each_port(port):
    findings, _ = fwtypes.run_port(port)
    assert findings == [], "\n".join(map(str, findings))


def test_calls_a_port_lacks_fail_the_check(tmp_path):
    (tmp_path / "wrong.py").write_text(WRONG)
    got = {}
    for port in sorted(fwtypes.PORTS):
        findings, _ = fwtypes.run_port(port, ["wrong.py"], cwd=tmp_path)
        got[port] = {(f.line, f.code) for f in findings}
        assert all(f.file == "wrong.py" for f in findings)
    both = {(15, "attr-defined"), (16, "call-arg"), (17, "import-not-found"), (20, "unused-ignore")}
    assert got["esp32"] == both
    assert got["rp2-pico-w"] == both | {(18, "import-not-found")}


def test_cli_reports_findings_and_fails(tmp_path, monkeypatch, capsys):
    assert fwtypes.main([]) == 0
    out = capsys.readouterr().out
    assert "esp32 (micropython-esp32-stubs==1.29.*): 0 findings" in out
    assert "rp2-pico-w (micropython-rp2-rpi-pico-w-stubs==1.29.*): 0 findings" in out
    fw = tmp_path / "firmware"
    fw.mkdir()
    (fw / "edge").mkdir()
    (fw / "edge" / "__init__.py").write_text("")
    (fw / "edge" / "x.py").write_text("import time\ntime.monotonic()\n")
    (fw / "main.py").write_text("import edge.x\n")
    monkeypatch.setattr(fwtypes, "FIRMWARE", fw)
    monkeypatch.setattr(fwtypes, "run_port", lambda port, show_all=False, _r=fwtypes.run_port:
                        _r(port, cwd=fw, show_all=show_all))
    assert fwtypes.main(["--port", "rp2-pico-w"]) == 1
    out = capsys.readouterr().out
    assert '[rp2-pico-w] firmware/edge/x.py:2: Module has no attribute "monotonic"  [attr-defined]' in out


def test_missing_stubs_say_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fwtypes, "STUBS", tmp_path / "none")
    assert fwtypes.main(["--port", "esp32"]) == 2
    assert "python -m tools.fwtypes --install" in capsys.readouterr().err
