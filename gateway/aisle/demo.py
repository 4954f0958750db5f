"""The demo's endless aisle (`phygital demo`, docs/endless-aisle.md): now and then a customer at
the kiosk of `pad-1` asks, with a `customer` token, for a colour that is not on the floor. One
from the stockroom comes by tube to the womenswear till (the tube demo's stockroom clerk loads
what the station asks for); one that only other stores have is ordered, a locker of `lk-1` is
reserved, the parcel "arrives" and staff load it, the simulated SMS brings the pickup code to
the customer's phone (`AisleService.sender`: in memory; the demo never prints a code), and the
customer types it on the keypad and takes the parcel. Everything through the real API and the
real locker firmware."""
from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
from typing import Any

import httpx

from gateway.http.auth import bearer_headers

PAD = "pad-1"
STATION = "floor-womens"          # the tube station nearest pad-1 in the demo ([aisle] stations)
FROM_STOCKROOM = ("09506000200033", "Oak plank white oil")   # floor 0, stockroom 12
FROM_ELSEWHERE = ("09506000200026", "Oak plank smoked")      # other stores only


async def aisle_day(sender: Any, bank: Any, base: str, token: str, stop: asyncio.Event,
                    rng: random.Random) -> None:
    async def pause(lo: float, hi: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(lo, hi))

    async def until(pred: Any, timeout: float = 30.0) -> Any:
        for _ in range(int(timeout / 0.2)):
            if stop.is_set():
                return None
            got = await pred()
            if got:
                return got
            await asyncio.sleep(0.2)
        return None

    run = secrets.token_hex(2)  # keys of this run only: the workdir's database stays
    await pause(6, 9)  # the store comes up first
    async with httpx.AsyncClient(base_url=base, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as customer, \
            httpx.AsyncClient(base_url=base, timeout=60, headers=bearer_headers()) as staff:
        async def ask(n: int, what: tuple[str, str], **extra: Any) -> dict[str, Any] | None:
            r = await customer.post("/aisle/requests", json={
                "idempotency_key": f"demo-aisle-{run}-{n}", "origin": PAD, "origin_kind": "sample-pad",
                "gtin": what[0], **extra})
            if r.status_code not in (200, 201):
                print(f"  endless aisle: {what[1]} could not be asked for: {r.json().get('detail')}")
                return None
            return r.json()

        n = 0
        while not stop.is_set():
            n += 1
            v = await ask(n, FROM_STOCKROOM)
            if v is not None:
                print(f"  customer at the kiosk of {PAD} asks for {FROM_STOCKROOM[1]}: "
                      + (f"from the stockroom by tube to {v['station']}" if v["route"] == "tube"
                         else f"route {v['route']}"))
            await pause(15, 25)
            n += 1
            phone = f"+3361234{n % 10000:04d}"
            v = await ask(n, FROM_ELSEWHERE, contact={"channel": "sms", "to": phone})
            if v is None or v["route"] != "order":
                await pause(30, 45)
                continue
            order, bank_id, door = v["order"], v["bank"], v["locker"]["compartment"]
            print(f"  customer at the kiosk of {PAD} asks for {FROM_ELSEWHERE[1]}: ordered for "
                  f"click-and-collect, {bank_id} door {door} reserved, code to {v['contact']}")
            await pause(5, 10)  # the parcel comes from the other store
            r = await staff.post(f"/lockers/{bank_id}/orders/{order}/load")
            if r.status_code != 200:
                print(f"  staff could not load {order}: {r.json().get('detail')}")
                continue
            await asyncio.sleep(1)
            bank.set_occupied(door, True)
            bank.close_door(door)
            print(f"  staff loaded {order} (endless aisle) into door {door}")

            async def sms(phone: str = phone) -> str | None:
                return next((m["text"] for m in sender.inbox if m["to"] == phone), None)

            async def code_live(order: str = order, bank_id: str = bank_id) -> bool:
                o = (await staff.get(f"/lockers/{bank_id}/orders/{order}")).json()
                return (o.get("code_sync") or {}).get("status") == "done"
            text = await until(sms)
            if text is None or not await until(code_live):
                continue
            print("  the customer's phone gets the SMS with the pickup code (not shown here)")
            await pause(3, 6)
            m = re.search(r"\b(\d{6})\b", text)
            if m is None:
                continue
            print(f"  customer types the code for {order}")
            bank.type_code(m.group(1))

            async def opened(door: int = door) -> bool:
                return bank.door(door) == 1
            if await until(opened, 10):
                await pause(1, 2)
                bank.set_occupied(door, False)
                bank.close_door(door)
                print(f"  customer took {order} (endless aisle) and closed door {door}")
            await pause(30, 45)
