"""The usage ledger: one row per generation, quotas and reports, in SQLite."""
