"""For tests of a gateway service on a real Store without a gateway process: a clock the test
moves, and the commands the service has inserted."""
from __future__ import annotations

from typing import Any

from gateway.storage.store import Store


class Clock:
    def __init__(self, t_s: float = 1_800_000_000.0) -> None:
        self.ms = int(t_s * 1000)

    def __call__(self) -> int:
        return self.ms

    def advance(self, s: float) -> None:
        self.ms += int(s * 1000)


def commands(store: Store) -> list[dict[str, Any]]:
    """Every command row, oldest first (a read transaction: `db.read(commands)`)."""
    rows = store.conn.execute("SELECT id FROM commands ORDER BY created, id").fetchall()
    return [store.get_command(r[0]) for r in rows]
