"""What the reconstruction says: statistics over the morphology, classes and connectome tables."""
