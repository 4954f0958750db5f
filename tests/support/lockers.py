"""The locker bank in tests (docs/lockers.md): its service alone on a real Store (`BANK`, `KEY`
and the transactions that write what the ingest would), and on the rig with the real gateway
(`Bank`, the `bank` fixture; `gateway_args` adds `python -m gateway` options, a test may
parametrize or override it)."""
from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from gateway.storage.store import Store
from hil.fakes import SseReader
from hil.harness import GatewayProcess, wait_for
from hil.rig import Rig

BANK = "lk-u1"
KEY = bytes(range(100, 132))  # the bank's code key (locker-keys.json)


def device_tx(store: Store, now: int) -> None:
    with store.transaction():
        store.upsert_device(id=BANK, kind="locker-bank", fw="t", caps=[], cfg="x", session=1,
                            epoch="e1", boot=1, reset=None, online=True, now=now)


def event_tx(store: Store, seq: int, etype: str, body: dict[str, Any], now: int,
             t_device: int | None = None) -> None:
    with store.transaction():
        store.insert_event(BANK, "e1", seq, etype, now if t_device is None else t_device, now, body)


def locker_items(store: Store) -> list[dict[str, Any]]:
    return [i.data for i in store.stream_after(0, 10_000) if i.kind == "locker"]


# --- on the rig, with the real gateway -------------------------------------------------------

class Bank:
    """A scenario's view of one locker bank: the rig's device plus the gateway's API."""

    def __init__(self, rig: Rig, gw: GatewayProcess, stream: SseReader):
        self.rig, self.gw, self.stream = rig, gw, stream
        self.lk = rig.device_of_kind("locker-bank")
        self.id = self.lk.dev
        self._keys = 0

    def start(self) -> dict:
        self.lk.start()
        return wait_for(self.view_or_none, 30, what="locker bank created from its status")

    def view_or_none(self) -> dict | None:
        r = httpx.get(f"{self.gw.url}/lockers/{self.id}", timeout=5)
        return r.json() if r.status_code == 200 else None

    def view(self) -> dict:
        return self.gw.get(f"/lockers/{self.id}")

    def compartment(self, n: int) -> dict:
        return next(c for c in self.view()["compartments"] if c["id"] == n)

    def order(self, order: str) -> dict:
        return self.gw.get(f"/lockers/{self.id}/orders/{order}")

    def post(self, path: str, **body) -> httpx.Response:
        return httpx.post(f"{self.gw.url}/lockers/{self.id}{path}", json=body or None, timeout=60)

    def op(self, path: str, **body) -> httpx.Response:
        """A staff/order-system operation with a fresh idempotency key."""
        self._keys += 1
        body.setdefault("idempotency_key", f"t-{self._keys}-{time.monotonic_ns()}")
        return self.post(path, **body)

    def pulses(self, n: int, since: float) -> int:
        return self.lk.rises(f"lock_{n}", since=since)

    def shown(self) -> int:
        """Display lines so far (pass as `start` to wait for the next message)."""
        return len(self.lk.display())

    def events(self, etype: str) -> list[dict]:
        return self.gw.events(self.id, etype)

    def items(self, type_: str, **match) -> list[dict]:
        return [m for m in self.stream.messages if m.get("_event") == "locker" and m.get("type") == type_
                and all(m.get(k) == v for k, v in match.items())]

    def assign(self, order: str, size: str) -> int:
        r = self.post("/orders", order=order, size=size)
        assert r.status_code == 201, r.text
        return r.json()["compartment"]

    def load(self, order: str, size: str = "M") -> tuple[int, str]:
        """Assign, staff loads the parcel and closes the door; returns (compartment, code) once
        the code is live on the bank."""
        n = self.assign(order, size)
        t0 = self.rig.trace.now()
        r = self.post(f"/orders/{order}/load")
        assert r.status_code == 200, r.text
        assert r.json()["compartment"] == n and r.json()["command"]["status"] == "done"
        assert self.pulses(n, t0) >= 1
        self.lk.wait_message("door.opened", kind="evt", where=lambda m: m["body"]["why"] == "load"
                             and m["body"]["compartment"] == n, timeout=10)
        self.lk.place_parcel(n)
        self.lk.close_door(f"door_{n}")
        ready = wait_for(lambda: self.items("order.ready", order=order), 20, what=f"order.ready {order}")
        assert len(ready) == 1
        code = ready[0]["code"]
        assert isinstance(code, str) and len(code) == 6 and code.isdigit()
        wait_for(lambda: (self.order(order).get("code_sync") or {}).get("status") == "done", 20,
                 what=f"the code of {order} on the bank")
        return n, code

    def retrieve(self, order: str, n: int) -> None:
        """Staff take the parcel back out: the order is returned, the compartment free."""
        r = self.op(f"/orders/{order}/retrieve")
        assert r.status_code == 200, r.text
        self.lk.take_parcel(n)
        self.lk.close_door(f"door_{n}")
        wait_for(lambda: self.order(order)["state"] == "returned", 15, what=f"{order} returned")
        assert self.compartment(n)["state"] == "free"

    def collect(self, n: int, code: str) -> None:
        """The customer enters the code, takes the parcel, closes the door."""
        start = self.shown()
        t0 = self.rig.trace.now()
        self.lk.type_code(code)
        self.lk.wait_display(rf"^Door {n} is open - please take your parcel and close the door$",
                             timeout=10, start=start)
        assert self.pulses(n, t0) == 1
        self.lk.take_parcel(n)
        self.lk.close_door(f"door_{n}")
        self.lk.wait_display(r"^Thank you - enjoy your order$", timeout=10, start=start)


@pytest.fixture
def gateway_args() -> list[str]:
    return []  # a scenario may parametrize it: more `python -m gateway` options


@pytest.fixture
def bank(rig: Rig, rig_broker, tmp_path, gateway_args):
    gw = GatewayProcess(tmp_path / "gw", rig_broker[1], extra_args=gateway_args).start()
    store = getattr(rig, "store", None)
    if store is not None:  # the virtual rig: banks get their code keys in the gateway's file
        store.locker_keys = gw.locker_keys
    try:
        with SseReader(gw.url) as stream:
            b = Bank(rig, gw, stream)
            b.start()
            yield b
    finally:
        gw.stop()


def wrong_code(code: str, k: int = 1) -> str:
    """Another six-digit code: `code` plus k, wrapped."""
    return str((int(code) + k) % 10**6).zfill(6)
