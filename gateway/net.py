"""Network addresses on command lines: `HOST:PORT` for argparse (`phygital gateway --broker`,
`python -m gateway.chain bridge --central`)."""
from __future__ import annotations

import argparse
from collections.abc import Callable


def host_port(default_port: int) -> Callable[[str], tuple[str, int]]:
    def parse(text: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, str(default_port)
        host = host.strip("[]") or "127.0.0.1"
        try:
            p = int(port)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None
        if not 0 <= p <= 65535:
            raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
        return host, p
    return parse
