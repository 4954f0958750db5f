# Over-the-air updates: the names of the update's code, interned at boot (docs/ota.md). Imported
# once by edge/boot.py on a CoAP device with room (OTA_ROOM), then dropped with what it loaded.
#
# Loading a module interns its names (qstrs) for good, and MicroPython replaces a full qstr pool
# by one twice its size in one allocation (640 entries, 7,436 B on the 64-bit unix port:
# "allocating 640 bytes" counts entries). On a fragmented heap at the first download that hole
# was not there (`no-heap`); at boot it is. The modules' code is dropped again here.
import sys

import edge

_had = [m for m in ("ota", "ota_offer", "ota_get") if "edge." + m in sys.modules]  # the runtime's
for _n in ("ota", "ota_offer", "ota_get"):
    __import__("edge." + _n)
for _n in ("ota", "ota_offer", "ota_get"):
    if _n not in _had:
        sys.modules.pop("edge." + _n, None)
        edge.__dict__.pop(_n, None)
