"""The `synapses` stage's task: detect the synapses one chunk owns and write its table.

A task reads the raw image and the segmentation on the chunk's read box (the write box grown by
the halo, clipped to the volume), runs the cleft-channel detector (`cleft_channel`) on the
cleft probability layer when there is one, else the classical detector (`detection`), and
writes ``<output>/chunks/<chunk id>.parquet`` (the `table` contract), also when the chunk owns
no synapse, so the `connectome` stage reads one file per chunk. Positions are in nm of the
global volume (voxel × resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

from petavox.tasks.core.geometry import Chunk
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import put
from petavox.tasks.core.values import check_values
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.cleft_channel import CleftParams, detect_clefts
from petavox.tasks.synapse.detection import DetectorParams, detect

#: what `detector.json` in the output folder says made the tables
CLASSICAL = "classical"
CLEFT_CHANNEL = "cleft channel"


def chunk_key(chunk: Chunk) -> str:
    """Where a chunk's table goes in the output folder."""
    return f"chunks/{chunk.id}.parquet"


@dataclass(frozen=True, kw_only=True)
class SynapseJob:
    """Detect the synapses whose owner voxel is in the chunk's write box; write their table.
    With `clefts` (a cleft probability layer) and `CleftParams`, from that channel; without,
    the classical detector with `DetectorParams`."""

    raw: Layer
    segmentation: Layer
    output_url: str
    params: DetectorParams | CleftParams
    clefts: Layer | None = None
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        read, write = chunk.read_box, chunk.write_box
        raw = self.raw.read(read, fill_missing=self.fill_missing)
        check_values(raw, self.raw.url, read, "synapses", unit_range=True)
        seg = self.segmentation.read(read, fill_missing=self.fill_missing)
        volume, resolution = self.raw.bounds(0), self.raw.resolution(0)
        if self.clefts is None:
            table = detect(raw, seg, read, write, volume, resolution, self.params)
        else:
            prob = self.clefts.read(read, fill_missing=self.fill_missing)
            check_values(prob, self.clefts.url, read, "synapses", unit_range=True)
            table = detect_clefts(prob, raw, seg, read, write, volume, resolution, self.params)
        put(self.output_url, chunk_key(chunk), synapse_table.to_parquet(table), self.raw.context)
        return {"synapses": len(table["synapse_id"])}
