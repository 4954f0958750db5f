"""The demo's rack display (`phygital demo`): staff map the rack `rack-1` to two products
(`PUT /racks/rack-1`), then the online shop's feed posts a few likes now and then (`POST
/likes`, now and then an unlike, every event with its own id), and the rack's real firmware
shows the sum on its emulated OLED; the demo prints what the panel shows after each batch.
Everything goes through the real API (docs/rack-display.md)."""
from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import httpx

from gateway.http.auth import bearer_headers

DEMO_RACK = {"label": "DENIM", "products": ["P-1001", "P-1002"]}


async def rack_day(rack: Any, base: str, stop: asyncio.Event, rng: random.Random) -> None:
    """`rack`: the rig's handle (hil/drivers/rack_display.py RackHandle: `dev`, `text()`)."""
    async def pause(lo: float, hi: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(lo, hi))

    async with httpx.AsyncClient(base_url=base, timeout=30, headers=bearer_headers()) as http:
        while not stop.is_set():  # the rack's first birth: the gateway knows the display
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"/devices/{rack.dev}")).status_code == 200:
                    break
            await pause(0.5, 0.5)
        with contextlib.suppress(httpx.HTTPError):
            (await http.put(f"/racks/{rack.dev}", json=DEMO_RACK)).raise_for_status()
        n = 0
        shown = None
        while not stop.is_set():
            await pause(2.0, 5.0)
            events = []
            for _ in range(rng.randint(1, 4)):
                n += 1
                events.append({"id": f"demo-like-{n}", "product": rng.choice(DEMO_RACK["products"]),
                               "delta": -1 if rng.random() < 0.15 else 1})
            try:
                (await http.post("/likes", json={"events": events})).raise_for_status()
                view = (await http.get(f"/racks/{rack.dev}")).json()
            except httpx.HTTPError as exc:
                print(f"likes feed: gateway not answering ({exc!r}); retrying", flush=True)
                continue
            await pause(1.0, 1.0)  # the display redraws within a second (docs/benchmarks.md)
            screen = rack.text()
            if screen != shown:
                shown = screen
                print(f"rack {rack.dev}: {view['likes']} likes; its screen shows {' / '.join(screen)}",
                      flush=True)
