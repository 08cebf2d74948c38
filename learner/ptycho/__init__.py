"""Adaptive ptychography scanning on the host: metrics, the full-grid reference, the environment and training."""
