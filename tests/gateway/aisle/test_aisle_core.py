"""The endless aisle's pure rules (gateway/aisle/core.py): routes, contacts, masks, the message."""
from __future__ import annotations

import random

import pytest

from gateway.aisle.core import AisleError, backoff_s, check_contact, mask, message_text, route_for, scrub


def test_route_from_where_the_stock_is():
    assert [route_for(w) for w in ("floor", "stockroom", "store:store-b", None)] == \
        ["floor", "tube", "order", "order"]


@pytest.mark.parametrize("channel,to,want", [
    ("sms", " +33612345678 ", "+33612345678"), ("email", "Ann.Lee@Example.org", "ann.lee@example.org")])
def test_contacts_accepted(channel, to, want):
    assert check_contact(channel, to) == want


@pytest.mark.parametrize("channel,to", [
    ("sms", "0612345678"), ("sms", "+0612345678"), ("sms", "+33 6 12"), ("sms", "+" + "1" * 16),
    ("email", "no-at.example.org"), ("email", "a@b"), ("email", "a" * 250 + "@x.org"), ("fax", "+33612345678")])
def test_contacts_refused_with_an_example(channel, to):
    with pytest.raises(AisleError) as exc:
        check_contact(channel, to)
    assert exc.value.reason == "bad-contact" and ("e.g." in exc.value.detail or "one of" in exc.value.detail)


def test_masks_keep_enough_to_recognise_not_to_reach():
    assert mask("sms", "+33612345678") == "+33•••••••78"
    assert mask("email", "ann.lee@example.org") == "a•••@example.org"


def test_message_languages_and_scrub():
    kw = {"name": "Oak plank", "bank": "lk-1", "compartment": 3, "until": "2026-12-10 18:00", "code": "123456"}
    assert message_text("fr", **kw).startswith(
        "Votre Oak plank est arrivé : casier lk-1, porte 3. Code de retrait 123456")
    assert message_text("fr-BE", **kw) == message_text("fr", **kw)
    assert message_text("nl", **kw) == message_text("en", **kw) and "code 123456" in message_text("en", **kw)
    assert scrub("gateway said: 'Your code 123456'", "123456") == "gateway said: 'Your code [redacted]'"


def test_backoff_doubles_up_to_the_cap_jittered():
    rng = random.Random(1)
    waits = [backoff_s(n, 1.0, 8.0, rng) for n in range(1, 8)]
    assert all(0.75 * min(8, 2 ** (n - 1)) <= w <= 1.25 * min(8, 2 ** (n - 1)) for n, w in zip(range(1, 8), waits))
