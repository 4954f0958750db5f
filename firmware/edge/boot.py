# Start a device: config -> HAL -> app -> runtime. main.py calls main().
import asyncio

from edge import config

APPS = {
    "sample-pad": ("edge.apps.pad", "SamplePad"),
}


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
    path = argv[1] if len(argv) > 1 else "config.json"
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        print("config error:", e)
        raise SystemExit(2)
    if cfg["kind"] not in APPS:
        print("config error: no app for kind", cfg["kind"])
        raise SystemExit(2)
    from edge.runtime import Runtime
    rt = Runtime(cfg, make_hal(cfg), load_app(cfg["kind"]))
    asyncio.run(rt.run())
