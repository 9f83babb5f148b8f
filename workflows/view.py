"""`petavox view`: layers in Neuroglancer, local ones served from 127.0.0.1.

Precomputed layers, and Zarr v2/v3, N5 and OME-Zarr volumes, which Neuroglancer reads itself
(placed where petavox reads them: see `view_sources`). The state names each layer's data
source; Neuroglancer's precomputed datasource finds a
layer's meshes and skeletons from the `mesh` and `skeletons` keys of its info by itself, and
tells an annotation layer (``neuroglancer_annotations_v1``, e.g. `connectome`'s synapses) by
its info's ``@type``. The file server answers only the two viewers the command links to: the
public one (`NEUROGLANCER`) and the local client of the `neuroglancer` package.
"""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.foreign_volumes import FOREIGN
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, read_info
from petavox.tasks.core.storage import (
    StorageContext,
    local_path,
    normalize_url,
    scheme_of,
    split_volume_url,
)
from petavox.workflows.file_server import HOST, FileServer, origin_of
from petavox.workflows.view_sources import (
    ForeignView,
    browser_url,
    foreign_source,
    foreign_view,
    source_url,
)

NEUROGLANCER = "https://neuroglancer-demo.appspot.com/#!"
NEUROGLANCER_ORIGIN = origin_of(NEUROGLANCER)  # the public viewer, allowed to read local layers
LAYER_TYPES = ("image", "segmentation", "annotation")
ANNOTATIONS = "neuroglancer_annotations_v1"
DEFAULT_PORT = 8000  # where `--no-serve` links expect the local layers
# The 2D panel's zoom makes the volume's x/y extent fill a panel this wide and high (pixels):
# each panel of the xy-3d layout in a full-HD browser window is about that size.
PANEL_PIXELS = 1000
PROJECTION_MARGIN = 1.5  # the 3D panel's height: the volume's largest extent, times this
# A segmentation drawn over an image: its selected segments (those with meshes in 3D) and every
# other segment, so that all segments show in 2D with the image through them. (Neuroglancer
# draws every segment at selectedAlpha while none is selected; once some are, the others at
# notSelectedAlpha, 0 by default.)
SELECTED_ALPHA = 0.45
NOT_SELECTED_ALPHA = 0.3


@dataclass(frozen=True)
class Extent:
    """Where a volume layer's voxels are: mip 0's voxel size (nm) and bounds (voxels)."""

    resolution: tuple[float, float, float]
    start: Vec3
    stop: Vec3

    @classmethod
    def of(cls, info: dict[str, Any]) -> Extent | None:
        """From a precomputed volume info; None for anything without scales."""
        if not info.get("scales"):
            return None
        scale = info["scales"][0]
        start = Vec3.of(scale.get("voxel_offset", (0, 0, 0)))
        r = scale["resolution"]
        return cls((float(r[0]), float(r[1]), float(r[2])), start, start + Vec3.of(scale["size"]))

    def nm(self) -> tuple[list[float], list[float]]:
        """The bounds in nanometres: (low, high) corners."""
        low = [a * r for a, r in zip(self.start, self.resolution, strict=True)]
        high = [b * r for b, r in zip(self.stop, self.resolution, strict=True)]
        return low, high


@dataclass(frozen=True, kw_only=True)
class ViewLayer:
    """A layer to show: its name in the viewer (and on the file server), URL and type."""

    name: str
    url: str
    layer_type: str
    relationships: tuple[str, ...] = ()  # an annotation layer's segment relationships
    extent: Extent | None = None  # a volume layer's, for the viewer's navigation
    foreign: ForeignView | None = None  # a Zarr/N5/OME-Zarr layer's

    @property
    def local_path(self) -> str | None:
        """The folder to serve: the layer's, or a Zarr/N5 volume's (its group or array)."""
        return local_path(split_volume_url(self.url)[1])


