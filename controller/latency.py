"""Lateness statistics: a preallocated ring of per-tick samples (ns) and its percentiles (µs)."""
from __future__ import annotations

from typing import TypedDict

import numpy as np


class LatencySummary(TypedDict):
    n: int
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float


def summarize_ns(samples_ns: np.ndarray) -> LatencySummary:
    """p50/p99/p99.9/max of lateness samples given in ns, reported in µs (zeros when empty)."""
    a = np.asarray(samples_ns, dtype=np.float64)
    if a.size == 0:
        return LatencySummary(n=0, p50_us=0.0, p99_us=0.0, p999_us=0.0, max_us=0.0)
    p50, p99, p999 = np.percentile(a, [50.0, 99.0, 99.9]) / 1e3
    return LatencySummary(n=int(a.size), p50_us=float(p50), p99_us=float(p99), p999_us=float(p999),
                          max_us=float(a.max() / 1e3))


class LatencyRing:
    """Fixed-capacity ring of int64 samples; `add` is O(1) and allocation-free.

    `count` is the total number of samples ever added, so a reader can ask for what is new
    since its last visit (`since`) without the writer knowing about readers.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._buf = np.zeros(capacity, dtype=np.int64)
        self.capacity = capacity
        self.count = 0

    def add(self, value_ns: int) -> None:
        self._buf[self.count % self.capacity] = value_ns
        self.count += 1

    def values(self) -> np.ndarray:
        """The retained samples, oldest first (a copy)."""
        return self.since(0)[0]

    def since(self, count: int) -> tuple[np.ndarray, int]:
        """Samples added after the reader had seen `count` of them, oldest first, and how many of
        those were already overwritten (lost to the reader)."""
        end = self.count
        new = end - count
        if new < 0:
            raise ValueError(f"reader count {count} is ahead of the ring ({end})")
        lost = max(0, new - self.capacity)
        n = new - lost
        start = (end - n) % self.capacity
        if start + n <= self.capacity:
            out = self._buf[start:start + n].copy()
        else:
            out = np.concatenate((self._buf[start:], self._buf[:start + n - self.capacity]))
        return out, lost

    def summary(self) -> LatencySummary:
        return summarize_ns(self.values())
