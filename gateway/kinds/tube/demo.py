"""The demo's tube line (`phygital demo`, docs/tube.md "In the demo"): `boards/tube/demo-line.json`,
a stockroom and two floor stations (one of them the fitting-room desk) on the real tube firmware
with a line controller between them. Staff ask for a garment on the floor (a dispatch through
the API, one at a time), the stockroom clerk loads whatever the stockroom display asks for
(so a size asked on the mirror in `room-1` comes by tube too, gateway/kinds/fitting_room/tube_sizes.py)
and presses SEND, an associate takes each capsule out of the bin a moment after it arrived.
A capsule the line lost is pulled out and its dispatch resent, as staff would."""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from pathlib import Path

import httpx

from gateway.http.auth import bearer_headers

DEMO_TUBE = Path(__file__).resolve().parents[3] / "boards" / "tube" / "demo-line.json"
STOCKROOM = "stockroom"
POLL_S = 0.3


async def tube_day(tube, base: str, stop: asyncio.Event, rng: random.Random,
                   stock: Path | None = None) -> None:
    from gateway.kinds.fitting_room.demo import DEMO_STOCK

    products = json.loads((stock or DEMO_STOCK).read_text())["products"]
    items = [f"{p['name']} {p['colour']} {p['size']}" for p in products]
    floors = [s for s in tube.devices if s != STOCKROOM]
    loaded_at = pressed_at = 0.0
    arrived: dict[str, float] = {}  # station -> when staff saw a capsule in its bin
    take_after: dict[str, float] = {}
    next_dispatch = time.monotonic() + rng.uniform(1, 3)
    n, run = 0, secrets.token_hex(2)  # keys of this run only: the workdir's database stays
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=bearer_headers()) as http:
        async def line_up() -> bool:
            r = await http.get("/devices")
            online = {d["id"] for d in r.json() if d["online"]} if r.status_code == 200 else set()
            return set(tube.devices.values()) <= online

        while not stop.is_set() and not await line_up():  # the stations' births reached the gateway
            await asyncio.sleep(1)
        while not stop.is_set():
            try:
                now = time.monotonic()
                r = await http.get("/tube/line")
                line = r.json() if r.status_code == 200 else {}
                live = line.get("live") or []
                # staff on the floor ask the stockroom for a garment when the line is quiet
                if not live and now >= next_dispatch:
                    n += 1
                    key, to, item = f"demo-tube-{run}-{n}", rng.choice(floors), rng.choice(items)
                    r = await http.post("/tube/dispatches", json={
                        "from": STOCKROOM, "to": to, "priority": rng.choice(("customer", "replenishment")),
                        "item": item, "idempotency_key": key})
                    if r.status_code in (200, 201):
                        print(f"  staff at {to} ask the stockroom for {item} by tube ({key})")
                    else:
                        print(f"  tube dispatch {key} refused: {r.json().get('detail')}")
                    next_dispatch = now + rng.uniform(6, 12)
                # the stockroom clerk loads what the display asks for and presses SEND
                shown = tube.display(STOCKROOM)
                if shown.startswith(("Load ", "No carrier")):
                    if not tube.in_chamber(STOCKROOM):
                        print(f"  stockroom display says {shown.split(', then')[0]!r}: the clerk loads a capsule")
                        tube.load(STOCKROOM)
                        loaded_at = now
                    elif now - loaded_at >= 1.0 and now - pressed_at >= 2.0:
                        await asyncio.to_thread(tube.press_send, STOCKROOM)
                        pressed_at = now
                # associates take capsules out of the bins a little after they arrived
                for st in tube.devices:
                    if tube.in_bin(st) and st not in arrived:
                        arrived[st], take_after[st] = now, now + rng.uniform(2, 4)
                        print(f"  capsule arrived at {st}")
                    elif st in arrived and now >= take_after[st]:
                        if tube.in_bin(st):
                            tube.take(st)
                            print(f"  associate takes the capsule out at {st}")
                        del arrived[st], take_after[st]
                # a capsule the line lost: staff pull it out, clear the jam, it goes again
                for job in live:
                    if job["state"] == "lost":
                        pulled = tube.model.retrieve_stuck(stopped=True)
                        r = await http.post(f"/tube/jams/{job['job']}/clear")
                        print(f"  staff pull {pulled} lost capsule(s) out of the tube and resend "
                              f"{job['job']}: {r.status_code}")
            except httpx.HTTPError as exc:  # the gateway busy or restarting: next round
                print(f"  tube staff: gateway not answering ({exc!r}), trying again")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
