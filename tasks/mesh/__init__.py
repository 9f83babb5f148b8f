"""Surface meshes per segment: zmesh fragments, legacy and multi-resolution formats."""
