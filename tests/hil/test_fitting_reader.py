"""Several garments on one MFRC522: the emulator's collisions and the driver's inventory
(bit-oriented anticollision, SELECT, HLTA; WUPA re-finds HALTed cards) in real MicroPython."""
from __future__ import annotations

from hil.sim import mfrc522 as m
from hil.sim.mfrc522 import MFRC522Emulator, MifareClassic1K, NtagTag, merge_answers
from tests.support.mfrc522 import rd, run_driver, setup_reader, xchg

# three NTAGs with the same first three UID bytes: their cascade level 1 is identical, so they
# only collide at level 2; one MIFARE card collides with them at level 1
SHARED = [bytes.fromhex(h) for h in ("04102030405001", "04102030405002", "04102030405083")]
MIFARE = bytes.fromhex("a1b2c3d4")


def test_merge_answers_reports_first_differing_bit():
    assert merge_answers([]) is None
    assert merge_answers([(b"\x44\x00", 8)]) == (b"\x44\x00", 8, None)
    assert merge_answers([(b"\x44\x00", 8), (b"\x44\x00", 8)]) == (b"\x44\x00", 8, None)
    # 0x44 vs 0x04 differ at bit 6 (0-based): collision at position 7; the whole frame
    # arrives, bits from the collision on cleared (ValuesAfterColl = 0) or kept
    assert merge_answers([(b"\x44\x00", 8), (b"\x04\x00", 8)]) == (b"\x04\x00", 8, 7)
    # second byte, bit 2: one whole byte then 2 bits before the collision
    assert merge_answers([(b"\xff\x04", 8), (b"\xff\x00", 8)]) == (b"\xff\x00", 8, 11)
    assert merge_answers([(b"\xff\x04", 8), (b"\xff\x00", 8)], True) == (b"\xff\x04", 8, 11)


def test_emulator_collision_sets_collerr_and_collpos():
    emu = MFRC522Emulator()
    a, b = NtagTag(SHARED[0]), MifareClassic1K(MIFARE)
    emu.add(a)
    emu.add(b)
    assert emu.tags == [a, b]
    setup_reader(emu)
    assert xchg(emu, b"\x52", 7) is not None  # WUPA: ATQAs 44 00 and 04 00 collide
    assert rd(emu, m.ErrorReg) & m.ERR_COLL
    assert rd(emu, m.CollReg) & 0x3F == 7
    xchg(emu, b"\x93\x20")  # CL1: 88 04 10 20 vs a1 b2 c3 d4: bit 0 differs (0 vs 1)
    assert rd(emu, m.ErrorReg) & m.ERR_COLL
    assert rd(emu, m.CollReg) & 0x3F == 1
    # one known bit (1): only the MIFARE card matches and sends the rest of its level
    ans = xchg(emu, b"\x93\x21\x01", 1)
    assert not rd(emu, m.ErrorReg) & m.ERR_COLL
    assert ans[0] == bytes([MIFARE[0] & 0xFE]) + MIFARE[1:] + bytes([m.bcc(MIFARE)])
    emu.remove(b)
    assert emu.tags == [a] and b.state == "OFF"
    emu.place(b)  # place keeps its meaning: the card replaces whatever is on the reader
    assert emu.tags == [b] and a.state == "OFF"


INVENTORY = """
from edge.drivers.inventory import InventoryReader
rdr = InventoryReader(spi)
rdr.init()
known = []
def cycle():
    seen = []
    for c in known:
        if rdr.present(c.uid):
            seen.append(c.uid_hex)
    for _ in range(8):
        c = rdr.find()
        if c is None:
            break
        if c.uid_hex not in [k.uid_hex for k in known]:
            known.append(c)
        if c.uid_hex not in seen:
            seen.append(c.uid_hex)
    return sorted(seen)
"""


def test_driver_inventories_several_cards_and_refinds_halted_ones():
    emu = MFRC522Emulator()
    cards = [NtagTag(u) for u in SHARED] + [MifareClassic1K(MIFARE)]
    for c in cards[:3]:
        emu.add(c)
    res = run_driver(emu, INVENTORY + """
out(c=cycle())
out(c=cycle())
world("add_mifare")
out(c=cycle())
world("drop_one")
out(c=cycle())
world("back")
out(c=cycle())
out(techs=sorted(set(k.tech for k in known)))
""", {"add_mifare": lambda: emu.add(cards[3]), "drop_one": lambda: emu.remove(cards[1]),
      "back": lambda: emu.add(cards[1])})
    ntags = sorted(u.hex() for u in SHARED)
    assert res[0]["c"] == ntags
    assert res[1]["c"] == ntags  # the HALTed cards are found again (WUPA + SELECT)
    assert res[2]["c"] == sorted(ntags + [MIFARE.hex()])
    assert res[3]["c"] == sorted([SHARED[0].hex(), SHARED[2].hex(), MIFARE.hex()])
    assert res[4]["c"] == sorted(ntags + [MIFARE.hex()])
    assert res[5]["techs"] == ["mifare-1k", "ntag213"]
    assert emu.collisions > 0  # the inventory really resolved collisions


def test_driver_inventories_cards_that_all_arrive_at_once():
    # the MIFARE NUID and the NTAGs' cascade tag 0x88 differ in the very first bit: only
    # CollPos tells the driver anything (the driver leaves ValuesAfterColl at its reset 1, so
    # the FIFO holds the cards' bits ORed, which it overwrites on the next round)
    emu = MFRC522Emulator()
    for c in [NtagTag(u) for u in SHARED] + [MifareClassic1K(MIFARE)]:
        emu.add(c)
    res = run_driver(emu, INVENTORY + """
out(c=cycle())
out(c=cycle())
""")
    everything = sorted([u.hex() for u in SHARED] + [MIFARE.hex()])
    assert res[0]["c"] == everything and res[1]["c"] == everything
