# Tube station (`kind: tube-station`): one send/receive station of a pneumatic tube line.
# docs/tube.md ("Firmware") is the contract: pins, commands, events.
#
# Hardware: door reed (`door`, 1 = open), send-chamber photo-eye (`chamber`, 1 = carrier
# loaded), receive-bin photo-eye (`bin`, 1 = carrier in the bin), send button (`send`),
# e-stop loop (`estop`), the station's air relays (`air` on/off, `air_dir` 1 = blow /
# 0 = suck: the blower at the stockroom, the air gate at a floor station), the send gate
# (`gate`, 1 = release the carrier from the chamber into the tube), a display on a UART, and
# optionally line photo-eyes cabled to this board (`eyes`).
#
# Enforced here, whatever the gateway says:
# * no air where this station's open door is: at a destination (the bin is the tube's end),
#   or at an origin whose gate is open or about to open (the carrier still in the chamber).
#   Such an `air on` is refused and a door opening cuts the air at once (`air.cut`). After
#   the carrier has left, the shut gate seals the chamber from the tube: staff may open the
#   door to load the next carrier while the air still carries the previous one;
# * the e-stop cuts the air and refuses it until released;
# * a send press with no carrier in the chamber (or no dispatch shown) is refused;
# * the gate releases the carrier only for the air of the dispatch it was loaded for: air
#   still on for the previous carrier never takes the next one along;
# * air is off at boot; an `air` command older than the last applied one is ignored.
import asyncio

from edge import fsutil
from edge.apps.tube_io import Eyes, Input, check_seq, emit_estop, estop_test, inputs_cfg
from edge.runtime import Rejected

IDLE = "Tube station ready"


