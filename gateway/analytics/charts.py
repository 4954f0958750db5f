"""Server-side SVG charts of the figures (the analytics page shows them; docs/analytics.md).

Why SVG from the gateway rather than a JavaScript chart library: nothing to vendor, update or
licence-check, the page works offline by construction, a chart is one request whose text a
test can read (every bar and point carries `data-v`, its value, and a `<title>` tooltip), and
a store's figures are small (at most a few hundred bars). Pure: figures in, SVG text out.
"""
from __future__ import annotations

import time
from typing import Any
from xml.sax.saxutils import escape

W, H = 760, 260
PAD_L, PAD_R, PAD_T, PAD_B = 48, 48, 16, 34
ENTRIES, PURCHASES, OK, WARN, OFF = "#7aa6d8", "#b3261e", "#1b7f3a", "#b36b00", "#c9c9c9"
CHARTS = ("hourly", "funnel", "products", "devices")


def _svg(body: list[str], label: str, h: int = H) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" '
            f'height="{h}" role="img" aria-label="{escape(label)}" '
            'font-family="system-ui, sans-serif" font-size="11">'
            f'<title>{escape(label)}</title>{"".join(body)}</svg>')


def _nice(v: float) -> int:
    """A round axis maximum >= v."""
    if v <= 0:
        return 1
    m = 1
    while m * 10 <= v:
        m *= 10
    for k in (1, 2, 5, 10):
        if k * m >= v:
            return k * m
    return 10 * m


def _label_t(t: int, bucket: str) -> str:
    g = time.gmtime(t / 1000)
    return time.strftime("%H:00" if bucket == "hour" else "%d %b", g)


def hourly(f: dict[str, Any]) -> str:
    """Entries (bars, left axis) vs purchases (line, right axis) per bucket."""
    b = f["buckets"]
    n = max(1, len(b))
    iw, ih = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    ym = _nice(max([x["entries"] for x in b] + [0]))
    pm = _nice(max([x["purchases"] for x in b] + [0]))
    out = [f'<line x1="{PAD_L}" y1="{PAD_T + ih}" x2="{W - PAD_R}" y2="{PAD_T + ih}" stroke="#999"/>',
           f'<text x="{PAD_L - 4}" y="{PAD_T + 8}" text-anchor="end" fill="{ENTRIES}">{ym}</text>',
           f'<text x="{W - PAD_R + 4}" y="{PAD_T + 8}" fill="{PURCHASES}">{pm}</text>',
           f'<text x="{PAD_L - 4}" y="{PAD_T + ih}" text-anchor="end">0</text>',
           f'<text x="{PAD_L}" y="{H - 4}" fill="{ENTRIES}">■ entries</text>',
           f'<text x="{PAD_L + 80}" y="{H - 4}" fill="{PURCHASES}">● purchases</text>']
    bw = iw / n
    pts = []
    step = max(1, n // 12)
    for i, x in enumerate(b):
        h = ih * x["entries"] / ym
        x0 = PAD_L + i * bw
        label = _label_t(x["t"], f["bucket"])
        out.append(f'<rect class="bar entries" data-t="{x["t"]}" data-v="{x["entries"]}" '
                   f'x="{x0 + bw * .1:.1f}" y="{PAD_T + ih - h:.1f}" width="{bw * .8:.1f}" '
                   f'height="{h:.1f}" fill="{ENTRIES}"><title>{label}: {x["entries"]} entries, '
                   f'{x["purchases"]} purchases</title></rect>')
        py = PAD_T + ih - ih * x["purchases"] / pm
        pts.append(f"{x0 + bw / 2:.1f},{py:.1f}")
        out.append(f'<circle class="point purchases" data-t="{x["t"]}" data-v="{x["purchases"]}" '
                   f'cx="{x0 + bw / 2:.1f}" cy="{py:.1f}" r="2.5" fill="{PURCHASES}"/>')
        if i % step == 0:
            out.append(f'<text x="{x0 + bw / 2:.1f}" y="{PAD_T + ih + 13}" '
                       f'text-anchor="middle">{label}</text>')
    out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{PURCHASES}" '
               'stroke-width="1.5"/>')
    return _svg(out, "Entries and purchases per " + f["bucket"])


