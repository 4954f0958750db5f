"""The pneumatic tube: stations, the line and the arbiter (docs/tube.md)."""
