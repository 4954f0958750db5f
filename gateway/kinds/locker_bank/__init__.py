"""Locker banks: click-and-collect pickup lockers (docs/lockers.md)."""
