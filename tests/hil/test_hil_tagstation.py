"""Tag station write/verify logic against the MFRC522 emulator, through the real `mfrc522`
package's MFRC522 class (RPi.GPIO and spidev replaced at import), gpiozero MockFactory for
the LEDs and the buzzer."""
from __future__ import annotations

import itertools
import sys

import pytest

from gateway.kinds.sample_pad import tags
from hil.sim.mfrc522 import MFRC522Emulator, MifareClassic1K, NtagTag
from tools.tagstation import Feedback, Reader, TagStation, emulated_mfrc522

GREEN, RED, BUZZER = 23, 24, 18
UID7 = bytes.fromhex("04a1b2c3d4e5f6")


@pytest.fixture
def emu():
    # realtime: frames and the card's EEPROM write take their time, as the library expects
    return MFRC522Emulator(timing="realtime")


@pytest.fixture
def station(emu, pins):
    fb = Feedback(GREEN, RED, BUZZER, beep_s=0.01)
    st = TagStation(Reader(emulated_mfrc522(emu)), fb, poll_s=0.01)
    yield st
    fb.close()


def rises(pin) -> int:
    states = [s.state for s in pin.states]
    return sum(1 for a, b in itertools.pairwise(states) if b and not a)


def test_the_adapter_is_the_mfrc522_package_class_on_the_emulator(emu):
    before = {k: sys.modules.get(k) for k in ("RPi", "RPi.GPIO", "spidev")}
    mf = emulated_mfrc522(emu)
    assert type(mf).__name__ == "MFRC522"
    assert type(mf).__module__ == "_mfrc522_station"
    code_file = type(mf).MFRC522_Request.__code__.co_filename.replace("\\", "/")
    assert code_file.endswith("mfrc522/MFRC522.py"), code_file  # the installed package's code
    for name in ("MFRC522_Request", "MFRC522_Anticoll", "MFRC522_SelectTag", "MFRC522_Auth",
                 "MFRC522_Read", "MFRC522_Write", "MFRC522_ToCard", "CalulateCRC"):
        assert callable(getattr(mf, name))
    assert mf.Read_MFRC522(mf.VersionReg) == 0x92  # its SPI reaches the emulated chip
    assert emu.field_on  # MFRC522_Init switched the antenna on
    assert {k: sys.modules.get(k) for k in ("RPi", "RPi.GPIO", "spidev")} == before  # stand-ins did not leak


def test_writes_an_ndef_text_identity_on_a_blank_ntag_and_lights_green(station, emu, pins):
    tag = emu.place(NtagTag(UID7))
    res = station.program("S-1001", timeout=1)
    assert res.ok, res.line()
    assert (res.uid, res.tech, res.found) == (UID7.hex(), "ntag213", "S-1001")
    # what the pad firmware reads from the tag (same rules, gateway/kinds/sample_pad/tags.py)
    records = tags.ntag_records_from_pages(bytes(tag.mem))
    assert records[0].is_text and records[0].text == "S-1001"
    assert tags.sample_id_from_records(records) == "S-1001"
    assert pins.pin(GREEN).state and not pins.pin(RED).state
    assert rises(pins.pin(BUZZER)) == 0
    assert tag.state == "HALT"  # the station halts a finished tag


def test_uri_identity_on_an_ntag216(emu, pins):
    tag = emu.place(NtagTag(UID7, "ntag216"))
    st = TagStation(Reader(emulated_mfrc522(emu)), Feedback(GREEN, RED, BUZZER, beep_s=0.01),
                    uri_base="https://id.phygital.example/s/", poll_s=0.01)
    res = st.program("S-1003", timeout=1)
    assert res.ok and res.tech == "ntag216", res.line()
    records = tags.ntag_records_from_pages(bytes(tag.mem))
    assert records[0].is_uri and records[0].uri == "https://id.phygital.example/s/S-1003"
    st.feedback.close()


def test_writes_block_4_of_a_mifare_classic(station, emu):
    tag = emu.place(MifareClassic1K(bytes.fromhex("a1b2c3d4")))
    res = station.program("S-2001", timeout=1)
    assert res.ok and res.tech == "mifare-1k", res.line()
    assert tag.block(4) == tags.mifare_block4("S-2001")
    assert not emu.crypto1_on  # the station switched Crypto1 off again


def test_a_finished_tag_left_on_the_reader_is_not_written_again(station, emu, pins):
    tag = emu.place(NtagTag(UID7))
    assert station.program("S-1001", timeout=1).ok
    second = station.program("S-1002", timeout=0.3)  # REQA: the halted tag stays quiet
    assert not second.ok and "no tag" in second.reason
    assert tags.sample_id_from_records(tags.ntag_records_from_pages(bytes(tag.mem))) == "S-1001"
    assert pins.pin(RED).state and not pins.pin(GREEN).state
    assert rises(pins.pin(BUZZER)) == 3
    # verify uses WUPA, which wakes it
    assert station.verify("S-1001", timeout=1).ok
    assert pins.pin(GREEN).state


def test_verify_tells_which_identity_a_tag_really_holds(station, emu, pins):
    emu.place(NtagTag.with_text(UID7, "S-1002"))
    res = station.verify("S-1001", timeout=1)
    assert not res.ok and res.found == "S-1002" and "S-1002" in res.reason
    assert pins.pin(RED).state and rises(pins.pin(BUZZER)) == 3


def test_wrong_mifare_key_fails_red_with_the_reason(station, emu, pins):
    emu.place(MifareClassic1K(bytes.fromhex("a1b2c3d4"), key_a=bytes.fromhex("a0a1a2a3a4a5")))
    res = station.program("S-2001", timeout=1)
    assert not res.ok and "key" in res.reason
    assert pins.pin(RED).state and not pins.pin(GREEN).state and rises(pins.pin(BUZZER)) == 3


def test_identity_too_long_for_an_ntag213_is_refused_before_writing(station, emu):
    tag = emu.place(NtagTag(UID7))
    blank = bytes(tag.mem)
    res = station.program("S-" + "x" * 200, timeout=1)
    assert not res.ok and "holds" in res.reason
    assert bytes(tag.mem) == blank


def test_a_tag_not_formatted_for_ndef_is_refused(station, emu):
    pages = bytearray(16 * 4)
    pages[12:16] = b"\x12\x34\x56\x78"  # capability container of something else
    emu.place(NtagTag(UID7, pages=bytes(pages)))
    res = station.program("S-1001", timeout=1)
    assert not res.ok and "capability container" in res.reason


def test_removal_is_seen_after_the_tag_leaves(station, emu):
    emu.place(NtagTag(UID7))
    assert station.program("S-1001", timeout=1).ok
    assert not station.wait_removed(timeout=0.3)  # still on the reader (halted, answers WUPA)
    emu.remove()
    assert station.wait_removed(timeout=2)
    assert not station.feedback.green.value  # back to idle for the next tag
