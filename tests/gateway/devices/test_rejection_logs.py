"""Logging of rejected device messages: aggregated per batch and reason, rate-limited per
reason (`gateway.logs.RateLimitedLog`, shared with the CoAP edge's refusals), while the
counters at `GET /stats` count every message."""
import asyncio
import json
import logging
import re

from gateway.devices.ingest import IngestWorker
from gateway.logs import RateLimitedLog
from gateway.storage.db import Database
from gateway.storage.store import Store
from tests.support.e2e import until
from tests.support.envelopes import reply

LINE = re.compile(r"reason=(\S+) count=(\d+) suppressed=(\d+)")


def counts(lines: list[str]) -> dict[str, int]:
    """Messages per reason that the log lines account for (logged + suppressed)."""
    out: dict[str, int] = {}
    for line in lines:
        m = LINE.search(line)
        assert m, line
        out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2)) + int(m.group(3))
    return out


def test_rate_limited_log_holds_back_and_reports_the_count(caplog):
    now = [100.0]
    rl = RateLimitedLog(logging.getLogger("t.rl"), "things refused", every_s=5.0,
                        clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="t.rl")
    assert rl("bad", "device=%s", "a", count=2) is True
    for _ in range(7):
        assert rl("bad", "device=%s", "b") is False
    assert rl("worse", "device=%s", "c") is True  # another key has its own budget
    assert rl.flush() == 0                         # nothing held long enough yet
    now[0] += 5.0
    assert rl.flush() == 1                         # the held 7 are reported, once
    assert rl.flush() == 0
    assert rl("bad", "device=%s", "d") is False    # the flush line counts as this key's line
    now[0] += 5.0
    assert rl("bad", "device=%s", "e") is True
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "things refused reason=bad count=2 suppressed=0 device=a"
    assert lines[1] == "things refused reason=worse count=1 suppressed=0 device=c"
    assert lines[2] == "things refused reason=bad count=0 suppressed=7 (held back, at most " \
                       "one line per reason every 5 s)"
    assert lines[3] == "things refused reason=bad count=1 suppressed=1 device=e"
    assert counts(lines) == {"bad": 2 + 7 + 1 + 1, "worse": 1}
    assert rl("worse", "x", count=3) is True
    assert rl("worse", "y", count=2) is False
    assert rl.flush() == 0 and rl.holding
    assert rl.flush(force=True) == 1 and not rl.holding  # at shutdown: whatever is held, now
    assert counts([r.getMessage() for r in caplog.records])["worse"] == 1 + 3 + 2


def test_200_garbage_messages_give_a_few_log_lines_that_carry_every_count(tmp_path, caplog):
    """Issue 16 item 6: 200 garbage messages gave 200 log lines (and events from a device
    without a birth none at all). Now: a bounded number of lines, the counts per reason in
    them, and every message still counted at /stats."""
    garbage = {
        "malformed": ("pe/1/pad-1/evt", b"{not json"),
        "bad-field": ("pe/1/pad-1/evt", json.dumps({"v": 1, "dev": "pad-1", "type": "x",
                                                    "seq": "one", "t": None,
                                                    "body": {}}).encode()),
        "unknown-device": lambda i: (f"pe/1/ghost-e{i}/evt", json.dumps(  # 45 made-up ids
            {"v": 1, "dev": f"ghost-e{i}", "type": "x", "seq": 1, "t": None,
             "body": {}}).encode()),
        "bad-device-id": ("pe/1/gateway/evt", b"{}"),
    }
    messages = [g(i) if callable(g) else g for i in range(45)
                for g in garbage.values()]  # 180, interleaved
    messages += [reply("c-1", "done", dev="ghost-2")] * 20  # replies from no birth: 20 more
    assert len(messages) == 200

    async def publish(topic, payload, *, qos=1, retain=False):
        pass

    caplog.set_level(logging.INFO, logger="gateway.ingest")
    caplog.set_level(logging.INFO, logger="gateway.db")

    async def main():
        async with Database(tmp_path / "gw.db") as db:
            w = IngestWorker(db, publish, batch_max=16)  # 13 batches at least
            # however slow the machine: one interval
            w.rejection_log.clock = w.rebirth_log.clock = lambda: 0.0
            task = asyncio.create_task(w.run())
            try:
                for topic, payload in messages:
                    await w.put(topic, payload)
                await until(lambda: w.queue.empty(), "the queue to drain")
                assert await w.drained(30)
                assert w.batches >= 13
            finally:
                task.cancel()  # shutdown reports what was held back
                await asyncio.gather(task, return_exceptions=True)
            return await db.read(Store.rejections)

    stats = asyncio.run(main())
    want = {"malformed": 45, "bad-field": 45, "unknown-device": 65, "bad-device-id": 45}
    assert stats == want  # the counters count every message
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) <= 2 * len(want), lines  # first sight + the held-back count, per reason
    assert counts(lines) == want, lines
    first = {LINE.search(x).group(1): x for x in reversed(lines)}
    assert re.search(r"device=ghost-(e\d+ channel=evt|2 channel=reply)", first["unknown-device"])
    assert "topic=pe/1/gateway/evt" in first["bad-device-id"]
    assert "detail=" in first["malformed"]
    # each unknown device is asked for a rebirth; the log says so in a line or two, not 46
    asked = [r.getMessage() for r in caplog.records if "rebirth" in r.getMessage()
             and "rejected" not in r.getMessage()]
    assert 1 <= len(asked) <= 2, asked
    assert sum(int(n) for line in asked for n in LINE.search(line).group(2, 3)) == 46
