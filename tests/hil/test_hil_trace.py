"""Trace exporters: the VCD is parsed back (by an independent reader below) and checked value
by value; the PNG timeline is drawn and checked; the plugin writes both when a scenario fails."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from PIL import Image

from hil.timeline import render_timeline, write_timeline
from hil.trace import Trace
from hil.vcd import to_vcd, write_vcd

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "hil"


def sample_trace() -> Trace:
    tr = Trace("locker-a: pickup with code")
    tr.signals = [
        (0.000, "locker-a", "door_1", 0),
        (0.000, "locker-a", "lock_1", 0),
        (0.120, "locker-a", "lock_1", 1),
        (0.450, "locker-a", "door_1", 1),
        (0.500, "locker-a", "lock_1", 0),
        (1.250, "locker-a", "door_1", 0),
        (0.300, "pad-1", "led", 1),  # out of order on purpose: exporters sort
        (0.900, "pad-1", "tag.S-1001", 1),
    ]
    tr.notes = [
        (0.100, "scenario", "locker-a: keypad 123456#"),
        (0.110, "mqtt", "locker-a -> evt code.accepted seq=4"),
        (0.460, "locker-a", "door 1 open"),
        (1.300, "scenario", "end $end of story"),
    ]
    tr.end = 1.5
    return tr


def parse_vcd(text: str) -> dict:
    """A strict little VCD reader: scopes, vars, timescale, value changes, comments."""
    tokens = re.findall(r"\$comment.*?\$end|\S+", text, flags=re.DOTALL)
    i = 0
    scope: list[str] = []
    vars_: dict[str, str] = {}
    kinds: dict[str, str] = {}
    timescale = None
    while tokens[i] != "$enddefinitions":
        t = tokens[i]
        if t == "$timescale":
            j = tokens.index("$end", i)
            timescale = " ".join(tokens[i + 1:j])
            i = j + 1
        elif t == "$scope":
            assert tokens[i + 1] == "module" and tokens[i + 3] == "$end"
            scope.append(tokens[i + 2])
            i += 4
        elif t == "$upscope":
            scope.pop()
            i += 2
        elif t == "$var":
            kind, width, ident, name, end = tokens[i + 1:i + 6]
            assert end == "$end" and width == "1"
            assert ident not in vars_, "identifier codes are unique"
            vars_[ident] = ".".join(scope + [name])
            kinds[ident] = kind
            i += 6
        elif t.startswith("$comment") or t in ("$date", "$version"):
            i = tokens.index("$end", i) + 1 if not t.startswith("$comment") else i + 1
        else:
            raise AssertionError(f"unexpected token {t!r} in the header")
    assert scope == [], "every $scope has its $upscope"
    i += 2  # $enddefinitions $end
    now = None
    changes: dict[str, list[tuple[int, str]]] = {v: [] for v in vars_.values()}
    comments: list[tuple[int, str]] = []
    while i < len(tokens):
        t = tokens[i]
        if t.startswith("#"):
            new = int(t[1:])
            assert now is None or new > now, "time only moves forward"
            now = new
        elif t in ("$dumpvars", "$end"):
            pass
        elif t.startswith("$comment"):
            comments.append((now, t[len("$comment"):-len("$end")].strip()))
        elif t.startswith("s"):
            value, ident = t[1:], tokens[i + 1]
            changes[vars_[ident]].append((now, value))
            i += 1
        else:
            value, ident = t[0], t[1:]
            assert value in "01xz", t
            changes[vars_[ident]].append((now, value))
        i += 1
    return {"timescale": timescale, "vars": vars_, "kinds": kinds, "changes": changes, "comments": comments}


def value_at(changes: list[tuple[int, str]], t: int) -> str:
    v = None
    for ts, val in changes:
        if ts > t:
            break
        v = val
    return v


def test_vcd_parses_back_to_the_same_signal_values():
    tr = sample_trace()
    vcd = parse_vcd(to_vcd(tr))
    assert vcd["timescale"] == "1 us"
    names = set(vcd["vars"].values())
    assert {"rig.locker_a.door_1", "rig.locker_a.lock_1", "rig.pad_1.led", "rig.pad_1.tag_S_1001"} <= names
    assert set(vcd["kinds"].values()) == {"wire"}
    ch = vcd["changes"]
    # every recorded value, at every instant, is what the trace says
    for dev, sig in tr.signal_names():
        name = f"rig.{dev.replace('-', '_')}.{sig.replace('.', '_').replace('-', '_')}"
        for t_us in range(0, 1_500_001, 10_000):
            want = tr.value_at(dev, sig, t_us / 1e6)
            got = value_at(ch[name], t_us)
            assert got == ("x" if want is None else str(want)), (name, t_us)
    assert value_at(ch["rig.locker_a.lock_1"], 119_999) == "0"
    assert value_at(ch["rig.locker_a.lock_1"], 120_000) == "1"
    assert value_at(ch["rig.pad_1.led"], 299_999) == "x"  # unknown before its first value


def test_vcd_notes_are_comments_and_edges_at_their_times():
    vcd = parse_vcd(to_vcd(sample_trace()))
    texts = {c: t for t, c in vcd["comments"]}
    assert texts["[scenario] locker-a: keypad 123456#"] == 100_000
    assert texts["[mqtt] locker-a -> evt code.accepted seq=4"] == 110_000
    assert any("end $ end of story" in c for _, c in vcd["comments"])  # "$end" cannot close it early
    edges = vcd["changes"]["rig.notes.scenario.notes"]
    assert [t for t, v in edges] == [0, 100_000, 1_300_000]  # initial 0, then a toggle per note


def test_vcd_string_variables_for_gtkwave():
    vcd = parse_vcd(to_vcd(sample_trace(), strings=True))
    assert "string" in vcd["kinds"].values()
    texts = vcd["changes"]["rig.notes.locker_a.text"]
    assert texts[-1] == (460_000, "door\\x201\\x20open")


def test_real_trace_from_threads_exports(tmp_path):
    tr = Trace("live")
    tr.signal("pad-1", "led", 0)
    tr.note("scenario", "place tag")
    tr.signal("pad-1", "led", 1)
    tr.stop()
    path = write_vcd(tr, tmp_path / "live.vcd")
    vcd = parse_vcd(path.read_text())
    assert [v for _, v in vcd["changes"]["rig.pad_1.led"]] == ["x", "0", "1"] or \
        [v for _, v in vcd["changes"]["rig.pad_1.led"]][-1] == "1"
    back = Trace.from_dict(tr.to_dict())
    assert back.signals == tr.signals and back.notes == tr.notes


def test_png_timeline_has_a_row_per_signal_and_is_kept_as_an_example(tmp_path):
    tr = sample_trace()
    img = render_timeline(tr, width=1200)
    assert img.size[0] == 1200
    rows = len(tr.signal_names())
    assert img.size[1] >= 34 + 34 + rows * 30 + 30  # title, markers, rows, axis (+ legend)
    px = img.convert("RGB")
    nonwhite = sum(1 for x in range(0, img.size[0], 3) for y in range(0, img.size[1], 3)
                   if px.getpixel((x, y)) != (255, 255, 255))
    assert nonwhite > 500
    # lock_1 is high from 0.12 s to 0.5 s: its row is filled (light green) at 0.33 s, white at 1.05 s
    row = [n for n in tr.signal_names()].index(("locker-a", "lock_1"))
    y = 34 + 34 + row * 30 + 15
    x_of = lambda t: int(230 + (1200 - 230 - 20) * t / 1.5)
    assert px.getpixel((x_of(0.33), y)) == (215, 240, 222)
    assert px.getpixel((x_of(1.05), y)) == (255, 255, 255)
    path = write_timeline(tr, tmp_path / "t.png")
    assert Image.open(path).format == "PNG"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / "example-timeline.png")
    write_vcd(tr, ARTIFACTS / "example.vcd")


def test_plugin_writes_vcd_png_and_junit_property_when_a_scenario_fails(pytester):
    pytester.makepyfile(test_scn="""
        def test_led_never_comes(rig):
            pad = rig.device("pad-1")
            rig.trace.step("waiting for a LED that has no firmware behind it")
            rig.trace.signal("pad-1", "led", 0)
            assert pad.rig.trace.history("pad-1", "led") == [], "fails on purpose"
    """)
    out = pytester.path / "traces-out"
    res = pytester.runpytest_subprocess("-p", "hil.pytest_plugin", "--no-protocol-trace",
                                        f"--junitxml={pytester.path / 'j.xml'}", "-p", "no:cacheprovider",
                                        "--trace-dir", str(out))
    res.assert_outcomes(failed=1)
    stem = "test_led_never_comes"
    for ext in (".vcd", ".png", ".json"):
        assert (out / f"{stem}{ext}").exists(), list(out.iterdir())
    assert "hil_artifact" in (pytester.path / "j.xml").read_text()
    parse_vcd((out / f"{stem}.vcd").read_text())  # a valid file
