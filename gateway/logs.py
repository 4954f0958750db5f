"""Log setup: `text` (the `key=value` lines the gateway always wrote) or `json` (one JSON
object per line for a log shipper: `ts`, `level`, `logger`, `msg`, every `key=value` pair of
the message as a field of its own, `exc` with the traceback)."""
from __future__ import annotations

import json
import logging
import re
import sys
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
