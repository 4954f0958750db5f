"""Log setup: `text` (the `key=value` lines the gateway always wrote) or `json` (one JSON
object per line for a log shipper: `ts`, `level`, `logger`, `msg`, every `key=value` pair of
the message as a field of its own, `exc` with the traceback); `RateLimitedLog` for lines a
flood of bad input would otherwise repeat."""
from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
# a value is one token of plain characters; `error=MqttError('[Errno 111] ...')` is left to `msg`
_PAIR = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*)=([\w.:/@+,%-]+)(?=\s|$)")
RESERVED = ("ts", "level", "logger", "msg", "exc")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
                          .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "msg": msg}
        for key, value in _PAIR.findall(msg):
            if key not in RESERVED:
                out.setdefault(key, int(value) if value.isdigit() else value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class RateLimitedLog:
    """One log line per key (a rejection reason, a refusal reason) at most every `every_s`.

    A flood of bad input must not flood the log, and the log must still say how much came:
    what is held back is counted per key and reported with that key's next line
    (`suppressed=N`), or by `flush()` once `every_s` has passed since the key's last line (the
    owner calls it from a loop or a timer, and with `force=True` at shutdown). Every line reads
    `<what> reason=<key> count=<n> suppressed=<m> <fields>`: `count` is what this line is
    about (e.g. the messages of one batch), `suppressed` what earlier calls held back, so the
    lines of a key add up to every occurrence. The counters (`GET /stats`) count them anyway.
    Keys come from code (a fixed set of reasons), never from input: the tables stay small.

    Used by the ingest (gateway/devices/ingest.py, rejected device messages) and the CoAP edge
    (gateway/transport/coap_auth.py, refused requests)."""

    def __init__(self, logger: logging.Logger, what: str, every_s: float = 5.0, *,
                 level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.every_s = every_s
        self.level = level
        self.clock = clock
        self._last: dict[str, float] = {}  # key -> when its last line was written
        self._held: dict[str, int] = {}    # key -> occurrences held back since then

    def __call__(self, key: str, fields: str = "", *args: object, count: int = 1) -> bool:
        """Log `count` occurrences of `key` (`fields % args` says more), or hold them back.
        True if a line was written."""
        now = self.clock()
        if now - self._last.get(key, -math.inf) < self.every_s:
            self._held[key] = self._held.get(key, 0) + count
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        self.logger.log(self.level, "%s reason=%s count=%d suppressed=%d " + fields,
                        self.what, key, count, held, *args)
        return True

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def flush(self, force: bool = False) -> int:
        """Report what is held back for keys whose interval has passed (every key if
        `force`); returns the number of lines written."""
        now = self.clock()
        lines = 0
        for key in [k for k in self._held
                    if force or now - self._last.get(k, -math.inf) >= self.every_s]:
            held = self._held.pop(key)
            self._last[key] = now
            self.logger.log(self.level, "%s reason=%s count=0 suppressed=%d (held back, at "
                            "most one line per reason every %g s)", self.what, key, held,
                            self.every_s)
            lines += 1
        return lines
