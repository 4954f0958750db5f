"""Write a `Trace` as a Value Change Dump (IEEE 1364 VCD) that GTKWave and PulseView open.

Layout of the file:

* ``$timescale 1 us``; times are microseconds since the trace started.
* One ``$scope module <device>`` per device, one ``$var wire 1`` per signal in it. A signal
  has the value ``x`` until its first recorded value.
* Notes (scenario steps, console lines, protocol messages) are ``$comment`` blocks at their
  time, and each note source has a wire ``notes`` in scope ``notes.<source>`` that toggles at
  every note from that source, so every viewer shows an edge where something was said.
* With ``strings=True`` each note source also gets a ``$var string`` holding the note text
  (GTKWave shows it as a text trace; sigrok/PulseView do not know string variables, so it is
  off by default).

Names are made VCD-safe: characters other than letters, digits and ``_`` become ``_``
(``tag.S-1001`` → ``tag_S_1001``).
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from hil.trace import Trace

TIMESCALE_S = 1e-6


def safe_name(name: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if out and not out[0].isdigit() else "_" + out


def _ident(n: int) -> str:
    """Short identifier codes from the printable ASCII range 33..126."""
    chars = []
    n += 1
    while n:
        n, r = divmod(n - 1, 94)
        chars.append(chr(33 + r))
    return "".join(chars)


def _comment_text(text: str) -> str:
    # "$end" would close the comment early; keep it on one line.
    return text.replace("$end", "$ end").replace("\r", " ").replace("\n", " ")


def _string_value(text: str) -> str:
    # GTKWave reads a string value up to whitespace: escape spaces and backslashes.
    return text.replace("\\", "\\\\").replace(" ", "\\x20").replace("\t", "\\x09").replace("\n", "\\n")


def to_vcd(trace: Trace, *, strings: bool = False, module: str = "rig") -> str:
    signals, notes = trace.snapshot()
    ticks = lambda t: max(0, round(t / TIMESCALE_S))

    # variables
    ids: dict[tuple[str, str], str] = {}
    for _, dev, name, _ in signals:
        ids.setdefault((dev, name), _ident(len(ids)))
    sources: list[str] = []
    for _, src, _ in notes:
        if src not in sources:
            sources.append(src)
    note_ids = {src: _ident(len(ids) + i) for i, src in enumerate(sources)}
    str_ids = {src: _ident(len(ids) + len(sources) + i) for i, src in enumerate(sources)} if strings else {}

    out: list[str] = []
    out.append(f"$date {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(trace.wall0))} $end")
    out.append("$version phygital-edge hil.vcd $end")
    if trace.title:
        out.append(f"$comment {_comment_text(trace.title)} $end")
    out.append("$timescale 1 us $end")
    out.append(f"$scope module {safe_name(module)} $end")
    devices: dict[str, list[tuple[str, str]]] = {}
    for (dev, name), ident in ids.items():
        devices.setdefault(dev, []).append((name, ident))
    for dev, vars_ in devices.items():
        out.append(f"$scope module {safe_name(dev)} $end")
        for name, ident in vars_:
            out.append(f"$var wire 1 {ident} {safe_name(name)} $end")
        out.append("$upscope $end")
    if sources:
        out.append("$scope module notes $end")
        for src in sources:
            out.append(f"$scope module {safe_name(src)} $end")
            out.append(f"$var wire 1 {note_ids[src]} notes $end")
            if strings:
                out.append(f"$var string 1 {str_ids[src]} text $end")
            out.append("$upscope $end")
        out.append("$upscope $end")
    out.append("$upscope $end")
    out.append("$enddefinitions $end")

    # initial values
    out.append("#0")
    out.append("$dumpvars")
    for ident in ids.values():
        out.append(f"x{ident}")
    for src in sources:
        out.append(f"0{note_ids[src]}")
        if strings:
            out.append(f"s {str_ids[src]}")
    out.append("$end")

    # changes, merged by time
    events: list[tuple[int, int, str]] = []  # (tick, order, line)
    for i, (t, dev, name, value) in enumerate(signals):
        events.append((ticks(t), 2 * i, f"{1 if value else 0}{ids[(dev, name)]}"))
    toggle = {src: 0 for src in sources}
    for i, (t, src, text) in enumerate(notes):
        toggle[src] ^= 1
        lines = [f"$comment [{src}] {_comment_text(text)} $end", f"{toggle[src]}{note_ids[src]}"]
        if strings:
            lines.append(f"s{_string_value(text)} {str_ids[src]}")
        events.append((ticks(t), 2 * i + 1, "\n".join(lines)))
    events.sort(key=lambda e: (e[0], e[1]))
    last = 0
    for tick, _, line in events:
        if tick != last:
            out.append(f"#{tick}")
            last = tick
        out.append(line)
    end = ticks(trace.duration())
    if end > last:
        out.append(f"#{end}")
    return "\n".join(out) + "\n"


def write_vcd(trace: Trace, path: str | Path, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_vcd(trace, **kw))
    return path
