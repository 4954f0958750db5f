"""GS1 garment identity: GTIN check digits and GS1 Digital Link URIs (pure, no I/O).

A garment tag carries `https://id.gs1.org/01/<GTIN-14>/21/<serial>` (GS1 Digital Link 1.x,
AI 01 = GTIN, AI 21 = serial number) as an NDEF URI record; docs/fitting-rooms.md, "Tags".
Used by the tag station (gateway/kinds/sample_pad/tags.py) to write tags and by the gateway to read events.
"""
from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

DEFAULT_RESOLVER = "https://id.gs1.org"
# AI 21: 1-20 characters of GS1 "character set 82" (printable ASCII less a few); in a URI
# they are percent-encoded where needed
_CSET82 = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}\Z")
_DL_PATH = re.compile(r"(?:.*/)?01/(\d{8}|\d{12,14})/21/([^/]+)/?\Z")


class Gs1Error(ValueError):
    pass


def check_digit(body: str) -> int:
    """GS1 mod-10 check digit of the digits `body` (the GTIN without its last digit)."""
    if not body.isdigit():
        raise Gs1Error(f"GTIN digits expected, got {body!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def normalise_gtin(gtin: str) -> str:
    """GTIN-8/12/13/14 -> GTIN-14 (zero-padded); raises Gs1Error with the reason."""
    g = str(gtin).strip()
    if not g.isdigit() or len(g) not in (8, 12, 13, 14):
        raise Gs1Error(f"GTIN {gtin!r} must be 8, 12, 13 or 14 digits")
    want = check_digit(g[:-1])
    if int(g[-1]) != want:
        raise Gs1Error(f"GTIN {gtin!r} has check digit {g[-1]}, expected {want}")
    return g.zfill(14)


def validate_serial(serial: str) -> str:
    if not isinstance(serial, str) or not _CSET82.match(serial):
        raise Gs1Error(f"serial {serial!r} must be 1-20 characters of the GS1 set "
                       "(letters, digits and !\"%&'()*+,-./:;<=>?_)")
    return serial


def digital_link(gtin: str, serial: str, resolver: str = DEFAULT_RESOLVER) -> str:
    """The GS1 Digital Link URI of one garment (GTIN normalised to 14 digits)."""
    return (f"{resolver.rstrip('/')}/01/{normalise_gtin(gtin)}"
            f"/21/{quote(validate_serial(serial), safe='')}")


def parse_digital_link(uri: str) -> tuple[str, str]:
    """(GTIN-14, serial) from a GS1 Digital Link URI; raises Gs1Error if it is not one or the
    GTIN's check digit is wrong."""
    path = urlsplit(uri).path if "://" in uri else uri
    m = _DL_PATH.match(path)
    if not m:
        raise Gs1Error(f"{uri!r} is not a GS1 Digital Link with /01/<GTIN>/21/<serial>")
    return normalise_gtin(m.group(1)), validate_serial(unquote(m.group(2)))
