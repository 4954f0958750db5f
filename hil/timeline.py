"""Draw a `Trace` as a PNG timeline: one row per signal, a time axis, numbered note markers.

Layout, top to bottom: title; a marker lane where each note is a numbered tick (scenario
steps in blue, resets and errors in red, protocol messages in grey, other notes in green);
one row per signal (device.signal on the left, the waveform high/low, ``?`` before the first
known value); the time axis; then the legend: marker number, time, source and text of each
note (protocol messages are listed too, up to `max_legend` rows).

Dashed vertical lines run from each scenario step through all signal rows, so "placed the tag
here, LED came on 80 ms later" is visible at a glance.
"""
from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from hil.trace import Trace

BG = (255, 255, 255)
FG = (30, 30, 30)
GRID = (225, 225, 225)
HIGH = (0, 130, 60)
LOW = (0, 90, 40)
UNKNOWN = (200, 160, 0)
COLORS = {"scenario": (40, 90, 200), "mqtt": (130, 130, 130), "error": (200, 40, 40), "other": (40, 150, 90)}


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _kind(source: str, text: str) -> str:
    low = text.lower()
    if source == "scenario":
        return "scenario"
    if source == "mqtt":
        return "mqtt"
    if any(w in low for w in ("reset", "traceback", "error", "fail", "unexpected")):
        return "error"
    return "other"


def _nice_step(span: float, target_ticks: int = 10) -> float:
    raw = span / max(1, target_ticks)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def render_timeline(trace: Trace, *, width: int = 1400, row_h: int = 30, max_legend: int = 60,
                    title: str | None = None) -> Image.Image:
    signals, notes = trace.snapshot()
    names = []
    for _, dev, name, _ in signals:
        if (dev, name) not in names:
            names.append((dev, name))
    duration = max(trace.duration(), 1e-3)
    font, small = _font(13), _font(11)

    label_w = 230
    right = 20
    plot_w = width - label_w - right
    title_h = 34
    marker_h = 34
    axis_h = 30
    legend_rows = notes[:max_legend]
    legend_h = 18 * (len(legend_rows) + (1 if len(notes) > max_legend else 0)) + 16
    height = title_h + marker_h + row_h * max(1, len(names)) + axis_h + legend_h
    img = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(img)

    def x_of(t: float) -> float:
        return label_w + plot_w * min(max(t, 0.0), duration) / duration

    d.text((10, 8), title or trace.title or "trace", fill=FG, font=_font(16))
    top = title_h + marker_h
    bottom = top + row_h * max(1, len(names))

    # grid and axis
    step = _nice_step(duration)
    t = 0.0
    while t <= duration + 1e-9:
        x = x_of(t)
        d.line([(x, top), (x, bottom)], fill=GRID)
        d.line([(x, bottom), (x, bottom + 5)], fill=FG)
        label = f"{t:.3f}".rstrip("0").rstrip(".") + "s" if step < 1 else f"{t:g}s"
        d.text((x - 12, bottom + 8), label, fill=FG, font=small)
        t += step
    d.line([(label_w, bottom), (label_w + plot_w, bottom)], fill=FG)

    # note markers (labels of close markers are staggered over three lines)
    last_x = [-1e9, -1e9, -1e9]
    for i, (t, src, text) in enumerate(notes, 1):
        color = COLORS[_kind(src, text)]
        x = x_of(t)
        lane = next((k for k in range(3) if x - last_x[k] >= 7 * len(str(i)) + 4), None)
        d.line([(x, title_h + 24), (x, top)], fill=color, width=1)
        if _kind(src, text) in ("scenario", "error"):
            for y in range(top, bottom, 6):  # dashed line through the rows
                d.line([(x, y), (x, min(y + 3, bottom))], fill=color)
        if i <= max_legend and lane is not None:
            d.text((x + 2, title_h + lane * 8 - 2), str(i), fill=color, font=small)
            last_x[lane] = x

    # signal rows
    for r, (dev, name) in enumerate(names):
        y0 = top + r * row_h
        hi, lo = y0 + 6, y0 + row_h - 8
        d.line([(label_w, y0 + row_h), (label_w + plot_w, y0 + row_h)], fill=GRID)
        d.text((10, y0 + row_h / 2 - 8), f"{dev}.{name}", fill=FG, font=font)
        changes = [(t, v) for (t, dv, n, v) in signals if dv == dev and n == name]
        x_prev = label_w
        v_prev = None
        for t, v in changes + [(duration, None)]:
            x = x_of(t)
            if v_prev is None:
                if x > x_prev:
                    mid = (hi + lo) / 2
                    d.line([(x_prev, mid), (x, mid)], fill=UNKNOWN, width=1)
                    if x - x_prev > 14:
                        d.text((x_prev + 3, mid - 14), "?", fill=UNKNOWN, font=small)
            else:
                y = hi if v_prev else lo
                if v_prev:
                    d.rectangle([(x_prev, hi), (x, lo)], fill=(215, 240, 222))
                d.line([(x_prev, y), (x, y)], fill=HIGH if v_prev else LOW, width=2)
            if v is not None and v_prev is not None and v != v_prev:
                d.line([(x, hi), (x, lo)], fill=HIGH, width=2)
            if v is not None:
                x_prev, v_prev = x, v

    # legend
    y = bottom + axis_h + 6
    for i, (t, src, text) in enumerate(legend_rows, 1):
        color = COLORS[_kind(src, text)]
        line = f"{i:>3}  {t:8.3f}s  [{src}] {text}"
        max_chars = int((width - 20) / 7)
        d.text((10, y), line[:max_chars], fill=color, font=small)
        y += 18
    if len(notes) > max_legend:
        d.text((10, y), f"... {len(notes) - max_legend} more notes in the VCD", fill=FG, font=small)
    return img


def write_timeline(trace: Trace, path: str | Path, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_timeline(trace, **kw).save(path, "PNG")
    return path
