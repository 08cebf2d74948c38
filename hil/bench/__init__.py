"""Benchmarks (`edgetune bench …`); each prints one JSON object."""
