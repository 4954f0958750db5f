"""The endless aisle in tests (docs/endless-aisle.md): an in-process gateway on the session
broker with a locker bank (its events written as ingest writes them), the tube's boards known,
a sample pad, and a token per role (`AisleStore`); `ThreadedStore` runs one in a thread of its
own with its HTTP server, for a browser test (Playwright's sync API owns the main thread)."""
from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any, Self

import httpx

from gateway.app import Gateway, GatewayConfig
from gateway.http import auth
from gateway.storage.store import Store
from tests.support.lockers import BANK, KEY, device_tx, event_tx
from tests.support.tube import DEVICES as TUBE_DEVICES

ROOT = Path(__file__).resolve().parents[2]
STOCK = ROOT / "gateway" / "demo" / "stock.json"
SAMPLES = ROOT / "gateway" / "demo" / "samples.json"
OAK_NATURAL = "09506000200019"   # floor 0, stockroom 38: by tube
OAK_SMOKED = "09506000200026"    # only in other stores: an order, a locker here
CHINO = "09506000134383"         # on the sales floor
PAD = "pad-1"
ROOM = "room-1"
OXFORD_BLUE_M = "09506000134352"    # on the floor; its white M only in other stores
OXFORD_WHITE_M = "09506000134376"
ROLES = ("customer", "kiosk", "orders", "staff", "admin")


def _devices_tx(store: Store, now: int) -> None:
    with store.transaction():
        for d in TUBE_DEVICES:
            store.upsert_device(id=d, kind="tube-line" if d == "tube-line" else "tube-station", fw="t",
                                caps=[], cfg="x", session=1, epoch="e1", boot=1, reset=None,
                                online=True, now=now)
        for dev, kind in ((PAD, "sample-pad"), (ROOM, "fitting-room")):
            store.upsert_device(id=dev, kind=kind, fw="t", caps=[], cfg="x", session=1,
                                epoch="e1", boot=1, reset=None, online=True, now=now)


def _tokens_tx(store: Store) -> dict[str, str]:
    with store.transaction():
        return {role: auth.create_token(store.conn, f"{role}-1", auth.resolve_scopes(role))
                for role in ROLES}


def _device_event_tx(store: Store, dev: str, seq: int, etype: str, body: dict[str, Any], now: int) -> None:
    with store.transaction():
        store.insert_event(dev, "e1", seq, etype, now, now, body)


async def until(fn, what: str, timeout: float = 30.0) -> Any:
    """Wait for `fn()` (sync or async) to be truthy; fail saying `what` (no timing asserted)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = fn()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class AisleStore:
    def __init__(self, tmp_path: Path, broker_port: int, **config: Any) -> None:
        keys = tmp_path / "locker-keys.json"
        keys.write_text(json.dumps({BANK: KEY.hex()}))
        os.chmod(keys, 0o600)
        (tmp_path / "gw").mkdir()
        self.config = GatewayConfig(**{
            "broker_port": broker_port, "db_path": tmp_path / "gw" / "gw.db", "http_port": 0,
            "stock_file": STOCK, "samples_file": SAMPLES, "locker_keys_file": keys,
            "client_id": f"pe-gw-aisle-{os.getpid()}-{id(self)}",
            "aisle_stations": (f"{PAD}=floor-womens",), "aisle_backoff_min_s": 0.05,
            "aisle_backoff_max_s": 0.1, "device_silent_s": 0, **config})
        self.seq = 0
        self.dev_seq: dict[str, int] = {}

    async def __aenter__(self) -> Self:
        self.gw = Gateway(self.config)
        await self.gw.__aenter__()
        if BANK in self.gw.lockers.banks:  # a restart (`restart`): the store is as it was left
            return self._client()
        now = self.gw.clock()
        await self.gw.db.write(device_tx, now)
        await self.gw.db.write(_devices_tx, now)
        await self.gw.lockers.create_bank(BANK, [(1, "S"), (2, "M"), (3, "L")])
        self.tokens = await self.gw.db.write(_tokens_tx)
        return self._client()

    def _client(self) -> Self:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.gw.app),
                                      base_url="http://gw", timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.gw.__aexit__(*exc)

    async def restart(self) -> None:
        """Stop the gateway and start another on the same files (memory gone: the codes too)."""
        await self.__aexit__(None, None, None)
        await self.__aenter__()

    def h(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def ask(self, role: str, key: str, gtin: str, expect: int | tuple[int, ...] = (200, 201),
                  **extra: Any) -> dict[str, Any]:
        r = await self.http.post("/aisle/requests", headers=self.h(role), json={
            "idempotency_key": key, "origin": extra.pop("origin", PAD), "gtin": gtin, **extra})
        assert r.status_code in ((expect,) if isinstance(expect, int) else expect), r.text
        return r.json()

    async def event(self, etype: str, **body: Any) -> None:
        """A locker bank event, as ingest writes it."""
        self.seq += 1
        await self.gw.db.write(event_tx, self.seq, etype, body, self.gw.clock())

    async def device_event(self, dev: str, etype: str, **body: Any) -> None:
        """An event of the sample pad or the fitting room, as ingest writes it."""
        self.dev_seq[dev] = self.dev_seq.get(dev, 0) + 1
        await self.gw.db.write(_device_event_tx, dev, self.dev_seq[dev], etype, body, self.gw.clock())

    async def load(self, compartment: int) -> None:
        """Staff load the parcel (the locker flow): the order becomes ready, a code is issued."""
        await self.event("door.opened", compartment=compartment, why="load", order=None)
        await self.event("door.closed", compartment=compartment, why="load", open_ms=900, occupied=1)
        await self.event("order.loaded", compartment=compartment, occupied=1)


class ThreadedStore:
    """An `AisleStore` serving HTTP on a free port, on its own event loop in a thread; `call`
    runs a coroutine function of it there and returns its result."""

    def __init__(self, tmp_path: Path, broker_port: int, **config: Any) -> None:
        self.store = AisleStore(tmp_path, broker_port, **config)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="aisle-gateway")

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        try:
            async with self.store as s:
                server = asyncio.create_task(s.gw.run())
                await until(lambda: s.gw.http_port, "the HTTP server")
                self._ready.set()
                await server
        except Exception as exc:  # noqa: BLE001 - handed to the test thread, which says it
            self._error = exc
            self._ready.set()

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None or not self._ready.is_set():
            raise RuntimeError(f"the gateway did not start: {self._error!r}")
        self.url = f"http://127.0.0.1:{self.store.gw.http_port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.store.gw.stop)
        self._thread.join(30)

    def call(self, fn, *args: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(timeout)
