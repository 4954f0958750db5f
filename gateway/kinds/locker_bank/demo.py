"""The demo's locker bank (`phygital demo`): the order system reserves a compartment, staff load
the parcel, the gateway issues the pickup code, and the customer comes and types it (now and
then a wrong code first). Everything goes through the real API and the real locker firmware."""
from __future__ import annotations

import asyncio
import contextlib
import json
import random

import httpx

from gateway.http.auth import bearer_headers


async def _codes(base: str, codes: dict[str, str], stop: asyncio.Event) -> None:
    """Follow the stream and keep the plain code of each `order.ready` (live subscribers only
    get it: it is never stored, docs/lockers.md). Plays the order system, so its token needs
    the `lockers` scope or `admin` (the demo's bootstrap admin token): a kiosk, mirror or staff
    token gets `order.ready` without the code (gateway/http/redact.py)."""
    while not stop.is_set():
        try:
            async with httpx.AsyncClient(base_url=base, timeout=None,
                                         headers=bearer_headers()) as http, \
                    http.stream("GET", "/stream") as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:") and '"order.ready"' in line:
                        item = json.loads(line[5:])
                        if item.get("code"):
                            codes[item["order"]] = item["code"]
        except httpx.HTTPError:
            await asyncio.sleep(1)


async def locker_day(bank, base: str, stop: asyncio.Event, rng: random.Random) -> None:
    codes: dict[str, str] = {}
    follower = asyncio.create_task(_codes(base, codes, stop))

    async def pause(lo: float, hi: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(lo, hi))

    async def until(pred, timeout: float = 20.0) -> bool:
        for _ in range(int(timeout / 0.2)):
            if stop.is_set():
                return False
            if await pred():
                return True
            await asyncio.sleep(0.2)
        return False

    try:
        async with httpx.AsyncClient(base_url=f"{base}/lockers/{bank.dev}", timeout=60,
                                     headers=bearer_headers()) as http:
            async def bank_known() -> bool:  # the bank's first birth reached the gateway
                return (await http.get(f"{base}/lockers/{bank.dev}")).status_code == 200
            await until(bank_known, 60)
            n = 0
            while not stop.is_set():
                n += 1
                order, size = f"demo-{n}", rng.choice("SML")
                r = await http.post("/orders", json={"order": order, "size": size})
                if r.status_code != 201:
                    print(f"  order system: no locker for {order}: {r.json().get('detail')}")
                    await pause(10, 15)
                    continue
                door = r.json()["compartment"]
                print(f"  order system reserves {bank.dev} door {door} for {order} (size {size})")
                await pause(2, 4)
                r = await http.post(f"/orders/{order}/load")
                if r.status_code != 200:
                    print(f"  staff could not load {order}: {r.json().get('detail')}")
                    continue
                await asyncio.sleep(1)
                bank.set_occupied(door, True)
                bank.close_door(door)
                print(f"  staff loaded {order} into door {door}")

                async def code_live(order: str = order) -> bool:
                    o = (await http.get(f"/orders/{order}")).json()
                    return order in codes and (o.get("code_sync") or {}).get("status") == "done"
                if not await until(code_live):
                    continue
                await pause(3, 6)
                if rng.random() < 0.3:
                    print("  customer mistypes the code")
                    bank.type_code(str((int(codes[order]) + 1) % 10**6).zfill(6))
                    await pause(2, 3)
                print(f"  customer types the code for {order}")
                bank.type_code(codes.pop(order))

                async def opened(door: int = door) -> bool:
                    return bank.door(door) == 1
                if await until(opened, 10):
                    await pause(1, 2)
                    bank.set_occupied(door, False)
                    bank.close_door(door)
                    print(f"  customer took {order} and closed door {door}")
                await pause(4, 8)
    finally:
        follower.cancel()
