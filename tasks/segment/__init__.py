"""Segmentation: watershed fragments, agglomeration, global ids and stitching."""
