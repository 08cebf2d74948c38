"""MEMS: the stand environment (simulated and live), DDPG training, evaluation, export and PID tuning baselines."""
