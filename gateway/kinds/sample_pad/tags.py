"""Tag content for sample pads: NDEF on NTAG21x, block 4 on MIFARE Classic 1K (CPython, no hardware).

What the firmware reads (docs/protocol.md, "Sample pad"):

* NTAG21x: an NDEF message in a TLV (``03 len ... FE``) from page 4, after the capability
  container on page 3 (``E1 10 <size/8> 00``). The sample id is the text of the first
  Text record, else the last path segment of the first URI record that has one.
* MIFARE Classic 1K: block 4, ASCII, NUL-padded, read with the default key A.

This module writes such content (for the emulator, for provisioning tags) and reads it back
with the same rules as the firmware (``firmware/edge/ndef.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

# NTAG21x memory map (NXP NTAG213/215/216 datasheet, section 8.5): total pages, last user
# page, capability container size byte, GET_VERSION storage-size byte, dynamic lock page.
NTAG_KINDS: dict[str, dict[str, int]] = {
    "ntag213": {"pages": 45, "user_first": 4, "user_last": 39, "cc_size": 0x12, "storage": 0x0F,
                "dyn_lock": 0x28},
    "ntag215": {"pages": 135, "user_first": 4, "user_last": 129, "cc_size": 0x3E, "storage": 0x11,
                "dyn_lock": 0x82},
    "ntag216": {"pages": 231, "user_first": 4, "user_last": 225, "cc_size": 0x6D, "storage": 0x13,
                "dyn_lock": 0xE2},
}

# NFC Forum URI Record Type Definition, table 3: URI identifier codes.
URI_PREFIXES: tuple[str, ...] = (
    "", "http://www.", "https://www.", "http://", "https://", "tel:", "mailto:",
    "ftp://anonymous:anonymous@", "ftp://ftp.", "ftps://", "sftp://", "smb://", "nfs://",
    "ftp://", "dav://", "news:", "telnet://", "imap:", "rtsp://", "urn:", "pop:", "sip:",
    "sips:", "tftp:", "btspp://", "btl2cap://", "btgoep://", "tcpobex://", "irdaobex://",
    "file://", "urn:epc:id:", "urn:epc:tag:", "urn:epc:pat:", "urn:epc:raw:", "urn:epc:",
    "urn:nfc:",
)

TNF_WELL_KNOWN = 0x01

TLV_NULL, TLV_LOCK, TLV_MEMORY, TLV_NDEF, TLV_PROPRIETARY, TLV_TERMINATOR = 0x00, 0x01, 0x02, 0x03, 0xFD, 0xFE


@dataclass
class NdefRecord:
    tnf: int
    type: bytes
    payload: bytes
    id: bytes = b""

    @property
    def is_text(self) -> bool:
        return self.tnf == TNF_WELL_KNOWN and self.type == b"T"

    @property
    def is_uri(self) -> bool:
        return self.tnf == TNF_WELL_KNOWN and self.type == b"U"

    @property
    def text(self) -> str | None:
        """The text of a Text record (UTF-8 or UTF-16), else None."""
        if not self.is_text or not self.payload:
            return None
        status = self.payload[0]
        body = self.payload[1 + (status & 0x3F):]
        return body.decode("utf-16" if status & 0x80 else "utf-8", "replace")

    @property
    def lang(self) -> str | None:
        if not self.is_text or not self.payload:
            return None
        return self.payload[1:1 + (self.payload[0] & 0x3F)].decode("ascii", "replace")

    @property
    def uri(self) -> str | None:
        """The full URI of a URI record (prefix code expanded), else None."""
        if not self.is_uri or not self.payload:
            return None
        code = self.payload[0]
        prefix = URI_PREFIXES[code] if code < len(URI_PREFIXES) else ""
        return prefix + self.payload[1:].decode("utf-8", "replace")

    def encode(self, mb: bool = True, me: bool = True) -> bytes:
        if len(self.type) > 255 or len(self.id) > 255:
            raise ValueError("NDEF type/id too long")
        short = len(self.payload) < 256
        hdr = (0x80 if mb else 0) | (0x40 if me else 0) | (0x10 if short else 0) | \
              (0x08 if self.id else 0) | (self.tnf & 0x07)
        out = bytearray([hdr, len(self.type)])
        out += bytes([len(self.payload)]) if short else len(self.payload).to_bytes(4, "big")
        if self.id:
            out.append(len(self.id))
        out += self.type + self.id + self.payload
        return bytes(out)


def ndef_text_record(text: str, lang: str = "en") -> NdefRecord:
    """A well-known Text record ('T'), UTF-8, language code `lang`."""
    lb = lang.encode("ascii")
    if len(lb) > 0x3F:
        raise ValueError("language code too long")
    return NdefRecord(TNF_WELL_KNOWN, b"T", bytes([len(lb)]) + lb + text.encode("utf-8"))


def ndef_uri_record(uri: str) -> NdefRecord:
    """A well-known URI record ('U') with the longest matching identifier-code prefix."""
    code, best = 0, ""
    for i, p in enumerate(URI_PREFIXES):
        if p and uri.startswith(p) and len(p) > len(best):
            code, best = i, p
    return NdefRecord(TNF_WELL_KNOWN, b"U", bytes([code]) + uri[len(best):].encode("utf-8"))


def ndef_message(records: list[NdefRecord]) -> bytes:
    """Concatenate records, setting MB on the first and ME on the last."""
    if not records:
        return b""
    n = len(records)
    return b"".join(r.encode(mb=(i == 0), me=(i == n - 1)) for i, r in enumerate(records))


def ndef_tlv(message: bytes) -> bytes:
    """NDEF message TLV followed by the terminator TLV."""
    n = len(message)
    length = bytes([n]) if n < 0xFF else b"\xff" + n.to_bytes(2, "big")
    return bytes([TLV_NDEF]) + length + message + bytes([TLV_TERMINATOR])


def parse_ndef_message(msg: bytes) -> list[NdefRecord]:
    """Records of an NDEF message (raises ValueError on truncation)."""
    out: list[NdefRecord] = []
    i = 0
    while i < len(msg):
        hdr = msg[i]
        if i + 2 > len(msg):
            raise ValueError("truncated record header")
        tlen = msg[i + 1]
        i += 2
        if hdr & 0x10:
            plen = msg[i]
            i += 1
        else:
            plen = int.from_bytes(msg[i:i + 4], "big")
            i += 4
        idlen = 0
        if hdr & 0x08:
            idlen = msg[i]
            i += 1
        end = i + tlen + idlen + plen
        if end > len(msg):
            raise ValueError("truncated record")
        rtype = msg[i:i + tlen]
        rid = msg[i + tlen:i + tlen + idlen]
        payload = msg[i + tlen + idlen:end]
        out.append(NdefRecord(hdr & 0x07, bytes(rtype), bytes(payload), bytes(rid)))
        i = end
        if hdr & 0x40:  # ME
            break
    return out


def find_ndef_tlv(data: bytes) -> bytes | None:
    """The value of the first NDEF TLV in a Type 2 tag data area (from page 4), or None."""
    i = 0
    while i < len(data):
        t = data[i]
        if t == TLV_NULL:
            i += 1
            continue
        if t == TLV_TERMINATOR:
            return None
        if i + 1 >= len(data):
            return None
        n = data[i + 1]
        i += 2
        if n == 0xFF:
            if i + 2 > len(data):
                return None
            n = int.from_bytes(data[i:i + 2], "big")
            i += 2
        if t == TLV_NDEF:
            if i + n > len(data):
                raise ValueError("truncated NDEF TLV")
            return bytes(data[i:i + n])
        i += n
    return None


def parse_ndef(tlv_bytes: bytes) -> list[NdefRecord]:
    """Records of the first NDEF TLV in `tlv_bytes` (the data area from page 4); [] if none."""
    msg = find_ndef_tlv(tlv_bytes)
    return parse_ndef_message(msg) if msg else []


def sample_id_from_uri(uri: str) -> str | None:
    """Last non-empty path segment of a hierarchical URI (`scheme://host/.../<id>`), else None."""
    rest = uri.split("#", 1)[0].split("?", 1)[0]
    if "://" not in rest:
        return None
    parts = rest.split("://", 1)[1].split("/")[1:]  # drop the host
    segs = [p for p in parts if p]
    return segs[-1] if segs else None


def sample_id_from_records(records: list[NdefRecord]) -> str | None:
    """The first Text record's text, else the id in the first URI record that has one."""
    for r in records:
        if r.is_text:
            t = (r.text or "").strip()
            return t or None
    for r in records:
        if r.is_uri:
            sid = sample_id_from_uri(r.uri or "")
            if sid:
                return sid
    return None


