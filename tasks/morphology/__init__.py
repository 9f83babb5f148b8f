"""Per-segment morphology: statistics computed chunk by chunk and merged per segment."""
