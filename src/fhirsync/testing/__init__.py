"""Helpers shared by tests, benchmarks and the demo: real nodes on loopback, a faulty proxy."""
