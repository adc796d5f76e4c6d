"""Trigger stores: memory (tests), SQLite (embedded server), Redis (distributed)."""

RECORDS_KEPT = 10_000
"""Decisions kept per workflow; older ones are dropped."""
