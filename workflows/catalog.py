"""Layer lookup during planning: real layers from storage, or those an earlier stage will write.

Planning a whole config before running it needs the info of layers that do not exist yet
(`downsample` of the `raw` that `ingest` is about to write). The catalog answers from the infos
earlier plans declared, so every stage is validated before the first task is dispatched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from petavox.tasks.core.foreign_volumes import FOREIGN
from petavox.tasks.core.layers import Layer, LayerSpec, check_writable, planned_info, read_info
from petavox.tasks.core.storage import StorageContext, join_url, normalize_url
from petavox.workflows.provenance import current_writer


def resolve_layer_url(root: str, name_or_url: str) -> str:
    """A layer name (no scheme) lives under the run output; a URL is used as it is."""
    if "://" in name_or_url or name_or_url.startswith(("/", "~", ".")):
        return normalize_url(name_or_url)
    return join_url(root, name_or_url)


def part_key(url: str, part: str) -> str:
    """The key of a product in `Catalog.writers` and `Catalog.reads`: a layer's data by its
    URL, one of its parts (``"skeletons"``) as ``URL#part``."""
    return url if part == "" else f"{url}#{part}"


@dataclass
class Catalog:
    """Also keeps the lineage of what a stage reads: for each layer it opens, the identity of
    the step that writes (or wrote) the layer's data, so a stage's identity changes when its
    input is recomputed. `reads` holds those of the stage being planned (see `begin_stage`)."""

    root: str
    context: StorageContext = StorageContext()
    planned: dict[str, dict] = field(default_factory=dict)
    writers: dict[str, str] = field(default_factory=dict)  # url -> identity, this run's plans
    reads: dict[str, str] = field(default_factory=dict)  # url -> lineage, the current stage
    writing: set[str] = field(default_factory=set)  # layers the current stage declared

    def begin_stage(self) -> None:
        self.reads, self.writing = {}, set()

    def note_read(self, url: str, lineage: str) -> None:
        """An input that is not a layer (an ingest source), with its fingerprint."""
        self.reads[url] = lineage

    def reads_token(self) -> str:
        """One hash of the current stage's inputs and their lineage (empty: it reads none)."""
        if not self.reads:
            return ""
        # the values only, in the order of their URLs: planners hash the input URLs they use
        # (as given), and an absolute source path would make the identity depend on where
        # the machine keeps it
        lineages = [self.reads[url] for url in sorted(self.reads)]
        blob = json.dumps(lineages).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def lineage(self, url: str, info: dict | None = None) -> str:
        """Who made the data at `url`: this run's planned writer, else the one its provenance
        names, else a hash of its info (a layer petavox did not write; a Zarr/N5/OME-Zarr
        volume's info holds a hash of its metadata)."""
        if url in self.writers:
            return self.writers[url]
        if info is not None and FOREIGN in info:
            return (
                "info:" + hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]
            )
        writer = current_writer(url, "", self.context)
        if writer is not None:
            return writer.identity
        blob = json.dumps(info, sort_keys=True).encode()
        return "info:" + hashlib.sha256(blob).hexdigest()[:16]

    def note_part(self, url: str, part: str) -> None:
        """A part of a layer the stage reads (its skeletons; the connectome beside a synapses
        output): the part's writer enters the lineage, so a recomputed part recomputes it."""
        key = part_key(url, part)
        if key not in self.writers:
            writer = current_writer(url, part, self.context)
            self.reads[key] = writer.identity if writer is not None else "unknown"
        else:
            self.reads[key] = self.writers[key]

    def url(self, name_or_url: str) -> str:
        return resolve_layer_url(self.root, name_or_url)

    def info(self, url: str) -> dict | None:
        """The layer's info as it will be when earlier stages have run (None: no layer)."""
        if url in self.planned:
            return self.planned[url]
        return read_info(url, self.context)

    def layer(self, url: str) -> Layer:
        """The layer at `url`, as an input of the stage being planned."""
        info = self.info(url)
        if info is None:
            layer = Layer.open(url, self.context)  # raises LayerNotFoundError with the fix
            info = layer.info
        else:
            layer = Layer(url, info, self.context)
        if url not in self.reads and url not in self.writing:  # not a step's own product
            self.reads[url] = self.lineage(url, info)
        return layer

    def declare(self, url: str, info: dict) -> None:
        check_writable(url, info)  # outputs are precomputed layers, never over http(s)
        self.planned[url] = info
        self.writing.add(url)

    def plan_layer(self, url: str, spec: LayerSpec) -> Layer:
        """The layer a stage will write at `url` (its existing info when compatible), declared
        for the stages planned after it; nothing is written."""
        check_writable(url)  # before reading anything there (an http URL may not answer)
        info = planned_info(url, spec, self.info(url))
        self.declare(url, info)
        return Layer(url, info, self.context)
