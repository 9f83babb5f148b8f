"""Training the boundary/affinity U-Net (PyTorch; the `train` extra only)."""
