"""Patch-based training: splits, data loading, optimisation, validation, checkpoints, resume."""
