"""The learner's shared environment base (base.py)."""