def funnel(f: dict[str, Any]) -> str:
    steps = f["steps"]
    top = max([s["count"] for s in steps] + [1])
    bh, gap = 34, 10
    h = PAD_T + len(steps) * (bh + gap) + 8
    iw = W - 200 - 190
    out = []
    for i, s in enumerate(steps):
        y = PAD_T + i * (bh + gap)
        w = iw * s["count"] / top
        pct = "" if s["of_entries"] is None else f" ({s['of_entries'] * 100:.1f} % of entries)"
        out.append(f'<text x="190" y="{y + bh / 2 + 4}" text-anchor="end">{escape(s["step"])}</text>'
                   f'<rect class="bar step" data-step="{escape(s["step"])}" data-v="{s["count"]}" '
                   f'x="200" y="{y}" width="{w:.1f}" height="{bh}" fill="{ENTRIES if i == 0 else OK}">'
                   f'<title>{escape(s["step"])}: {s["count"]}{pct}</title></rect>'
                   f'<text x="{200 + w + 6:.1f}" y="{y + bh / 2 + 4}">{s["count"]}{pct}</text>')
    return _svg(out, "The funnel: entries to purchases", h)


def products(p: dict[str, Any], n: int = 10) -> str:
    rows = [r for r in p["products"] if r["try_on_conversion"] is not None][:n]
    bh, gap = 20, 6
    h = PAD_T + max(1, len(rows)) * (bh + gap) + 8
    iw = W - 260 - PAD_R
    out = [] if rows else [f'<text x="{PAD_L}" y="{PAD_T + 14}">No product was tried on.</text>']
    for i, r in enumerate(rows):
        y = PAD_T + i * (bh + gap)
        c = r["try_on_conversion"]
        w = iw * min(c, 1.0)
        out.append(f'<text x="250" y="{y + 14}" text-anchor="end">{escape(r["product"])}</text>'
                   f'<rect class="bar product" data-product="{escape(r["product"])}" data-v="{c}" '
                   f'x="260" y="{y}" width="{w:.1f}" height="{bh}" fill="{OK}"><title>'
                   f'{escape(r["product"])}: bought {r["bought"]} / tried on {r["tried_on"]}'
                   f'</title></rect><text x="{260 + w + 6:.1f}" y="{y + 14}">{c * 100:.0f} % '
                   f'({r["bought"]}/{r["tried_on"]})</text>')
    return _svg(out, "Top products by try-on conversion", h)


def devices(d: dict[str, Any]) -> str:
    rows = d["devices"]
    span_min = d["minutes"]
    bh, gap = 18, 6
    h = PAD_T + max(1, len(rows)) * (bh + gap) + 24
    iw = W - 200 - PAD_R
    out = [] if rows else [f'<text x="{PAD_L}" y="{PAD_T + 14}">No devices yet.</text>']
    for i, r in enumerate(rows):
        y = PAD_T + i * (bh + gap)
        avail = r["available_min"]
        oos = max(0.0, r["online_min"] - avail)
        x = 200.0
        out.append(f'<text x="190" y="{y + 13}" text-anchor="end">{escape(r["device"])}</text>')
        for cls, v, colour in (("available", avail, OK), ("out-of-service", oos, WARN),
                               ("offline", max(0.0, span_min - avail - oos), OFF)):
            w = iw * v / span_min if span_min else 0
            out.append(f'<rect class="bar {cls}" data-device="{escape(r["device"])}" data-v="{v}" '
                       f'x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bh}" fill="{colour}"><title>'
                       f'{escape(r["device"])}: {cls} {v:.0f} min</title></rect>')
            x += w
        pct = "" if r["availability"] is None else f'{r["availability"] * 100:.1f} %'
        out.append(f'<text x="{200 + iw + 6}" y="{y + 13}">{pct}</text>')
    y = h - 8
    out.append(f'<text x="200" y="{y}" fill="{OK}">■ available</text><text x="290" y="{y}" '
               f'fill="{WARN}">■ out of service</text><text x="410" y="{y}" fill="#888">■ offline'
               '</text>')
    return _svg(out, "Device availability", h)
