"""Image layers: an image stack ingested as a layer, and mip pyramids."""
