"""Garment tags: GTIN check digits, GS1 Digital Link URIs, the tag station writing them and
the firmware reading them (docs/fitting-rooms.md, "Tags")."""
from __future__ import annotations

import pytest

from gateway.kinds.fitting_room import gs1
from gateway.kinds.sample_pad import tags
from hil.sim.mfrc522 import MFRC522Emulator, MifareClassic1K, NtagTag
from tests.support.micropython import run_micropython
from tools.tagstation import Feedback, Reader, TagStation, emulated_mfrc522

UID7 = bytes.fromhex("04a1b2c3d4e5f6")


@pytest.mark.parametrize("body,digit", [("950600013435", 2), ("400638133393", 1), ("0950600013435", 2),
                                        ("9638507", 4), ("03600029145", 2)])
def test_check_digit_known_gtins(body, digit):
    # GS1 examples: 9506000134352 (GTIN-13), 40063813339 31, 96385074, 036000291452 (UPC-A)
    assert gs1.check_digit(body) == digit


def test_normalise_gtin_pads_and_refuses_wrong_check_digit():
    assert gs1.normalise_gtin("9506000134352") == "09506000134352"
    assert gs1.normalise_gtin("96385074") == "00000096385074"
    with pytest.raises(gs1.Gs1Error, match="check digit 3, expected 2"):
        gs1.normalise_gtin("9506000134353")
    with pytest.raises(gs1.Gs1Error, match="8, 12, 13 or 14 digits"):
        gs1.normalise_gtin("12345")


def test_digital_link_round_trip_with_escaped_serial():
    uri = gs1.digital_link("9506000134352", "A/17")
    assert uri == "https://id.gs1.org/01/09506000134352/21/A%2F17"
    assert gs1.parse_digital_link(uri) == ("09506000134352", "A/17")
    with pytest.raises(gs1.Gs1Error, match="GS1 set"):
        gs1.digital_link("9506000134352", "A 17")  # a space is not in the GS1 set
    with pytest.raises(gs1.Gs1Error):
        gs1.digital_link("9506000134352", "x" * 21)  # AI 21 is at most 20 characters
    assert gs1.parse_digital_link(gs1.digital_link("9506000134352", "SN-0042")) == ("09506000134352", "SN-0042")
    assert gs1.parse_digital_link("https://shop.example/p/01/09506000134352/21/7?x=1") == ("09506000134352", "7")
    with pytest.raises(gs1.Gs1Error, match="check digit"):
        gs1.parse_digital_link("https://id.gs1.org/01/09506000134353/21/7")
    with pytest.raises(gs1.Gs1Error, match="not a GS1 Digital Link"):
        gs1.parse_digital_link("https://id.phygital.example/s/S-1003")


def test_garment_pages_parse_back():
    pages = tags.ntag_pages_for_garment("9506000134352", "SN-1")
    assert tags.garment_from_records(tags.ntag_records_from_pages(pages)) == ("09506000134352", "SN-1")
    with pytest.raises(gs1.Gs1Error):
        tags.ntag_pages_for_garment("9506000134353", "SN-1")


def test_tag_station_writes_a_garment_and_refuses_a_bad_gtin(pins):
    emu = MFRC522Emulator(timing="realtime")
    fb = Feedback(23, 24, 18, beep_s=0.01)
    st = TagStation(Reader(emulated_mfrc522(emu)), fb, poll_s=0.01, gs1=True)
    try:
        tag = emu.place(NtagTag(UID7))
        res = st.program("9506000134352/SN-0042", timeout=1)
        assert res.ok, res.line()
        assert res.found == "09506000134352/SN-0042"
        rec = tags.ntag_records_from_pages(bytes(tag.mem))[0]
        assert rec.uri == "https://id.gs1.org/01/09506000134352/21/SN-0042"
        emu.place(NtagTag(bytes.fromhex("04a1b2c3d4e5f7")))
        bad = st.program("9506000134353/SN-0043", timeout=1)
        assert not bad.ok and "check digit" in bad.reason
        assert pins.pin(24).state  # red
        emu.place(MifareClassic1K(bytes.fromhex("a1b2c3d4")))
        res = st.program("9506000134352/SN-0044", timeout=1)
        assert not res.ok and "NTAG21x" in res.reason
    finally:
        fb.close()


def test_firmware_reads_gtin_and_serial_like_the_gateway():
    cases = {"https://id.gs1.org/01/09506000134352/21/SN-0042": ["09506000134352", "SN-0042"],
             "https://brand.example/01/9506000134352/21/A%2F7?lot=3": ["9506000134352", "A%2F7"],
             "https://id.phygital.example/s/S-1003": None}
    code = "import json\nfrom edge.ndef import find_tlv\nfrom edge.gs1 import gs1_ids\nout = []\n"
    for uri in cases:
        area = tags.ntag_pages_for_uri(uri)[16:]
        code += (f"b = {bytes(area)!r}\ns, n = find_tlv(b, len(b))\n"
                 f"r = gs1_ids(b, s, n)\nout.append(None if r is None else list(r))\n")
    code += "print(json.dumps(out))\n"
    proc = run_micropython(code)
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads(proc.stdout) == list(cases.values())
