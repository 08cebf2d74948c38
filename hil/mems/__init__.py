"""The MEMS demo: train, push, and the Wiener test against the baselines."""
