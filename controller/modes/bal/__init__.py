"""Backward action learning (issue #23): the controlled-SDE problems, the direct filter and the forge mode."""
