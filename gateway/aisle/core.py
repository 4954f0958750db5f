"""The endless aisle's rules, without I/O (docs/endless-aisle.md): where a wanted product comes
from, what a customer's contact looks like, how it is shown masked, the message that carries a
pickup code, and the outbox's backoff.

* **route**: the stock source says where the wanted GTIN is (`fitting_room.stock.where_to_fetch`):
  `floor` → nothing to fetch (an associate shows the customer where); `stockroom` → the tube
  brings it to the station nearest the screen that asked; another store, or unknown stock
  everywhere → an order for click-and-collect into a locker of this store.
* **contact**: an SMS number (E.164, `+` and 8-15 digits) or an e-mail address (at most 254
  characters, one `@`, a dot in the domain); only the order path needs one.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

PHONE_RE = re.compile(r"\+[1-9][0-9]{7,14}\Z")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+\Z")
CHANNELS = ("sms", "email")
MAX_EMAIL = 254

#: what the customer receives once the parcel is in its locker; `{code}` is filled in by the
#: outbox at the moment of sending, from the locker service's memory (never stored)
MESSAGES = {
    "en": "Your {name} is ready: locker {bank}, door {compartment}. Pickup code {code} "
          "(valid until {until}).",
    "fr": "Votre {name} est arrivé : casier {bank}, porte {compartment}. Code de retrait {code} "
          "(valable jusqu'au {until}).",
}


class AisleError(ValueError):
    """A request the aisle refuses: `reason` (stable, for the screens) and what to do."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def route_for(where: str | None) -> str:
    """`where_to_fetch`'s answer → the aisle's route: `floor`, `tube` or `order`."""
    if where == "floor":
        return "floor"
    if where == "stockroom":
        return "tube"
    return "order"  # another store has it, or no store does: the order system decides


def check_contact(channel: str, to: str) -> str:
    """The contact as it will be used (trimmed, e-mail lower-cased), or AisleError."""
    to = to.strip()
    if channel == "sms":
        if not PHONE_RE.match(to):
            raise AisleError("bad-contact", "an SMS number is + then 8 to 15 digits, with the "
                                            "country code (e.g. +33612345678)")
        return to
    if channel == "email":
        if len(to) > MAX_EMAIL or not EMAIL_RE.match(to):
            raise AisleError("bad-contact", "an e-mail address is name@domain, e.g. ann@example.com "
                                            f"(at most {MAX_EMAIL} characters)")
        return to.lower()
    raise AisleError("bad-contact", f"contact channel must be one of {', '.join(CHANNELS)}")


def mask(channel: str, to: str) -> str:
    """What a screen, the audit and the delivery log show of a contact: enough for a customer
    to recognise theirs, not enough to reach them."""
    if channel == "sms":
        return to[:3] + "•" * max(0, len(to) - 5) + to[-2:]
    local, _, domain = to.partition("@")
    return local[:1] + "•••@" + domain


def request_digest(body: dict[str, Any]) -> str:
    """What an idempotency key stands for: the same key with another request is a conflict."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def message_text(lang: str, *, name: str, bank: str, compartment: int, until: str, code: str) -> str:
    template = MESSAGES.get(lang) or MESSAGES.get(lang.split("-")[0]) or MESSAGES["en"]
    return template.format(name=name, bank=bank, compartment=compartment,
                                                      until=until, code=code)


def backoff_s(attempts: int, lo: float, hi: float, rng: random.Random | None = None) -> float:
    """The wait before attempt `attempts + 1`: `lo` doubling up to `hi`, jittered ±25 %."""
    base: float = min(hi, lo * 2.0 ** max(0, attempts - 1))
    return base * (0.75 + 0.5 * (rng or random).random())


def scrub(text: str, secret: str | None) -> str:
    """An error text with the secret taken out (a sender's error may quote the message)."""
    return text.replace(secret, "[redacted]") if secret else text
