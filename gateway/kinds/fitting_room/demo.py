"""The demo's fitting room (`phygital demo`): a scripted customer takes garments from the demo
stock into `room-1`, swaps one out, sometimes presses the call button, and leaves."""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEMO_STOCK = Path(__file__).resolve().parents[2] / "demo" / "stock.json"


async def fitting_customer(room, stop: asyncio.Event, rng: random.Random,
                           ntag: Callable[..., Any]) -> None:
    """`ntag(uid, pages=...)` makes a tag the room's readers see (in the demo the virtual store's
    `hil.sim.mfrc522.NtagTag`: the product does not import the rig framework)."""
    from gateway.kinds.sample_pad import tags

    products = json.loads(DEMO_STOCK.read_text())["products"]
    garments = [ntag(bytes([0x04, 0xF1, 0x77, 0, 0, 0, i + 1]),
                     pages=tags.ntag_pages_for_garment(p["gtin"], f"D-{i + 1}"))
                for i, p in enumerate(products)]

    async def pause(lo: float, hi: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(lo, hi))

    while not stop.is_set():
        picks = rng.sample(garments, 2)
        print(f"  customer walks into {room.dev} with 2 garments")
        for g in picks:
            room.hang(g)
        await pause(0.5, 1.0)
        room.occupy(True)
        await pause(6, 10)
        room.take(picks[0])
        await pause(2, 4)
        if rng.random() < 0.3:
            print(f"  customer presses the call button in {room.dev}")
            await asyncio.to_thread(room.press)
        await pause(4, 8)
        room.occupy(False)
        for g in picks[1:]:
            room.take(g)
        await pause(3, 6)
