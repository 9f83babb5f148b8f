"""`petavox plan`: what a run config will cost before it runs, from its plans alone."""
