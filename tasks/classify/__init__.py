"""Cell classes: a classifier on the morphology table's features, and its outputs."""