def open_view_layers(urls: Sequence[str], context: StorageContext) -> list[ViewLayer]:
    """Read each layer's info; an InputError for anything that is not a layer to show.

    Layers are named after the last part of their URL (an annotation layer in a folder named
    `annotations`, as `connectome` writes it, after the folder above), made unique with a
    suffix.
    """
    layers: list[ViewLayer] = []
    names: set[str] = set()
    for given in urls:
        try:
            url = normalize_url(given)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        info = read_info(url, context)
        relationships: tuple[str, ...] = ()
        extent, foreign = None, None
        if info is not None and info.get("@type") == ANNOTATIONS:
            layer_type = "annotation"
            relationships = tuple(r["id"] for r in info.get("relationships", []))
        else:
            volume = Layer.open(url, context)
            if FOREIGN in volume.info:
                foreign = foreign_view(given, volume.info, context)
            layer_type, extent = volume.layer_type, Extent.of(volume.info)
        if layer_type not in LAYER_TYPES:
            raise LayerMismatchError(
                f"{url} is a {layer_type!r} layer; petavox view shows "
                f"{', '.join(LAYER_TYPES)} layers"
            )
        path = PurePosixPath(urllib.parse.urlparse(split_volume_url(url)[1]).path)
        if layer_type == "annotation" and path.name == "annotations" and path.parent.name:
            path = path.parent
        base = path.name or "layer"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.add(name)
        layers.append(
            ViewLayer(
                name=name,
                url=url,
                layer_type=layer_type,
                relationships=relationships,
                extent=extent,
                foreign=foreign,
            )
        )
    return layers


def layer_source(
    layer: ViewLayer, http_base: str | None, context: StorageContext
) -> str | dict[str, Any]:
    """Neuroglancer's data source for a layer.

    Local layers are read from the file server at `http_base`; ``s3://`` with a custom endpoint
    (MinIO etc.) is read path-style from the endpoint; other cloud URLs as they are. A
    Zarr/N5/OME-Zarr layer's source is its URL with a transform (see `view_sources`).
    """
    scheme = scheme_of(split_volume_url(layer.url)[1])
    if scheme == "file" and http_base is None:
        raise ValueError(f"{layer.url} is local: the viewer needs an HTTP server for it")
    if layer.foreign is not None:
        served = f"{http_base}/{layer.name}" if scheme == "file" else None
        url = source_url(layer.foreign, served, context)
        if layer.extent is None:
            raise ValueError(f"{layer.url}: a Zarr/N5 layer without its extent")
        return foreign_source(layer.foreign, layer.extent.resolution, url)
    if scheme == "file":
        return f"precomputed://{http_base}/{layer.name}"
    return f"precomputed://{browser_url(layer.url, context)}"


def viewer_state(
    layers: Sequence[ViewLayer],
    http_base: str | None,
    context: StorageContext = StorageContext(),
    segments: Sequence[int] = (),
    hidden: Collection[str] = (),
) -> dict[str, Any]:
    """A Neuroglancer state (JSON) with one layer each, 2D and 3D panels side by side.

    The view is centred on the layers' volume, the 2D panel filled by its x/y extent (see
    `navigation`). `segments` are selected in every segmentation layer, so their meshes are
    drawn. Over a shown image, segmentation layers are drawn semi-transparent, all their
    segments. The layers named in `hidden` are in the state but not drawn (`visible: false`).
    An annotation layer's relationships (a synapse's pre and post segment) are linked to the
    first segmentation layer: selecting a segment there selects its synapses' partners.
    """
    unknown = set(hidden) - {layer.name for layer in layers}
    if unknown:
        raise ValueError(f"no layer named {', '.join(sorted(unknown))} to hide")
    segmentations = [layer.name for layer in layers if layer.layer_type == "segmentation"]
    over_image = any(layer.layer_type == "image" and layer.name not in hidden for layer in layers)
    specs = []
    for layer in layers:
        spec: dict[str, Any] = {
            "type": layer.layer_type,
            "source": layer_source(layer, http_base, context),
            "name": layer.name,
        }
        if layer.foreign is not None and layer.foreign.local_position:
            spec["localPosition"] = list(layer.foreign.local_position)
        if layer.name in hidden:
            spec["visible"] = False
        if layer.layer_type == "segmentation" and over_image:
            spec.update(selectedAlpha=SELECTED_ALPHA, notSelectedAlpha=NOT_SELECTED_ALPHA)
        if layer.layer_type == "segmentation" and segments:
            spec["segments"] = [str(s) for s in segments]
        if layer.relationships and segmentations:
            spec["linkedSegmentationLayer"] = {r: segmentations[0] for r in layer.relationships}
        specs.append(spec)
    return {**navigation(layers), "layers": specs, "layout": "xy-3d"}


