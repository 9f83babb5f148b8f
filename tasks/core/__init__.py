"""The core every job stands on: geometry, storage, layers, shards, sources, values, errors."""
