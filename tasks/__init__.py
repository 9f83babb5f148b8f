"""Worker side of petavox: what happens to one chunk, by product (core, image, ...). No Ray."""
