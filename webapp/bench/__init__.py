"""Benchmarks of the web front end (see `medplib bench page`)."""
