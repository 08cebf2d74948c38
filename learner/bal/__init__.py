"""Backward action learning, host side (issue #23): training, references, evaluation, export."""
