# The Runtime's constructor (edge/runtime.py): boot-only code, a module of its own so that
# edge/boot.py can drop it once the runtime is built, as it drops edge.config (its bytecode
# would otherwise stay in the heap for good: ~2 KB on the 64-bit unix port). Importing it
# again (a second Runtime in one process: tests) loads it again. The clock fields are set by
# Runtime.__init__ itself, with edge.runtime's `time` (tests replace it there).
import asyncio

from edge import fsutil
from edge.cmdlog import CommandLog
from edge.journal import Journal
from edge.runtime import FW_VERSION


def init(rt, cfg, hal, app_class, mqtt_class=None):
    rt.cfg = cfg
    rt.hal = hal
    rt.dev = cfg["device_id"]
    rt.prefix = "pe/1/" + rt.dev + "/"
    data = cfg["data_dir"]
    fsutil.makedirs(data)
    rt.state_path = data + "/state.json"
    rt.state = fsutil.load_json(rt.state_path, {"boot": 0, "session": 0})
    rt.state["boot"] += 1
    fsutil.save_json(rt.state_path, rt.state)
    rt.journal = Journal(data + "/journal", cfg["journal_max"])
    rt.cmds = CommandLog(data + "/cmds.json")
    for cid in rt.cmds.interrupted():  # power lost mid-actuation: report, never redo
        rt.cmds.finish(cid, "failed", "interrupted")
    rt.reset_cause = hal.reset_cause()
    rt._clock = None  # (unix_ms, _mono()) from the last gateway ack
    rt._wake = asyncio.Event()
    rt._sent = rt.journal.first - 1  # highest seq published on this connection
    rt._sent_at = 0
    rt._running = {}
    rt._ncmd = 0  # command tasks alive (their messages, replies and cmdlog work in RAM)
    rt._birth_due = False
    rt.gateway_online = None
    rt.stats = {"events": 0, "cmds": 0, "bad_msgs": 0}
    rt.fw_version = FW_VERSION
    rt.ota = None
    if fsutil.exists("ota"):  # an update was ever offered here (docs/ota.md): else no heap for it
        rt._load_ota()
    rt.app = app_class(rt, hal, cfg["app"])
    if cfg.get("conformance"):  # test hook only (docs/protocol.md "Conformance")
        from edge.conformance import install
        install(rt)
    tls = cfg["mqtt"].get("tls")
    if tls and cfg.get("transport", "mqtt") == "mqtt":  # TLS only loads where configured (heap)
        from edge.tls import TLSClient
        mqtt_class = lambda *a, **k: TLSClient(*a, tls=tls, **k)  # noqa: E731
    if mqtt_class is None:
        from edge.mqtt import MQTTClient as mqtt_class
    mq = cfg["mqtt"]
    rt.client = mqtt_class(
        rt.dev, mq["host"], mq.get("port", 1883), keepalive=mq.get("keepalive", 30),
        user=mq.get("user"), password=mq.get("password"),
        will=rt._will(rt.state["session"] + 1), on_message=rt._on_message,
        on_connect=rt._on_connect, on_down=rt._on_down)
    rt.client.full = rt._full  # the CoAP poller asks before fetching the next message
