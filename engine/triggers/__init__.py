"""Trigger logic: the pure parts of turning an outside fact into a run (signature checks)."""
