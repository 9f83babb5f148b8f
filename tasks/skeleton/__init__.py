"""Skeletons per segment: kimimaro's TEASAR per chunk and the merge across chunks."""
