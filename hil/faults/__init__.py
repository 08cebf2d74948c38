"""Fault injectors: network (proxy, attacks), serial (emulator control line), processes, models."""
