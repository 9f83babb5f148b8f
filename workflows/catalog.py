"""Layer lookup during planning: real layers from storage, or those an earlier stage will write.

Planning a whole config before running it needs the info of layers that do not exist yet
(`downsample` of the `raw` that `ingest` is about to write). The catalog answers from the infos
earlier plans declared, so every stage is validated before the first task is dispatched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from petavox.tasks.core.layers import Layer, LayerSpec, planned_info, read_info
from petavox.tasks.core.storage import StorageContext, join_url, normalize_url


def resolve_layer_url(root: str, name_or_url: str) -> str:
    """A layer name (no scheme) lives under the run output; a URL is used as it is."""
    if "://" in name_or_url or name_or_url.startswith(("/", "~", ".")):
        return normalize_url(name_or_url)
    return join_url(root, name_or_url)


@dataclass
class Catalog:
    root: str
    context: StorageContext = StorageContext()
    planned: dict[str, dict] = field(default_factory=dict)

    def url(self, name_or_url: str) -> str:
        return resolve_layer_url(self.root, name_or_url)

    def info(self, url: str) -> dict | None:
        """The layer's info as it will be when earlier stages have run (None: no layer)."""
        if url in self.planned:
            return self.planned[url]
        return read_info(url, self.context)

    def layer(self, url: str) -> Layer:
        info = self.info(url)
        if info is None:
            return Layer.open(url, self.context)  # raises LayerNotFoundError with the fix
        return Layer(url, info, self.context)

    def declare(self, url: str, info: dict) -> None:
        self.planned[url] = info

    def plan_layer(self, url: str, spec: LayerSpec) -> Layer:
        """The layer a stage will write at `url` (its existing info when compatible), declared
        for the stages planned after it; nothing is written."""
        info = planned_info(url, spec, self.info(url))
        self.declare(url, info)
        return Layer(url, info, self.context)