def ntag_capability_container(kind: str) -> bytes:
    return bytes([0xE1, 0x10, NTAG_KINDS[kind]["cc_size"], 0x00])


def ntag_pages_for_records(records: list[NdefRecord], kind: str = "ntag213") -> bytes:
    """Pages 0..last user page of an NTAG21x holding `records`.

    Pages 0-2 (UID, BCC, lock bytes) are left zero: the tag (or emulator) owns them.
    """
    geo = NTAG_KINDS[kind]
    area = ndef_tlv(ndef_message(records))
    user = (geo["user_last"] - geo["user_first"] + 1) * 4
    if len(area) > user:
        raise ValueError(f"NDEF message of {len(area)} bytes does not fit {kind} ({user} bytes)")
    mem = bytearray(4 * (geo["user_last"] + 1))
    mem[12:16] = ntag_capability_container(kind)
    mem[16:16 + len(area)] = area
    return bytes(mem)


def ntag_pages_for_text(text: str, kind: str = "ntag213") -> bytes:
    return ntag_pages_for_records([ndef_text_record(text)], kind)


def ntag_pages_for_uri(uri: str, kind: str = "ntag213") -> bytes:
    return ntag_pages_for_records([ndef_uri_record(uri)], kind)


def ntag_records_from_pages(pages: bytes) -> list[NdefRecord]:
    """Parse the NDEF records of an NTAG memory image (pages from 0)."""
    if len(pages) < 16 or pages[12] != 0xE1:
        return []
    return parse_ndef(pages[16:])


