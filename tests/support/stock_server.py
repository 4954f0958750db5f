"""A store system's stock API for tests (the shapes `HttpStock` asks for, docs/fitting-rooms.md
"Stock"), served from a stock JSON file, that a test can break (`broken = True`: every call
answers 503, as a stock API that is down)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class StockServer:
    def __init__(self, stock_file: Path) -> None:
        data = json.loads(Path(stock_file).read_text("utf-8"))
        products = {p["gtin"]: p for p in data["products"]}
        tags = {uid: ident for uid, ident in (data.get("tags") or {}).items()}
        self.broken = False
        self.calls = 0
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                me.calls += 1
                if me.broken:
                    return self._send(503, {"detail": "stock service down (test)"})
                parts = self.path.strip("/").split("/")
                body: object = None
                if parts[0] == "products" and len(parts) == 2:
                    body = products.get(parts[1])
                elif parts[0] == "products" and len(parts) == 3 and parts[2] == "variants":
                    p = products.get(parts[1])
                    body = None if p is None else [v for v in products.values()
                                                   if v["style"] == p["style"]]
                elif parts[0] == "tags" and len(parts) == 2 and parts[1] in tags:
                    g, _, serial = tags[parts[1]].partition("/")
                    body = {"gtin": g, "serial": serial}
                self._send(404, {"detail": "unknown"}) if body is None else self._send(200, body)

            def _send(self, status: int, body: object) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
