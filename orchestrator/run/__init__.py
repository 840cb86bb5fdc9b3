"""Executing a plan: hosts up, sides, steps, checkpoints, result, teardown."""
