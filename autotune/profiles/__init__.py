"""Profiles on disk: reading, writing, identity, the catalog, warm starts and soak checks."""
