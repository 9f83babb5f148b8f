"""Montage: stitch each section's overlapping tiles into one section image."""
