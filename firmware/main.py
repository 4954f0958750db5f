# Board entry point (also: `micropython firmware/main.py config.json` on the unix port).
# It picks the firmware set before anything of `edge` is imported (docs/ota.md), and is itself
# never replaced over the air (an update carries edge/ only). ota/state.json, replaced whole
# by a rename (the switch is that one rename):
#   cur   "a" / "b": the confirmed set ota/<cur>/edge; null: the firmware in /edge (or frozen)
#   try   a verified set on trial: booted at most TRIES times until the runtime confirms it
#   n     boots of `try` so far; back: the set given up on (the runtime reports it)
import os
import sys

TRIES = 3


def _slot():
    import json
    try:
        with open("ota/state.json") as f:
            st = json.load(f)
    except (OSError, ValueError):
        try:  # FAT: a cut between remove and rename leaves only the new state in .tmp
            with open("ota/state.json.tmp") as f:
                st = json.load(f)
        except (OSError, ValueError):
            return None, False
    t = st.get("try")
    if t:
        st["n"] = st.get("n", 0) + 1  # counted before the trial runs: a crash counts
        if st["n"] > TRIES:  # no confirmation after TRIES boots: back to `cur`, by itself
            st["back"] = t
            st["try"] = None
        with open("ota/state.json.tmp", "w") as f:
            json.dump(st, f)
        try:
            os.rename("ota/state.json.tmp", "ota/state.json")
        except OSError:  # FAT refuses to rename over a file
            os.remove("ota/state.json")
            os.rename("ota/state.json.tmp", "ota/state.json")
        if st["try"]:
            return "ota/" + t, True
    return ("ota/" + st["cur"] if st.get("cur") else None), False


slot, trial = _slot()
if slot:
    sys.path.insert(0, slot)
try:
    from edge.boot import main
    main(getattr(sys, "argv", None) or [])
except Exception as e:  # a crash on trial: reboot (a board would sit in the REPL for ever)
    if not trial:
        raise
    sys.print_exception(e)
    import machine
    if not hasattr(machine, "reset"):  # the unix port: exit; the sim restarts it as a reset
        raise SystemExit(4)
    machine.reset()
