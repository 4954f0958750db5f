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


# A CoAP device with this much free heap after boot interns the update's names now (edge/ota_names
# .py, docs/ota.md): what a download needs over the steady state when its names grow the qstr pool
# (~19 KB on the 64-bit unix port). With less room a device keeps its heap; over MQTT the
# download's names fit the pools a device has (the pad: 478 + 89 of 620).
OTA_ROOM = 24 * 1024


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
    rt = _start(argv)
    import asyncio
    # boot-only code: free it. The config module (3.4 KB on the 64-bit unix port), the
    # runtime's constructor (edge/runtime_boot.py, ~2 KB) and this module but main() (~2 KB)
    import edge
    sys = __import__("sys")
    for m in ("config", "runtime_boot", "boot"):
        edge.__dict__.pop(m, None)
        sys.modules.pop("edge." + m, None)
    g = globals()
    room = OTA_ROOM
    for k in ("APPS", "load_app", "make_hal", "_start", "config", "OTA_ROOM"):
        g.pop(k, None)
    g = None
    gc.collect()
    if rt.cfg.get("transport") == "coap" and gc.mem_free() >= room:
        __import__("edge.ota_names")
        edge.__dict__.pop("ota_names", None)
        sys.modules.pop("edge.ota_names", None)
        gc.collect()
    sys = edge = None
    # gc.threshold counts bytes allocated since the last collection: on a 96 KB heap this sum
    # exceeds the free heap, so collections come only when it is exhausted (a quarter of the
    # free heap measured worse: the CoAP fitting room failed at 100 KB, docs/benchmarks.md);
    # on a large heap (PSRAM boards) it still bounds the garbage, and so the pause
    gc.threshold(gc.mem_free() // 4 + gc.mem_alloc())
    asyncio.run(rt.run())


def _start(argv):
    # config -> transport -> runtime -> app -> HAL; returns the Runtime
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
    return Runtime(cfg, hal, app, mqtt_class=client_class)
