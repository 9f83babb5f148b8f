"""Boundary and affinity prediction: ONNX models, overlapping patches, blending."""
