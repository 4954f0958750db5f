# The locker bank's texts (docs/lockers.md "Texts"): the `texts` command and the check of texts
# read from flash at boot. Rare, so loaded for it and freed after (like locker_staff), and
# kept out of locker_staff so a staff command's peak heap does not carry it.
import os

from edge import fsutil
from edge.apps.locker import TX
from edge.runtime import Rejected

MAX_LINE = 160  # bytes of one text (the gateway's [screens] limit is lower)


def texts_rev(t):
    """The rev of texts `t` (bytes: a line with the rev, then one line per text of TX, each
    ending in "\n"), or None if they are not usable here: not as many lines as TX, a line empty,
    longer than MAX_LINE, outside printable ASCII (what the display shows), or with other %
    placeholders than the built-in text (the firmware formats them: a wrong one would raise)."""
    if not isinstance(t, bytes) or not t.endswith(b"\n"):
        return None
    lines = t.split(b"\n")
    want = TX.split(b"\n")
    if len(lines) != len(want):
        return None
    try:
        rev = int(lines[0])
    except ValueError:
        return None
    for k in range(1, len(want) - 1):
        x = lines[k]
        if not 0 < len(x) <= MAX_LINE or any(c < 0x20 or c > 0x7E for c in x):
            return None
        for p in (b"%", b"%d", b"%s"):
            if x.count(p) != want[k].count(p):
                return None
    return rev


async def cmd_texts(b, args):
    """The store's words for the display (desired state, docs/lockers.md "Texts"): `t` is one
    string, a line per text in edge.apps.locker's TX order; kept on flash until the next."""
    rev = args.get("rev")
    t = args.get("t")
    if not isinstance(rev, int) or rev < 0 or not isinstance(t, str) or len(t) > 4096:
        raise Rejected("bad-args")
    if rev == int(b.tx[:b.tx.find(b"\n")]):
        return {"rev": rev}  # already shown (and on flash)
    if rev == 0:  # the built-in texts (TX): no copy of them in the heap
        for p in (b.tx_path, b.tx_path + ".tmp"):
            try:
                os.remove(p)
            except OSError:
                pass
        b.tx = TX
        b._show(b._idle())
        return {"rev": 0}
    t = ("%d\n%s\n" % (rev, t)).encode()
    if texts_rev(t) != rev:
        raise Rejected("bad-texts")
    tmp = b.tx_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(t)
    fsutil.replace(tmp, b.tx_path)
    b.tx = t
    b._show(b._idle())
    return {"rev": rev}