def navigation(layers: Sequence[ViewLayer]) -> dict[str, Any]:
    """Where the viewer looks, from the volume layers' extents ({} without any).

    `dimensions`: the voxel size of the first image layer (else of the first volume layer), in
    metres as Neuroglancer writes it; `position`: the centre of the voxel at the centre of all
    layers' bounds, in those voxels; `crossSectionScale` (Neuroglancer's canonical voxels, the
    smallest voxel side, per screen pixel): the smaller of the x and y extents across
    `PANEL_PIXELS`, so the volume fills the 2D panel; `projectionScale` (canonical voxels across
    the 3D panel's height): the largest extent, `PROJECTION_MARGIN` times over.
    """
    extents = {layer.name: layer.extent for layer in layers if layer.extent is not None}
    if not extents:
        return {}
    images = [layer.name for layer in layers if layer.layer_type == "image"]
    voxel = extents[next((n for n in images if n in extents), next(iter(extents)))].resolution
    corners = [extent.nm() for extent in extents.values()]
    low = [min(c[0][axis] for c in corners) for axis in range(3)]
    high = [max(c[1][axis] for c in corners) for axis in range(3)]
    canonical = min(voxel)
    extent = [(b - a) / canonical for a, b in zip(low, high, strict=True)]
    return {
        "dimensions": {axis: [r / 1e9, "m"] for axis, r in zip("xyz", voxel, strict=True)},
        "position": [
            math.floor((a + b) / 2 / r) + 0.5 for a, b, r in zip(low, high, voxel, strict=True)
        ],
        "crossSectionScale": min(extent[:2]) / PANEL_PIXELS,
        "projectionScale": PROJECTION_MARGIN * max(extent),
    }


def neuroglancer_link(state: dict[str, Any]) -> str:
    """A link to the public Neuroglancer viewer showing `state`."""
    text = json.dumps(state, separators=(",", ":"))
    return NEUROGLANCER + urllib.parse.quote(text, safe="")


def run_view(
    urls: Sequence[str],
    *,
    port: int | None,
    segments: Sequence[int],
    serve: bool,
    context: StorageContext,
) -> int:
    """Print links to the layers; serve local ones (and a local viewer) until Ctrl-C."""
    layers = open_view_layers(urls, context)
    roots = {layer.name: layer.local_path for layer in layers if layer.local_path}
    if not roots:
        print(neuroglancer_link(viewer_state(layers, None, context, segments)))
        return 0
    if not serve:
        base = f"http://{HOST}:{port or DEFAULT_PORT}"
        print(
            f"Neuroglancer (serve each folder at {base}/NAME/ over HTTP, "
            f"with CORS for {NEUROGLANCER_ORIGIN}):"
        )
        for name, folder in roots.items():
            print(f"  {name}: {folder}")
        print("  " + neuroglancer_link(viewer_state(layers, base, context, segments)))
        return 0
    import neuroglancer  # heavy import (tornado server), only where a viewer runs

    # --port P: the file server on P, the local viewer on P + 1 (a tunnel forwards both)
    neuroglancer.set_server_bind_address(HOST, bind_port=port + 1 if port else 0)
    try:
        viewer = start_viewer(neuroglancer, port)  # first: the file server lets its origin in
        local_viewer = viewer.get_viewer_url()
        origins = (NEUROGLANCER_ORIGIN, origin_of(local_viewer))
        server = serving(roots, port, origins)
        try:
            state = viewer_state(layers, server.url, context, segments)
            viewer.set_state(neuroglancer.ViewerState(state))
            print(f"serving {', '.join(roots)} at {server.url}/ (Ctrl-C stops)")
            print("Neuroglancer, local client (works offline):")
            print(f"  {local_viewer}")
            print("Neuroglancer, public viewer:")
            print(f"  {neuroglancer_link(state)}", flush=True)
            threading.Event().wait()
        finally:
            server.stop()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        neuroglancer.stop()
    return 0


def start_viewer(neuroglancer: Any, port: int | None) -> Any:
    """The local Neuroglancer viewer, its server started; an InputError when its port (the one
    after --port) is taken."""
    try:
        viewer = neuroglancer.Viewer()  # starts its server, if none runs yet
        viewer.get_viewer_url()
    except OSError as exc:
        raise InputError(
            f"cannot start the local viewer on {HOST}:{port + 1 if port else 0}: "
            f"{exc.strerror}; choose another --port (the viewer takes the port after it)"
        ) from None
    return viewer


def serving(roots: dict[str, str], port: int | None, origins: Sequence[str]) -> FileServer:
    """The started file server for `roots`, readable by pages at `origins`; an InputError
    when the port is taken."""
    server = FileServer(roots, port or 0, allowed_origins=origins)
    try:
        return server.start()
    except OSError as exc:
        raise InputError(
            f"cannot serve on {HOST}:{port}: {exc.strerror}; choose another --port"
        ) from None