def mifare_block4(sample_id: str) -> bytes:
    """Block 4 of a MIFARE Classic 1K sample tag: ASCII id, NUL-padded to 16 bytes."""
    raw = sample_id.encode("ascii")
    if not raw or len(raw) > 16 or b"\x00" in raw:
        raise ValueError("sample id must be 1-16 ASCII characters")
    return raw.ljust(16, b"\x00")


def sample_id_from_block4(block: bytes) -> str | None:
    """Inverse of mifare_block4, with the firmware's rules (printable ASCII up to the first NUL)."""
    raw = bytes(block).split(b"\x00", 1)[0].strip(b" ")
    if not raw or any(c < 0x20 or c > 0x7E for c in raw):
        return None
    return raw.decode("ascii")


# --- garments (fitting rooms): GS1 Digital Link, docs/fitting-rooms.md -----------------------

def ntag_pages_for_garment(gtin: str, serial: str, kind: str = "ntag213",
                           resolver: str | None = None) -> bytes:
    """NTAG pages holding one garment's GS1 Digital Link URI record (GTIN check digit checked)."""
    from gateway.kinds.fitting_room import gs1

    return ntag_pages_for_uri(gs1.digital_link(gtin, serial, resolver or gs1.DEFAULT_RESOLVER), kind)


def garment_from_records(records: list[NdefRecord]) -> tuple[str, str] | None:
    """(GTIN-14, serial) of the first URI record that is a valid GS1 Digital Link, else None."""
    from gateway.kinds.fitting_room import gs1

    for r in records:
        if r.is_uri:
            try:
                return gs1.parse_digital_link(r.uri or "")
            except gs1.Gs1Error:
                continue
    return None
