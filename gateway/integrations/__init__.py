"""Integrations tier: webhooks, Prometheus metrics and the chain of stores."""
