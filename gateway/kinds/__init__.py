"""The device kinds: one folder per kind (core.py pure, service.py, api.py, demo.py)."""
