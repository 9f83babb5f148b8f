"""Synthetic EM volumes with ground truth, and known misalignments."""
