"""Storage tier: SQLite in WAL on two threads (db.py), the schema, migrations and queries (store.py)."""
