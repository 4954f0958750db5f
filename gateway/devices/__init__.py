"""Devices tier: the device protocol, ingest (persist before ack), commands, liveness and alerts, for every kind."""
