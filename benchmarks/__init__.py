"""Benchmarks for symgrad against its peers (see benchmarks/README.md)."""
