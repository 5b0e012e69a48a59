"""Worker apps for tests/test_bridges.py: one per task queue, started as real workers."""
