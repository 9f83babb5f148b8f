"""Errors a user can act on. Each message names the thing at fault and, where possible, the fix."""

from __future__ import annotations


class PetavoxError(Exception):
    """Base of every error petavox raises on purpose."""


class InputError(PetavoxError):
    """Bad input (a layer, a source, a parameter): never retried, reported before work starts."""


class LayerNotFoundError(InputError):
    """There is no precomputed layer (no `info` file) at a URL."""


class LayerMismatchError(InputError):
    """A layer exists but its info disagrees with what a stage needs (dtype, type, chunking)."""


class ChunkDataError(InputError):
    """An input chunk is missing or cannot be decoded."""

    def __init__(self, layer_url: str, chunk_key: str, problem: str) -> None:
        self.layer_url = layer_url
        self.chunk_key = chunk_key
        self.problem = problem
        super().__init__(f"layer {layer_url}: chunk {chunk_key} {problem}")

    def __reduce__(self):  # keep the fields when pickled across processes
        return (type(self), (self.layer_url, self.chunk_key, self.problem))


class ValueRangeError(InputError):
    """Voxel values a stage cannot use: NaN or infinite floats, or floats outside the range it
    needs (e.g. 0-1). The message names the source or layer, the box, the counts and the fix."""


class MisalignedWriteError(PetavoxError):
    """A write that does not cover whole storage chunks: a bug in the caller, never a fallback."""
