"""Head office: `phygital central` consumes the chain of stores from the central broker
cluster and keeps it in PostgreSQL (docs/chain.md "Head office").

- messages.py: what a chain message must be (topic, envelope, sizes): refusals with a reason;
- schema.py: the PostgreSQL tables (events partitioned by month, the (store, seq) ledger, gap
  alerts, per-store state) and the batch write;
- consumer.py: the MQTT side (persistent session, QoS 1, acknowledged only after the
  PostgreSQL commit) and the `phygital central` command line.
"""
