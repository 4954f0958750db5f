# Garment identity on a tag: a GS1 Digital Link URI record (docs/fitting-rooms.md, "Tags"),
# `https://id.gs1.org/01/<GTIN>/21/<serial>`. Plain Python (MicroPython and CPython).
from edge.ndef_tlv import _find as find_bytes
from edge.ndef_tlv import record


def _uri_payload(b, start, length):
    # (payload start, end) of the first URI record of the message, or (-1, -1)
    i = start
    end = start + length
    while True:
        r = record(b, i, end)
        if r is None:
            return -1, -1
        hdr, t, tl, p, pl = r
        if hdr & 0x07 == 0x01 and tl == 1 and b[t] == 0x55:
            return p, p + pl
        if hdr & 0x40:
            return -1, -1
        i = p + pl


def gs1_ids(b, start, length):
    """(gtin, serial) from a GS1 Digital Link URI record (`.../01/<digits>/21/<serial>`), as
    written on the tag (the gateway checks the GTIN's check digit and decodes the serial), or
    None. docs/fitting-rooms.md, "Tags"."""
    a, e = _uri_payload(b, start, length)
    if a < 0:
        return None
    k = find_bytes(b, a + 1, e, b"/01/")
    if k < 0:
        return None
    g = k + 4
    d = g
    while d < e and 0x30 <= b[d] <= 0x39:
        d += 1
    if d - g < 8 or d - g > 14 or find_bytes(b, d, min(e, d + 4), b"/21/") != d:
        return None
    s = d + 4
    t = s
    while t < e and b[t] not in (0x2F, 0x3F, 0x23):  # / ? #
        t += 1
    if t == s:
        return None
    try:
        return bytes(b[g:d]).decode(), bytes(b[s:t]).decode()
    except Exception:
        return None
