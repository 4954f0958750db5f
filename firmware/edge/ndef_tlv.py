# The NDEF TLV and record walkers every tag reader needs (edge.ndef: the sample pad's sample id;
# edge.gs1: the fitting room's garment ids). A module of their own so that a fitting room does
# not hold the sample pad's Text/URI parsing in its heap (~1 KB on the 64-bit unix port).
# Plain Python: runs on MicroPython and CPython alike.


def find_tlv(b, n):
    """Locate the NDEF message TLV in b[0:n] (data area from page 4).

    Returns (start, length): start < 0 when there is no NDEF TLV; length < 0 when more
    data is needed to decide; else the message is b[start:start + length].
    """
    i = 0
    while i < n:
        t = b[i]
        if t == 0x00:  # NULL TLV
            i += 1
            continue
        if t == 0xFE:  # terminator
            return -1, 0
        if i + 1 >= n:
            return 0, -1
        ln = b[i + 1]
        i += 2
        if ln == 0xFF:
            if i + 2 > n:
                return 0, -1
            ln = (b[i] << 8) | b[i + 1]
            i += 2
        if t == 0x03:
            return i, ln
        i += ln  # lock control, memory control, proprietary TLVs
    return 0, -1


def _find(b, a, e, pat):
    # index of bytes `pat` in b[a:e], or -1 (no slicing of the tag buffer)
    m = len(pat)
    i = a
    while i + m <= e:
        j = 0
        while j < m and b[i + j] == pat[j]:
            j += 1
        if j == m:
            return i
        i += 1
    return -1


def record(b, i, end):
    """The NDEF record at b[i:end]: (header, type start, type length, payload start, payload
    length), or None if it is truncated."""
    if i + 2 > end:
        return None
    hdr = b[i]
    tl = b[i + 1]
    i += 2
    if hdr & 0x10:  # short record
        if i >= end:
            return None
        pl = b[i]
        i += 1
    else:
        if i + 4 > end:
            return None
        pl = (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]
        i += 4
    il = 0
    if hdr & 0x08:
        if i >= end:
            return None
        il = b[i]
        i += 1
    p = i + tl + il
    if p + pl > end:
        return None
    return hdr, i, tl, p, pl
