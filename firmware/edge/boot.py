# Start a device: config -> HAL -> app -> runtime. main.py calls main().
import gc

from edge import config

APPS = {
    "sample-pad": ("edge.apps.pad", "SamplePad"),
    "locker-bank": ("edge.apps.locker", "LockerBank"),
    "fitting-room": ("edge.apps.fitting_room", "FittingRoom"),
    "tube-station": ("edge.apps.tube_station", "TubeStation"),
    "tube-line": ("edge.apps.tube_line", "TubeLine"),
    "door-counter": ("edge.apps.door_counter", "DoorCounter"),
    "rack-display": ("edge.apps.rack_display", "RackDisplay"),
}


# Free heap after boot from which the update's names are interned at boot (_ota_names): what a
# download needs over the steady state when its names grow the qstr pool (~19 KB on the 64-bit
# unix port over CoAP: the pool ~7 KB, the OTA code ~10.5 KB, docs/ota.md). A device with less
# room keeps its heap: it never pays for an update it may never get.
OTA_ROOM = 24 * 1024


def _ota_names():
    """Intern the names of the update's code (edge/ota*.py) now, while the heap is in one piece.
    Loading a module interns its names for good, and a full qstr pool is replaced by one twice
    its size in one allocation (640 entries, ~7 KB on the 64-bit unix port: "allocating 640
    bytes" counts entries), which a fragmented heap at the first download did not have. The
    modules themselves are dropped again (their code is loaded when an update comes)."""
    import sys
    import edge
    got = []
    for n in ("ota", "ota_offer", "ota_get"):
        if "edge." + n not in sys.modules:  # edge.ota stays if the runtime has it (an update ran)
            __import__("edge." + n)
            got.append(n)
    for n in got:
        sys.modules.pop("edge." + n, None)
        edge.__dict__.pop(n, None)


def load_app(kind):
    mod_name, cls_name = APPS[kind]
    mod = __import__(mod_name, None, None, [cls_name])
    return getattr(mod, cls_name)


def make_hal(cfg):
    if cfg.get("board") == "sim":
        from edge.hal_sim import SimHal
        return SimHal(cfg)
    from edge.hal_machine import MachineHal
    return MachineHal(cfg)


def main(argv):
    global config  # dropped once the runtime is built (below)
    path = argv[1] if len(argv) > 1 else "config.json"
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        print("config error:", e)
        raise SystemExit(2)
    if cfg["kind"] not in APPS:
        print("config error: no app for kind", cfg["kind"])
        raise SystemExit(2)
    # Loading bytecode leaves garbage between the long-lived module objects: collecting after
    # each step keeps the heap unfragmented (the difference between fitting in 96 KB or not).
    gc.collect()
    import asyncio
    if cfg["transport"] == "coap":  # docs/protocol.md "CoAP mapping"
        from edge.coap import CoapTransport as client_class  # (largest module first)
    else:
        from edge.mqtt import MQTTClient as client_class
        if cfg["mqtt"].get("tls"):  # its SSL context now, while the heap has 3 KB in one piece
            from edge.tls import context
            context(cfg["mqtt"]["tls"])
            context = None
    gc.collect()
    from edge.runtime import Runtime
    gc.collect()
    app = load_app(cfg["kind"])
    gc.collect()
    hal = make_hal(cfg)
    gc.collect()
    rt = Runtime(cfg, hal, app, mqtt_class=client_class)
    # the config module is only needed to boot: free it (3.4 KB on the 64-bit unix port)
    config = None
    import edge
    edge.__dict__.pop("config", None)
    __import__("sys").modules.pop("edge.config", None)
    gc.collect()
    if gc.mem_free() >= OTA_ROOM:
        _ota_names()
        gc.collect()
    # collect early rather than when the heap is exhausted: fewer holes, shorter pauses
    gc.threshold(gc.mem_free() // 4 + gc.mem_alloc())
    asyncio.run(rt.run())
