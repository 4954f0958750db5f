"""Read a board's console over USB serial, without resetting it.

    python -m tools.console --port /dev/ttyUSB0 [--log board.log] [--reset rts] [--for 30]

Prints each line with the time since start. Resets are marked: ``== reset POWERON_RESET
(rig: hard reset)`` when this tool caused it, ``!! UNEXPECTED RESET TG1WDT_SYS_RESET`` when
the board did (watchdog, brown-out, crash, a USB-UART that pulses EN when the port opens).
``--until REGEX`` exits 0 at the first matching line (1 if ``--for`` runs out first), so
scripts can wait for "online session". Ctrl-C quits.
"""
from __future__ import annotations

import argparse
import re
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.console", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", required=True)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--log", help="append everything the board sends to this file")
    ap.add_argument("--reset", choices=("none", "rts", "soft"), default="none",
                    help="reset the board after opening (default: leave it running)")
    ap.add_argument("--for", dest="duration", type=float, default=0, help="stop after this many seconds")
    ap.add_argument("--until", help="stop (exit 0) at the first line matching this regex")
    args = ap.parse_args(argv)

    from hil.pi.board import BoardError, SerialBoard

    board = SerialBoard(args.port, args.baud, name="board", log_path=args.log, reset="rts")
    until = re.compile(args.until) if args.until else None
    try:
        board.open()
    except BoardError as e:
        print(f"console: {e}", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    shown = 0
    boots_shown = 0
    try:
        if args.reset == "rts":
            board.hard_reset("rts")
        elif args.reset == "soft":
            board.soft_reset()
        while True:
            with board._cond:
                board._cond.wait(0.1)
                lines = board.lines[shown:]
                boots = board.boots[boots_shown:]
            for b in boots:
                mark = "==" if b.expected else "!!"
                what = "reset" if b.expected else "UNEXPECTED RESET"
                print(f"{b.t:9.3f}  {mark} {what} {b.cause}", flush=True)
            boots_shown += len(boots)
            for line in lines:
                print(f"{time.monotonic() - t0:9.3f}  {line}", flush=True)
                if until and until.search(line):
                    return 0
            shown += len(lines)
            if args.duration and time.monotonic() - t0 >= args.duration:
                return 1 if until else 0
    except KeyboardInterrupt:
        return 0
    finally:
        board.close()


if __name__ == "__main__":
    sys.exit(main())
