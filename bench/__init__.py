"""Benchmarks: they print tables and write JSON; never run as tests."""
