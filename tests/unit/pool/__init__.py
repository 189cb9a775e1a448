"""Unit tests of the pool, with its adapters served in-process (InProcessLauncher)."""
