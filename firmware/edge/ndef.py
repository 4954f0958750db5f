# NDEF on NFC Forum Type 2 tags (NTAG21x): find the NDEF TLV, get the sample id.
# Rules (docs/protocol.md, "Sample pad"; same as gateway/kinds/sample_pad/tags.py): the text of the first Text
# record, else the last non-empty path segment of the first URI record that has one.
# Works on a buffer plus indices, so a caller can parse in place. Plain Python: runs on
# MicroPython and CPython alike. UTF-16 Text records are not decoded (sample ids are ASCII).

from edge.ndef_tlv import _find, find_tlv, record  # noqa: F401 (this module's API too)

# URI identifier codes whose prefix ends in "//host" position: the rest starts with the host.
_HIER = (1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 24, 25, 26, 27, 28, 29)


def _text(b, p, pl):
    if pl < 1:
        return None
    st = b[p]
    if st & 0x80:  # UTF-16
        return None
    a = p + 1 + (st & 0x3F)
    e = p + pl
    while a < e and b[a] in (0x20, 0x09, 0x0A, 0x0D):
        a += 1
    while e > a and b[e - 1] in (0x20, 0x09, 0x0A, 0x0D):
        e -= 1
    if a >= e:
        return None
    try:
        return bytes(b[a:e]).decode()
    except Exception:
        return None


def _uri_id(b, p, pl):
    if pl < 2:
        return None
    code = b[p]
    a = p + 1
    e = p + pl
    i = a
    while i < e:  # drop query and fragment
        if b[i] == 0x3F or b[i] == 0x23:
            e = i
            break
        i += 1
    if code in _HIER:
        h = a
    elif code != 0 and e - a >= 2 and b[a] == 0x2F and b[a + 1] == 0x2F:  # "tftp:" + "//host"
        h = a + 2
    else:
        k = _find(b, a, e, b"://")
        if k < 0:
            return None
        h = k + 3
    k = _find(b, h, e, b"/")  # end of host
    if k < 0:
        return None
    # last non-empty segment of the path b[k:e]
    while e > k and b[e - 1] == 0x2F:
        e -= 1
    if e <= k + 1:
        return None
    s = e
    while b[s - 1] != 0x2F:
        s -= 1
    try:
        return bytes(b[s:e]).decode()
    except Exception:
        return None


def sample_id(b, start, length):
    """Sample id from the NDEF message b[start:start + length], or None."""
    i = start
    end = start + length
    uri = None
    while True:
        r = record(b, i, end)
        if r is None:
            break
        hdr, t, tl, p, pl = r
        if hdr & 0x07 == 0x01 and tl == 1:  # NFC Forum well-known type
            if b[t] == 0x54:  # 'T'
                return _text(b, p, pl)
            if b[t] == 0x55 and uri is None:  # 'U'
                uri = _uri_id(b, p, pl)
        if hdr & 0x40:  # ME
            break
        i = p + pl
    return uri


def sample_id_from_area(b, n):
    """Sample id from a Type 2 data area b[0:n]; None if absent, or if b is too short."""
    start, ln = find_tlv(b, n)
    if start < 0 or ln <= 0 or start + ln > n:
        return None
    return sample_id(b, start, ln)

