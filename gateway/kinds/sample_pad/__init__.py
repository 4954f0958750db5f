"""Sample pads: RFID pads next to kiosks and the sample catalog (docs/protocol.md)."""
