# Door counter: two IR break beams across the entrance, A (street side) and B (store side) a
# few cm apart. docs/door-counter.md is the contract (events, commands, config). The beam
# logic (debounce, direction, stuck beams) is the pure state machine in door_beams.py; this
# module samples the pins, keeps the period's totals and the occupancy, and journals them.
#
# Events (journaled like every event: an outage loses nothing):
# * `footfall` at the end of every period (`period_s`, default 60) that had a crossing or time
#   out of service: {start, period_s, in, out, occupancy, oos_ms}. `start`: unix ms of the
#   period (the gateway's clock), null before the device has had the clock since boot;
# * `beam.stuck` {beam, blocked_ms}: a beam blocked for `stuck_s`: counting stops (out of
#   service) until `beam.cleared` {beam, blocked_ms} and both beams clear;
# * `occupancy.reset` {occupancy, was}: the `reset` command (e.g. at closing time).
# The crossings of the period in progress are in RAM until it ends (at most `period_s`).
import asyncio
import time

from edge.apps.door_beams import CLEARED, IN, OUT, STUCK, Beams
from edge.runtime import Rejected

_BEAM = ("A", "B")
MAX_OCCUPANCY = 100000


class DoorCounter:
    caps = ["beams", "footfall", "status", "reset"]

    def __init__(self, rt, hal, cfg):
        self.rt = rt
        for k, d in (("poll_ms", 5), ("debounce_ms", 30), ("stuck_s", 60), ("period_s", 60)):
            v = cfg.get(k, d)
            if not isinstance(v, int) or v < 1:
                raise ValueError("app.%s must be a positive integer" % k)
        # the receivers' level for a blocked beam (1: the default, 0: active-low receivers)
        blocked = cfg.get("blocked_level", 1)
        if blocked not in (0, 1):
            raise ValueError("app.blocked_level must be 0 or 1")
        self.blocked_level = blocked
        self.a = hal.pin_in(cfg.get("beam_a", "beam_a"))
        self.b = hal.pin_in(cfg.get("beam_b", "beam_b"))
        self.poll_ms = cfg.get("poll_ms", 5)
        self.period_ms = cfg.get("period_s", 60) * 1000
        self.beams = Beams(cfg.get("debounce_ms", 30), cfg.get("stuck_s", 60) * 1000)
        self.occupancy = 0
        self.n_in = 0      # this period
        self.n_out = 0
        self.oos_ms = 0
        self.total_in = 0  # since boot (status)
        self.total_out = 0
        self.start = None  # unix ms of the period in progress (None: no clock yet)
        self.t0 = time.ticks_ms()
        self.commands = {"status": self.cmd_status, "reset": self.cmd_reset}

    def sample(self, dt):
        lvl = self.blocked_level
        r = self.beams.step(self.a.value() == lvl, self.b.value() == lvl, dt)
        if r:
            for o in r:
                self._outcome(o)
        if self.beams.oos:
            self.oos_ms += dt

    def _outcome(self, o):
        what = o[0]
        if what == IN:
            self.n_in += 1
            self.total_in += 1
            if self.occupancy < MAX_OCCUPANCY:
                self.occupancy += 1
        elif what == OUT:
            self.n_out += 1
            self.total_out += 1
            if self.occupancy > 0:  # never negative: someone who came in before a reset
                self.occupancy -= 1
        elif what == STUCK:
            self.rt.emit("beam.stuck", {"beam": _BEAM[o[1]], "blocked_ms": o[2]})
        elif what == CLEARED:
            self.rt.emit("beam.cleared", {"beam": _BEAM[o[1]], "blocked_ms": o[2]})

    def period(self, now):
        """End the period when its time is up: by the gateway's clock, else by uptime."""
        wall = self.rt.now()
        if wall is None:
            if time.ticks_diff(now, self.t0) < self.period_ms:
                return
            self.t0 = now
            self.flush(None)
            return
        start = wall - wall % self.period_ms
        if self.start is None:
            self.start = start  # counts made before the clock came go to this period
        elif start != self.start:
            self.flush(self.start)
            self.start = start

    def flush(self, start):
        if self.n_in or self.n_out or self.oos_ms:
            self.rt.emit("footfall", {"start": start, "period_s": self.period_ms // 1000,
                                      "in": self.n_in, "out": self.n_out,
                                      "occupancy": self.occupancy, "oos_ms": self.oos_ms})
        self.n_in = self.n_out = self.oos_ms = 0

    async def run(self):
        last = time.ticks_ms()
        while True:
            self.rt.heartbeat()
            now = time.ticks_ms()
            dt = time.ticks_diff(now, last)
            last = now
            self.sample(dt)
            self.period(now)
            await asyncio.sleep_ms(self.poll_ms)

    def self_test(self):
        # a new firmware is confirmed only once the beams read clear (edge/ota_trial.py): both
        # read blocked for good when app.blocked_level does not match the receivers, or their
        # pins are wrong; a person between the beams walks on (tried every 500 ms)
        lvl = self.blocked_level
        if self.a.value() == lvl and self.b.value() == lvl:
            return "beams: both read blocked (something in the doorway, or app.blocked_level wrong for the receivers)"
        return None

    # --- commands ----------------------------------------------------------------------------
    async def cmd_status(self, args):
        if args:
            raise Rejected("bad-args")
        b = self.beams
        return {"occupancy": self.occupancy, "in": self.total_in, "out": self.total_out,
                "period": {"in": self.n_in, "out": self.n_out, "oos_ms": self.oos_ms},
                "beams": {"A": b.level[0], "B": b.level[1]}, "stuck": [_BEAM[i] for i in (0, 1) if b.stuck[i]],
                "out_of_service": b.oos, "unclear": b.unclear}

    async def cmd_reset(self, args):
        """Set the occupancy estimate (default 0): at closing time, or after a head count."""
        n = args.get("occupancy", 0)
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_OCCUPANCY:
            raise Rejected("bad-args")
        was = self.occupancy
        self.occupancy = n
        self.rt.emit("occupancy.reset", {"occupancy": n, "was": was})
        return {"occupancy": n, "was": was}
