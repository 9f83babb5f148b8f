"""Serial-section alignment: section flows, the transform solve, rendering."""
