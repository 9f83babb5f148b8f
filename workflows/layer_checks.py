"""What the stages that read a segmentation layer (mesh, skeletonize, connectome) check of it,
and the folder of their output inside it, named in its info."""

from __future__ import annotations

import re

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import join_url
from petavox.workflows.catalog import Catalog


def check_segmentation(url: str, source: Layer, use: str) -> None:
    """A LayerMismatchError unless `source` is a one-channel segmentation layer; `use` says
    what the stage wants it for."""
    if source.layer_type != "segmentation" or source.num_channels != 1:
        raise LayerMismatchError(f"{url} is not a one-channel segmentation layer; {use}")


def check_folder_name(option: str, folder: str, example: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", folder) or folder in (".", ".."):
        raise InputError(f"{option} {folder!r} must be a plain folder name, like {example!r}")


def check_free_folder(url: str, source: Layer, option: str, folder: str, own: str) -> None:
    """An InputError unless `folder` (option `option`) is a plain name that no other product in
    the layer at `url` uses: a scale, the meshes, the skeletons, the info or a run's ledger.
    `own` is the info key of the product the folder is for (its current folder is free)."""
    check_folder_name(option, folder, own)
    taken = {"info", "ledger", "intermediate", *(s.get("key") for s in source.info["scales"])}
    named = ("mesh", "skeletons", "segment_properties", "classes")
    taken |= {source.info.get(key) for key in named if key != own}
    if own != "morphology":  # the tables: {folder: ...} (a table may be measured again)
        taken |= set(source.info.get("morphology", {}))
    if folder in taken:
        raise InputError(
            f"{option} {folder!r} is taken in {url} (by a scale, the meshes, the skeletons, "
            "a table, the info or a run's ledger); choose another name"
        )


def declare_folder(
    catalog: Catalog, url: str, source: Layer, key: str, folder: str
) -> tuple[dict, Layer, str]:
    """The layer's info with `key` naming `folder` (declared to the catalog), the layer with
    that info, and the folder's URL."""
    info = {**source.info, key: folder}
    catalog.declare(url, info)
    return info, Layer(url, info, catalog.context), join_url(url, folder)
