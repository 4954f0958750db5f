# The door counter's two IR break beams as a pure state machine (docs/door-counter.md): no pins,
# no clock. The app feeds it a sample of both beams and the ms since the previous sample;
# tests/firmware/test_fw_door_counter.py feeds it scripted crossings in real MicroPython.
#
# Beam A is on the street side, B on the store side, a few cm apart. A body crossing inwards
# blocks A, then A and B, then only B, then neither:
#
#     00 -> A -> AB -> B -> 00    in      (and the reverse: out)
#
# * Debounce: a beam's level counts only after it held for `debounce_ms` (a swinging bag or a
#   hand flicking through the beam for less is not seen at all). Both beams are delayed alike,
#   so the order of their edges is kept.
# * Direction: the debounced states form a quadrature sequence; each step forwards (00 A AB B)
#   is +1, each step back -1. Back at 00 the net is +4 (in), -4 (out) or 0 (turned back, or a
#   bag that swung into one beam and out again): anybody who stops in the beam, steps back and
#   forth, or lets a bag swing behind them counts once, in the direction they finally left.
# * Two levels changing in one sample (a stalled loop) skip a state: the step is taken in the
#   direction of the previous one, or of the next one if it was the first; a passage that
#   never tells is not counted (`unclear`).
# * Stuck: a beam blocked for `stuck_ms` is out of service (dirt, a box, a misaligned
#   emitter): STUCK is returned once, nothing is counted until it clears (CLEARED, with how
#   long it was blocked) AND both beams are clear, so the count is never silently wrong.
# * Limit (two beams cannot tell): two people closer together than the beams' gap, or side by
#   side, count as one.

IN = "in"
OUT = "out"
STUCK = "stuck"
CLEARED = "cleared"

# quadrature position of a state code (A << 1 | B): 00 -> 0, A -> 1, AB -> 2, B -> 3
_POS = (0, 3, 1, 2)


class Beams:
    def __init__(self, debounce_ms=30, stuck_ms=60000):
        self.debounce_ms = debounce_ms
        self.stuck_ms = stuck_ms
        self.raw = [0, 0]       # last sampled level (1 = blocked)
        self.held = [0, 0]      # ms the raw level has held
        self.level = [0, 0]     # debounced level
        self.blocked = [0, 0]   # ms the debounced level has been 1
        self.stuck = [False, False]
        self.resync = False     # after a stuck beam: count again from 00 only
        self.code = 0           # debounced state A << 1 | B
        self.net = 0            # net quadrature steps of the passage in progress
        self.last = 0           # sign of its last step (0: none yet)
        self.skip = False       # a skipped state waiting for a direction
        self.unclear = 0        # passages that could not be told (never counted)

    @property
    def oos(self):
        """Out of service: a beam is stuck, or has not yet cleared after one was."""
        return self.stuck[0] or self.stuck[1] or self.resync

    def step(self, a, b, dt):
        """One sample of the beams (truthy = blocked), `dt` ms after the previous one. Returns
        None or a list of outcomes: (IN,), (OUT,), (STUCK, beam, ms), (CLEARED, beam, ms);
        beam is 0 (A) or 1 (B)."""
        out = None
        changed = False
        for i in (0, 1):
            r = 1 if (b if i else a) else 0
            if r != self.raw[i]:
                self.raw[i] = r
                self.held[i] = 0
            else:
                self.held[i] += dt
            lvl = self.level[i]
            if lvl != r and self.held[i] >= self.debounce_ms:
                self.level[i] = lvl = r
                changed = True
                if not r:
                    if self.stuck[i]:
                        self.stuck[i] = False
                        out = _add(out, (CLEARED, i, self.blocked[i]))
                    self.blocked[i] = 0
            elif lvl:
                self.blocked[i] += dt
            if lvl and not self.stuck[i] and self.blocked[i] >= self.stuck_ms:
                self.stuck[i] = True
                self.resync = True
                self._forget()
                out = _add(out, (STUCK, i, self.blocked[i]))
        if changed:
            code = self.level[0] << 1 | self.level[1]
            old, self.code = self.code, code
            if self.resync:
                if code == 0 and not (self.stuck[0] or self.stuck[1]):
                    self.resync = False
                    self._forget()
            else:
                r = self._move(old, code)
                if r:
                    out = _add(out, (r,))
        return out

    def _move(self, old, new):
        d = (_POS[new] - _POS[old]) % 4
        if d == 1 or d == 3:
            s = 1 if d == 1 else -1
            if self.skip:
                self.net += 2 * s
                self.skip = False
            self.net += s
            self.last = s
        elif d == 2:
            if self.last:
                self.net += 2 * self.last
            else:
                self.skip = True  # (a second skip before any step: still untold)
        if new:
            return None
        net, skip = self.net, self.skip
        self._forget()
        if skip:
            self.unclear += 1
            return None
        if net >= 4:
            return IN
        if net <= -4:
            return OUT
        return None  # turned back

    def _forget(self):
        self.net = 0
        self.last = 0
        self.skip = False


def _add(out, item):
    if out is None:
        return [item]
    out.append(item)
    return out
