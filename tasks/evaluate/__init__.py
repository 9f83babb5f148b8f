"""Scoring against ground truth: segmentation metrics and synapse scores."""
