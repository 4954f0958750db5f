"""HTTP tier: the FastAPI app (api.py), auth and scopes, body limits, the live stream,
redaction, the staff and ops pages."""
