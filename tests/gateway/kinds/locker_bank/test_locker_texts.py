"""The store's words on the locker banks' displays ([screens] locker_*, docs/lockers.md "Texts"):
the gateway refuses texts the bank's display cannot show, and the locker service sends them to
each bank as desired state (a `texts` command at start and at every birth) on a real SQLite
store and the real command service; the bank is a fake that answers like the firmware."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from gateway.devices.commands import CommandService, apply_reply
from gateway.devices.protocol import Reply
from gateway.http.screen_texts import LOCKER_KEYS, ScreenTexts, TextsError, locker_lines
from gateway.kinds.locker_bank.service import LockersService
from gateway.storage.db import Database
from gateway.storage.store import Store, public_command
from tests.support.lockers import BANK, KEY, device_tx


@pytest.mark.parametrize("text, says", [
    ("Ce casier se repose - demandez à l'accueil", "printable ASCII"),   # an accent
    ("x" * 121, "at most 120"),
    ("Code bon - porte %s", "must contain %d"),                          # another placeholder
    ("Code bon - 100% sur", "must contain %d"),
])
def test_locker_texts_the_display_cannot_show_are_refused_with_what_to_fix(text, says):
    with pytest.raises(TextsError, match=says) as e:
        ScreenTexts({"fr": {"locker_ok": text}}, "fr")
    assert "fr.locker_ok" in str(e.value)


def test_the_built_in_locker_texts_are_valid_in_every_language():
    for lang in ("en", "fr"):
        lines = locker_lines(ScreenTexts(None, lang).for_page(BANK)).split("\n")
        assert len(lines) == len(LOCKER_KEYS) == 22
        assert all(line.isascii() and line.isprintable() for line in lines)
    assert locker_lines(ScreenTexts(None, "fr").for_page(BANK)).startswith("Tapez votre code")


def test_the_gateway_refuses_a_bad_locker_text_at_start(tmp_path):
    (tmp_path / "texts.json").write_text(json.dumps({"fr": {"locker_resting": "Casiers fermés"}}))
    (tmp_path / "gw.toml").write_text('[screens]\nlanguage = "fr"\ntexts_file = "texts.json"\n')
    p = subprocess.run([sys.executable, "-m", "gateway", "--db", str(tmp_path / "gw.db"),
                        "--config", str(tmp_path / "gw.toml"), "--broker", "127.0.0.1:1", "--http", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2, p.stderr
    assert "fr.locker_resting" in p.stderr and "printable ASCII" in p.stderr, p.stderr


def _reply_tx(store: Store, reply: Reply, now: int) -> dict[str, Any] | None:
    with store.transaction():
        return apply_reply(store, reply, now)[0]


class FakeBank:
    """Answers `texts` like the firmware (done {rev}); `online` False: stays silent."""

    def __init__(self) -> None:
        self.online = True
        self.texts: list[dict[str, Any]] = []
        self.db: Database | None = None
        self.cmds: CommandService | None = None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        msg = json.loads(payload)
        if not self.online or msg["type"] != "cmd" or msg["body"]["name"] != "texts":
            return
        self.texts.append(msg["body"]["args"])
        asyncio.get_running_loop().create_task(self._answer(msg["id"], msg["body"]["args"]["rev"]))

    async def _answer(self, cid: str, rev: int) -> None:
        await asyncio.sleep(0.01)
        assert self.db is not None and self.cmds is not None
        rec = await self.db.commands.write(_reply_tx, Reply(BANK, cid, None, "done", None, {"rev": rev}), 0)
        if rec is not None:
            self.cmds.notify(public_command(rec))


async def _until(cond, what: str, timeout: float = 10) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(what)
        await asyncio.sleep(0.02)


def test_each_bank_gets_the_stores_words_at_start_and_again_after_a_birth(tmp_path):
    fr = ScreenTexts({"fr": {"locker_resting": "Ces casiers se reposent - demandez a la caisse"}}, "fr")
    want = locker_lines(fr.for_page(BANK))

    async def main() -> None:
        dev = FakeBank()
        db = Database(tmp_path / "gw.db")
        await db.__aenter__()
        await db.write(device_tx, 0)
        cmds = CommandService(db, dev.publish, tick_s=0.05)
        dev.db, dev.cmds = db, cmds
        svc = LockersService(db, cmds, keys={BANK: KEY}.get, texts=lambda b: locker_lines(fr.for_page(b)))
        await svc.load()  # as the app does, before anything else (it creates the kind's tables)
        await svc.create_bank(BANK, [(1, "S"), (2, "M")])
        tasks = [asyncio.get_running_loop().create_task(t) for t in (svc.run(), cmds.run())]
        try:
            await _until(lambda: svc.desired.shown(BANK) is not None, f"no texts shown: {dev.texts}")
            assert len(dev.texts) == 1 and dev.texts[0]["t"] == want
            assert "Ces casiers se reposent - demandez a la caisse" in want.split("\n")
            rev = dev.texts[0]["rev"]
            svc.on_birth(BANK)  # the bank came back (maybe with an older flash): asked again
            await _until(lambda: len(dev.texts) == 2 and svc.desired.shown(BANK) == rev,
                         f"not sent again after a birth: {dev.texts}")
            assert dev.texts[1] == {"t": want, "rev": rev}
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await db.__aexit__(None, None, None)
    asyncio.run(main())
