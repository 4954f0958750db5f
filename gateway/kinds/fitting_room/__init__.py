"""Fitting rooms: readers that recognise garments, the mirror page, sizes by tube (docs/fitting-rooms.md)."""
