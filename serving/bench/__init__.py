"""Benchmarks of the platform itself (queue overhead, load); JSON out, never timed tests."""
