"""Worker side of petavox: geometry, layer I/O and per-chunk kernels. Never imports Ray."""