class TubeStation:
    caps = ["door", "carrier", "send", "air", "display", "load", "status"]

    def __init__(self, rt, hal, cfg):
        self.rt = rt
        self.station = cfg.get("station")
        if not isinstance(self.station, str) or not self.station:
            raise ValueError("app.station: the station id in the tube network, e.g. \"stockroom\"")
        self.poll_ms, n, self.estop = inputs_cfg(hal, cfg)
        self.air = hal.pin_out("air", 0)  # off from the first instant
        self.air_dir = hal.pin_out("air_dir", 0)
        self.gate = hal.pin_out("gate", 0)
        self.door = Input(hal.pin_in("door", "up"), n)  # reed to ground: 1 = open (or cut wire)
        self.chamber = Input(hal.pin_in("chamber"), n)
        self.bin = Input(hal.pin_in("bin"), n)
        self.btn = Input(hal.pin_in("send"), n)
        self.eyes = Eyes(rt, hal, cfg.get("eyes") or [], n)
        self.disp = hal.uart(cfg.get("display", "display"))
        rcfg = getattr(rt, "cfg", None) or {}
        data = rcfg.get("data_dir", "data")
        fsutil.makedirs(data)
        self.path = data + "/tube.json"
        st = fsutil.load_json(self.path, None) or {}
        self.job = st.get("job")  # [job, item, destination] shown for loading, or None
        self.seq = st.get("seq") or {}
        self.air_job = None  # [job, role] while the air is on
        self.pressed = None  # job whose send was pressed (its carrier waits for the line)
        self.commands = {"load": self.cmd_load, "air": self.cmd_air, "status": self.cmd_status}

    def _save(self):
        fsutil.save_json(self.path, {"job": self.job, "seq": self.seq})

    def _show(self, text):
        try:
            self.disp.write(text.encode() + b"\n")
        except OSError:
            pass  # a dead display must not stop the station

    def _prompt(self):
        """What the display says when nothing else is happening: the carrier to load, if any
        (an arrival in the bin must not make staff forget it)."""
        if not self.job:
            self._show(IDLE)
        elif self.pressed == self.job[0] and self.chamber.v:
            self._show("Sending %s to %s" % (self.job[1], self.job[2]))
        else:
            self._show("Load %s for %s, then press SEND" % (self.job[1], self.job[2]))

    def _emit(self, etype, **body):
        body["station"] = self.station
        self.rt.emit(etype, body)

    def _air_off(self, reason):
        self.gate.off()
        if self.air.value():
            self.air.off()
            job = self.air_job[0] if self.air_job else None
            self._emit("air.cut", job=job, reason=reason)
        self.air_job = None

    # --- commands ------------------------------------------------------------------------------
    async def cmd_load(self, args):
        job, item, to = args.get("job"), args.get("item"), args.get("to")
        if not isinstance(job, str) or not isinstance(item, str) or not isinstance(to, str):
            raise Rejected("bad-args")
        self.job = [job, item, to]
        self._save()
        self._prompt()
        return {"job": job, "loaded": self.chamber.v}

    async def cmd_air(self, args):
        on = args.get("on")
        job = args.get("job")
        if not isinstance(on, bool) or not isinstance(job, str):
            raise Rejected("bad-args")
        if not check_seq(self.seq, "air", args):
            return {"stale": True, "air": self.air.value()}
        self._save()
        if not on:
            self.air.off()
            self.gate.off()
            self.air_job = None
            return {"air": 0}
        d = args.get("dir")
        role = args.get("role")
        if d not in ("blow", "suck") or role not in ("origin", "destination"):
            raise Rejected("bad-args")
        if self.estop and self.estop.v:
            raise Rejected("estop")
        release = role == "origin" and self.chamber.v and self.job and self.job[0] == job
        if self.door.v and (release or role == "destination"):
            raise Rejected("door-open")
        self.air_dir.value(1 if d == "blow" else 0)
        self.air_job = [job, role]
        self.air.on()
        if release:
            self.gate.on()  # release this dispatch's carrier into the air stream
        return {"air": 1, "gate": self.gate.value()}

    async def cmd_status(self, args):
        return {"station": self.station, "door": self.door.v, "chamber": self.chamber.v,
                "bin": self.bin.v, "air": self.air.value(), "gate": self.gate.value(),
                "estop": self.estop.v if self.estop else 0, "job": self.job[0] if self.job else None}

    # --- inputs --------------------------------------------------------------------------------
    def _send_pressed(self):
        if not self.chamber.v:
            self._emit("send.refused", reason="no-carrier", job=self.job[0] if self.job else None)
            self._show("No carrier in the send chamber - load it, then press SEND")
        elif not self.job:
            self._emit("send.refused", reason="no-dispatch", job=None)
            self._show("Nothing to send - wait for a dispatch on this display")
        else:
            self.pressed = self.job[0]
            self._emit("send.pressed", job=self.job[0])
            self._prompt()

    def poll_once(self):
        if self.estop:
            v = self.estop.poll()
            if v is not None:
                if v:
                    self._air_off("estop")
                emit_estop(self.rt, v)
        v = self.door.poll()
        if v is not None:
            if v and self.air_job and (self.gate.value() or self.air_job[1] == "destination"):
                self._air_off("door-open")  # safety first, then report
            self._emit("door.opened" if v else "door.closed")
        v = self.chamber.poll()
        if v is not None:
            if v:
                self._emit("carrier.loaded")
            elif self.gate.value():
                self.gate.off()
                self._emit("carrier.sent", job=self.air_job[0] if self.air_job else None)
                if self.job and self.air_job and self.job[0] == self.air_job[0]:
                    self.job = None
                    self._save()
                self._prompt()
            else:
                self._emit("carrier.unloaded")
        v = self.bin.poll()
        if v is not None:
            if v:
                self._emit("carrier.arrived")
                self._show("Carrier arrived - please take it out")
            else:
                self._emit("carrier.removed")
                self._prompt()
        if self.btn.poll() == 1:
            self._send_pressed()
        self.eyes.poll()

    def busy(self):
        # an update waits while the air runs (a carrier in transit; runtime ota hook, docs/ota.md)
        return bool(self.air.value())

    def self_test(self):
        # a new firmware is confirmed only with the e-stop loop closed (edge/ota_trial.py)
        return estop_test(self.estop)

    async def run(self):
        # what the gateway cannot know after a power cut: the world as it is now
        self._emit("station.boot", door=self.door.v, chamber=self.chamber.v, bin=self.bin.v,
                   estop=self.estop.v if self.estop else 0)
        self._prompt()
        while True:
            self.rt.heartbeat()
            self.poll_once()
            await asyncio.sleep_ms(self.poll_ms)
