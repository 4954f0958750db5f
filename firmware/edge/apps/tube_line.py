# Tube line controller (`kind: tube-line`): the diverters of a line and the photo-eyes along
# it, on one board in the line's cabinet (a real store line has a few diverters close
# together; the eyes are cabled to it). docs/tube.md ("Firmware") is the contract.
#
# A diverter is a rotating switch: a motor (`<id>.run` on/off, `<id>.dir` 1 = towards the
# next position in config order, 0 = back) and one limit switch per position
# (`<id>.<position>`, 1 = at that position). `set_diverter` runs the motor until the target's
# limit switch closes (debounced), then stops it and reports `diverter.position`; no switch
# within `travel_ms` x steps + 1 s -> motor off, `diverter.fault` (stuck), command failed.
# A position switch closing with no command running (moved by hand) is reported too.
# The e-stop stops every motor and refuses moves until released.
import asyncio
import time

from edge import fsutil
from edge.apps.tube_io import Eyes, Input, check_seq, emit_estop, estop_test, inputs_cfg
from edge.runtime import Failed, Rejected

# fields of a diverter record
_ID = 0
_POS = 1  # position names, in rotation order
_RUN = 2
_DIR = 3
_LIM = 4  # Input per position
_AT = 5  # index of the closed limit switch, or None while between positions
_LAST = 6  # last index seen (where the motor starts from)
_TGT = 7  # target index while moving, else None
_T0 = 8
_TMO = 9
_RES = 10  # outcome of the last move: None while moving, "ok", "timeout", "estop", "superseded"
_TRAVEL = 11


class TubeLine:
    caps = ["diverter", "eye", "status"]

    def __init__(self, rt, hal, cfg):
        self.rt = rt
        self.poll_ms, n, self.estop = inputs_cfg(hal, cfg)
        self.divs = []
        for i, d in enumerate(cfg.get("diverters") or []):
            pos = d.get("positions") if isinstance(d, dict) else None
            did = d.get("id") if isinstance(d, dict) else None
            travel = d.get("travel_ms", 1500) if isinstance(d, dict) else 0
            if not isinstance(did, str) or not isinstance(pos, list) or len(pos) < 2 or \
                    not isinstance(travel, int) or travel <= 0:
                raise ValueError("app.diverters[%d]: needs id, positions (2 or more, in rotation "
                                 "order) and travel_ms > 0" % i)
            lims = [Input(hal.pin_in("%s.%s" % (did, p)), n) for p in pos]
            at = None
            for k in range(len(lims)):
                if lims[k].v:
                    at = k
            self.divs.append([did, pos, hal.pin_out(did + ".run", 0), hal.pin_out(did + ".dir", 0),
                              lims, at, at or 0, None, 0, 0, None, travel])
        if not self.divs and not cfg.get("eyes"):
            raise ValueError("app: a tube-line needs diverters and/or eyes")
        self.eyes = Eyes(rt, hal, cfg.get("eyes") or [], n)
        rcfg = getattr(rt, "cfg", None) or {}
        data = rcfg.get("data_dir", "data")
        fsutil.makedirs(data)
        self.path = data + "/tube-line.json"
        self.seq = fsutil.load_json(self.path, None) or {}
        self.commands = {"set_diverter": self.cmd_set_diverter, "status": self.cmd_status}

    def _find(self, did):
        for d in self.divs:
            if d[_ID] == did:
                return d
        raise Rejected("no-diverter")

    def _report(self, d):
        self.rt.emit("diverter.position", {"diverter": d[_ID], "position": d[_POS][d[_AT]]})

    def _stop(self, d, res):
        d[_RUN].off()
        if d[_TGT] is not None:
            d[_TGT] = None
            d[_RES] = res
            if res not in ("ok", "superseded"):  # a newer command took over: not a fault
                self.rt.emit("diverter.fault", {"diverter": d[_ID], "reason": res})

    # --- commands ------------------------------------------------------------------------------
    async def cmd_set_diverter(self, args):
        d = self._find(args.get("diverter"))
        p = args.get("position")
        if p not in d[_POS]:
            raise Rejected("no-position")
        if not check_seq(self.seq, d[_ID], args):
            return {"stale": True}
        fsutil.save_json(self.path, self.seq)
        if self.estop and self.estop.v:
            raise Rejected("estop")
        k = d[_POS].index(p)
        if d[_TGT] is not None:
            self._stop(d, "superseded")
        if d[_AT] == k:  # already there: confirm at once
            self._report(d)
            return {"position": p, "moved": False}
        d[_DIR].value(1 if k > d[_LAST] else 0)
        d[_TGT] = k
        d[_RES] = None
        d[_T0] = time.ticks_ms()
        d[_TMO] = d[_TRAVEL] * max(1, abs(k - d[_LAST])) + 1000
        d[_RUN].on()
        while d[_RES] is None:
            await asyncio.sleep_ms(self.poll_ms)
        if d[_RES] != "ok" or d[_AT] != k:
            raise Failed(d[_RES] if d[_RES] != "ok" else "superseded", {"diverter": d[_ID]})
        return {"position": p, "moved": True}

    async def cmd_status(self, args):
        out = {}
        for d in self.divs:
            out[d[_ID]] = [d[_POS][d[_AT]] if d[_AT] is not None else None, d[_RUN].value()]
        return {"diverters": out, "estop": self.estop.v if self.estop else 0}

    # --- inputs --------------------------------------------------------------------------------
    def poll_once(self):
        if self.estop:
            v = self.estop.poll()
            if v is not None:
                if v:
                    for d in self.divs:
                        self._stop(d, "estop")
                emit_estop(self.rt, v)
        now = time.ticks_ms()
        for d in self.divs:
            lims = d[_LIM]
            for k in range(len(lims)):
                v = lims[k].poll()
                if v == 1:
                    d[_AT] = d[_LAST] = k
                    if d[_TGT] == k:
                        self._stop(d, "ok")
                        self._report(d)
                    elif d[_TGT] is None:
                        self._report(d)  # moved without a command: the gateway decides
                elif v == 0 and d[_AT] == k:
                    d[_AT] = None
            if d[_TGT] is not None and time.ticks_diff(now, d[_T0]) > d[_TMO]:
                self._stop(d, "timeout")
        self.eyes.poll()

    def self_test(self):
        # a new firmware is confirmed only if each diverter shows one position (edge/ota_trial.py):
        # none closed is a switch harness unplugged (a diverter rests at a position), two a short
        # or the board file's pins wrong; and with the e-stop loop closed
        for d in self.divs:
            k = 0
            for lim in d[_LIM]:
                k += lim.pin.value()
            if k != 1:
                return "diverter %s: %d position switches closed, 1 expected (check its wiring)" % (d[_ID], k)
        return estop_test(self.estop)

    async def run(self):
        for d in self.divs:
            if d[_AT] is not None:
                self._report(d)
        if self.estop and self.estop.v:
            emit_estop(self.rt, 1)
        while True:
            self.rt.heartbeat()
            self.poll_once()
            await asyncio.sleep_ms(self.poll_ms)
