# Board entry point (also: `micropython firmware/main.py config.json` on the unix port).
import sys

from edge.boot import main

main(getattr(sys, "argv", None) or [])
