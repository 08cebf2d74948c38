"""MEMS mirror stabilisation: PID, the stabilize and rl-pid tick modes."""
