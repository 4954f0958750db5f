# Inputs shared by the tube apps (tube_station.py, tube_line.py): debounced digital inputs,
# line photo-eyes and the emergency-stop loop. docs/tube.md, "Firmware".


class Input:
    """A digital input that changes only after `n` equal polls in a row (debounce: with a
    20 ms poll and n=2 a bounce shorter than ~20 ms is ignored)."""

    def __init__(self, pin, n=2):
        self.pin = pin
        self.n = n
        self.v = pin.value()
        self.cand = self.v
        self.cnt = 0

    def poll(self):
        """The new debounced value when it changed on this poll, else None."""
        v = self.pin.value()
        if v == self.v:
            self.cnt = 0
            return None
        if v != self.cand:
            self.cand = v
            self.cnt = 0
        self.cnt += 1
        if self.cnt >= self.n:
            self.v = v
            self.cnt = 0
            return v
        return None


class Eyes:
    """Line photo-eyes (1 = beam blocked): one `eye` event per carrier passing, on the
    debounced leading edge, so a carrier that stops in the beam is still counted once."""

    def __init__(self, rt, hal, names, n):
        self.rt = rt
        self.eyes = [(name, Input(hal.pin_in(name), n)) for name in names]

    def poll(self):
        for name, inp in self.eyes:
            if inp.poll() == 1:
                self.rt.emit("eye", {"eye": name})


def inputs_cfg(hal, cfg):
    """(poll_ms, debounce polls, e-stop Input or None) from an app config. The e-stop is a
    normally-closed loop read with a pull-up: pressed or a cut wire both read 1 (stop)."""
    n = cfg.get("debounce", 2)
    if not isinstance(n, int) or not 1 <= n <= 10:
        raise ValueError("app.debounce must be 1-10 polls")
    poll = cfg.get("poll_ms", 10)
    if not isinstance(poll, int) or not 2 <= poll <= 100:
        raise ValueError("app.poll_ms must be 2-100")
    est = cfg.get("estop", "estop")
    return poll, n, (Input(hal.pin_in(est, "up"), n) if est else None)


def estop_test(est):
    """An app's self_test part (edge/ota_trial.py): a new firmware is not confirmed while the
    e-stop loop reads open (pressed and a cut wire read the same): it cannot show it runs the air."""
    if est and est.pin.value():
        return "e-stop: the loop reads open (pressed, or its wire cut): release it to confirm the update"
    return None


def emit_estop(rt, v):
    rt.emit("estop.pressed" if v else "estop.released", {})


def check_seq(state, key, args):
    """Commands that move things carry a gateway `seq`, increasing per target: one older than
    the last applied arrived late (two commands can overtake each other) and must not act.
    Returns False for a stale command."""
    seq = args.get("seq")
    if seq is None:
        return True
    if not isinstance(seq, int):
        from edge.runtime import Rejected
        raise Rejected("bad-args")
    if seq < state.get(key, -1):
        return False
    state[key] = seq
    return True
