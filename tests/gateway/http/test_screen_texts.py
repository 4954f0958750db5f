"""The customer screens' texts ([screens], gateway/http/screen_texts.py): the store's words
override the built-in ones per language and point; a bad file is refused with what to fix."""
from __future__ import annotations

import json

import pytest

from gateway.http.screen_texts import MAX_FILE_BYTES, MAX_TEXT, ScreenTexts, TextsError, inject


def test_store_words_override_per_language_and_point():
    t = ScreenTexts({"fr": {"kiosk_title": "Nos échantillons"},
                     "points": {"pad-1": {"fr": "celui près de la fenêtre fonctionne"}}}, "fr")
    page = t.for_page("pad-1")
    assert page["lang"] == "fr" and page["kiosk_title"] == "Nos échantillons"
    assert page["where"] == "celui près de la fenêtre fonctionne"
    assert page["kiosk_offline"].startswith("Ce présentoir se repose")  # built-in French
    en = t.for_page("pad-1", "en")  # no English words for pad-1: the default where
    assert en["lang"] == "en" and en["where"] == "an associate will be happy to help"
    assert t.for_page("pad-2", "xx")["lang"] == "fr"  # unknown language: the configured one


def test_a_new_language_falls_back_to_english_for_what_it_does_not_say():
    page = ScreenTexts({"nl-BE": {"kiosk_idle": "Leg een staal op het plaatje"}}).for_page("p", "nl-BE")
    assert page["kiosk_idle"] == "Leg een staal op het plaatje"
    assert page["price"] == "Price"


@pytest.mark.parametrize("data, says", [
    ({"en": {"kiosk_tilte": "x"}}, "unknown text"),
    ({"english": {"price": "x"}}, "not a language code"),
    ({"en": {"price": ""}}, "non-empty string"),
    ({"en": {"price": "x" * (MAX_TEXT + 1)}}, f"at most {MAX_TEXT}"),
    ({"points": {"pad-1": "the window"}}, "where to go instead"),
])
def test_a_bad_texts_file_is_refused_with_what_to_fix(data, says):
    with pytest.raises(TextsError, match=says):
        ScreenTexts(data)


def test_the_file_has_a_size_limit(tmp_path):
    big = tmp_path / "texts.json"
    big.write_text(json.dumps({"en": {"price": "x"}, "pad": "y" * MAX_FILE_BYTES}))
    with pytest.raises(TextsError, match=f"at most {MAX_FILE_BYTES}"):
        ScreenTexts.load(big)
    with pytest.raises(TextsError, match="not JSON"):
        (tmp_path / "bad.json").write_text("{")
        ScreenTexts.load(tmp_path / "bad.json")


def test_texts_cannot_close_the_page_script():
    html = inject("<script>const T = {{TEXTS}};</script>", "pad-1",
                  {"where": "</script><script>alert(1)</script>"})
    assert html.count("</script>") == 1


def test_rack_display_words_fit_its_font():
    """The rack display draws `rack_stale` with an 8x8 ASCII font on 128 px: 16 characters."""
    assert ScreenTexts(None, "fr").for_page("rack-1")["rack_stale"] == "DERNIER CHIFFRE"
    for bad in ("DERNIÈRE VALEUR", "X" * 17):
        with pytest.raises(TextsError, match="at most 16 printable ASCII"):
            ScreenTexts({"fr": {"rack_stale": bad}})
