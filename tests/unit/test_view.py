"""Neuroglancer states and links for `petavox view` (and the demo), and byte ranges."""

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace

import numpy as np
import pytest
from foreign_data import (
    OFFSET,
    volume,
    write_n5,
    write_n5_multiscale,
    write_ome_zarr,
    write_zarr3_sharded,
)

from petavox.tasks.core.errors import InputError, LayerMismatchError, LayerNotFoundError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec, write_info
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.demo import HIDDEN, MESHES_SHOWN, demo_view_state, largest_segments
from petavox.workflows.file_server import FileServer, byte_range
from petavox.workflows.view import (
    NEUROGLANCER,
    NOT_SELECTED_ALPHA,
    PANEL_PIXELS,
    SELECTED_ALPHA,
    Extent,
    ViewLayer,
    neuroglancer_link,
    open_view_layers,
    viewer_state,
)

HTTP = "http://127.0.0.1:8123"
DATA = volume()


def make_layer(path, layer_type="image", dtype="uint8"):
    spec = LayerSpec(layer_type=layer_type, dtype=dtype, size=Vec3(8, 8, 8), resolution=(4, 4, 4))
    write_info(f"file://{path}", spec.to_info())
    return path


def test_local_image_and_segmentation_layers_read_from_the_file_server(tmp_path):
    urls = [
        str(make_layer(tmp_path / "em")),
        f"file://{make_layer(tmp_path / 'seg', 'segmentation', 'uint64')}",
    ]
    layers = open_view_layers(urls, StorageContext())
    extent = Extent((4.0, 4.0, 4.0), Vec3(0, 0, 0), Vec3(8, 8, 8))
    assert layers == [
        ViewLayer(name="em", url=f"file://{tmp_path}/em", layer_type="image", extent=extent),
        ViewLayer(
            name="seg", url=f"file://{tmp_path}/seg", layer_type="segmentation", extent=extent
        ),
    ]
    state = viewer_state(layers, HTTP, segments=[7, 2**40])
    assert state == {
        "dimensions": {axis: [4e-9, "m"] for axis in "xyz"},
        "position": [4.5, 4.5, 4.5],
        "crossSectionScale": 8 / PANEL_PIXELS,
        "projectionScale": 12.0,
        "layers": [
            {"type": "image", "source": f"precomputed://{HTTP}/em", "name": "em"},
            {
                "type": "segmentation",
                "source": f"precomputed://{HTTP}/seg",
                "name": "seg",
                "selectedAlpha": SELECTED_ALPHA,
                "notSelectedAlpha": NOT_SELECTED_ALPHA,
                "segments": ["7", "1099511627776"],
            },
        ],
        "layout": "xy-3d",
    }
    # no subsource is switched off: Neuroglancer loads the info's mesh and skeletons
    assert all(isinstance(spec["source"], str) for spec in state["layers"])
    assert "segments" not in viewer_state(layers, HTTP)["layers"][1]


def test_layers_with_the_same_folder_name_get_distinct_names(tmp_path):
    urls = [str(make_layer(tmp_path / d / "raw")) for d in ("a", "b", "c")]
    names = [layer.name for layer in open_view_layers(urls, StorageContext())]
    assert names == ["raw", "raw-2", "raw-3"]


def test_cloud_layers_are_read_by_the_viewer_directly():
    layers = [
        ViewLayer(name="raw", url="gs://bucket/run/raw", layer_type="image"),
        ViewLayer(name="seg", url="s3://bucket/run/seg", layer_type="segmentation"),
    ]
    sources = [spec["source"] for spec in viewer_state(layers, None)["layers"]]
    assert sources == ["precomputed://gs://bucket/run/raw", "precomputed://s3://bucket/run/seg"]


def test_s3_with_a_custom_endpoint_is_read_path_style_from_the_endpoint():
    layers = [
        ViewLayer(name="raw", url="gs://bucket/run/raw", layer_type="image"),
        ViewLayer(name="seg", url="s3://bucket/run/seg", layer_type="segmentation"),
    ]
    context = StorageContext(s3_endpoint="http://127.0.0.1:9000/")
    sources = [spec["source"] for spec in viewer_state(layers, None, context)["layers"]]
    assert sources == [
        "precomputed://gs://bucket/run/raw",
        "precomputed://http://127.0.0.1:9000/bucket/run/seg",
    ]


def test_a_local_layer_without_a_server_is_an_error():
    with pytest.raises(ValueError, match="HTTP server"):
        viewer_state([ViewLayer(name="raw", url="file:///data/raw", layer_type="image")], None)


def test_the_link_carries_the_state():
    layers = [ViewLayer(name="seg", url="gs://b/seg", layer_type="segmentation")]
    state = viewer_state(layers, None, segments=[3])
    link = neuroglancer_link(state)
    assert link.startswith(NEUROGLANCER)
    fragment = link[len(NEUROGLANCER) :]
    assert "/" not in fragment and " " not in fragment
    assert json.loads(urllib.parse.unquote(fragment)) == state


def test_what_is_not_a_layer_to_show_is_an_input_error(tmp_path):
    with pytest.raises(LayerNotFoundError, match="no precomputed layer"):
        open_view_layers([str(tmp_path / "missing")], StorageContext())
    with pytest.raises(InputError, match="unsupported storage URL"):
        open_view_layers(["ftp://127.0.0.1:1/raw"], StorageContext())
    bad = tmp_path / "skeletons"
    write_info(f"file://{bad}", {"@type": "neuroglancer_skeletons", "type": "skeletons"})
    with pytest.raises(LayerMismatchError, match="'skeletons' layer"):
        open_view_layers([str(bad)], StorageContext())


def test_an_annotation_layer_is_shown_as_one_linked_to_the_first_segmentation(tmp_path):
    path = tmp_path / "synapses" / "annotations"
    relationships = [{"id": "pre", "key": "rel_pre"}, {"id": "post", "key": "rel_post"}]
    write_info(
        f"file://{path}", {"@type": "neuroglancer_annotations_v1", "relationships": relationships}
    )
    urls = [
        str(path),
        str(make_layer(tmp_path / "seg", "segmentation")),
        str(make_layer(tmp_path / "truth", "segmentation")),
    ]
    layers = open_view_layers(urls, StorageContext())
    # connectome's <output>/annotations is named after <output>
    assert [(v.name, v.layer_type, v.relationships) for v in layers] == [
        ("synapses", "annotation", ("pre", "post")),
        ("seg", "segmentation", ()),
        ("truth", "segmentation", ()),
    ]
    state = viewer_state(layers, HTTP, segments=[5])
    assert state["layers"][0] == {
        "type": "annotation",
        "name": "synapses",
        "source": f"precomputed://{HTTP}/synapses",
        "linkedSegmentationLayer": {"pre": "seg", "post": "seg"},
    }
    assert state["layers"][1]["segments"] == ["5"]
    # nothing to link to without a segmentation layer; no relationships, nothing linked
    alone = viewer_state(layers[:1], HTTP)["layers"][0]
    assert "linkedSegmentationLayer" not in alone
    plain = tmp_path / "points" / "annotations"
    write_info(f"file://{plain}", {"@type": "neuroglancer_annotations_v1"})
    layers = open_view_layers([str(plain), urls[1]], StorageContext())
    assert "linkedSegmentationLayer" not in viewer_state(layers, HTTP)["layers"][0]


def write_layer(url, layer_type, size, resolution, offset=(0, 0, 0), dtype="uint8"):
    spec = LayerSpec(
        layer_type=layer_type,
        dtype=dtype,
        size=Vec3.of(size),
        resolution=resolution,
        voxel_offset=Vec3.of(offset),
    )
    write_info(url, spec.to_info())
    return url


def test_navigation_centres_the_volume_and_fills_the_2d_panel_with_it(tmp_path):
    """Anisotropic voxels, layers of two resolutions and offsets: dimensions from the image's
    voxels; position, zoom and 3D scale from the union of the bounds (in nm)."""
    urls = [
        write_layer(f"file://{tmp_path}/seg", "segmentation", (100, 60, 10), (16, 16, 40)),
        write_layer(f"file://{tmp_path}/em", "image", (400, 250, 10), (8, 8, 40), (0, 0, 2)),
    ]
    state = viewer_state(open_view_layers(urls, StorageContext()), HTTP)
    # nm: x 0..3200, y 0..2000, z 0..480; in the image's voxels (8, 8, 40): 400 × 250 × 12
    assert state["dimensions"] == {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [4e-8, "m"]}
    assert state["position"] == [200.5, 125.5, 6.5]
    # canonical voxels are the smallest side, 8 nm: y's 250 fill the panel, z's 480 nm are 60
    assert state["crossSectionScale"] == pytest.approx(250 / PANEL_PIXELS)
    assert state["projectionScale"] == pytest.approx(1.5 * 400)
    # the keys are what the neuroglancer package reads (and writes back the same)
    import neuroglancer

    parsed = neuroglancer.ViewerState(state)
    assert parsed.cross_section_scale == state["crossSectionScale"]
    assert parsed.projection_scale == state["projectionScale"]
    assert list(parsed.position) == state["position"]
    assert parsed.dimensions.scales.tolist() == [8e-9, 8e-9, 4e-8]
    assert list(parsed.dimensions.units) == ["m", "m", "m"]
    # no volume layer (an annotation layer, cloud layers named without an info): no navigation
    cloud = [ViewLayer(name="seg", url="gs://b/seg", layer_type="segmentation")]
    assert set(viewer_state(cloud, None)) == {"layers", "layout"}


def test_hidden_layers_and_segmentation_over_an_image(tmp_path):
    names = ("raw", "aligned", "seg", "truth")
    kinds = ("image", "image", "segmentation", "segmentation")
    urls = [
        write_layer(f"file://{tmp_path}/{n}", k, (16, 16, 4), (8, 8, 8))
        for n, k in zip(names, kinds)
    ]
    layers = open_view_layers(urls, StorageContext())
    state = viewer_state(layers, HTTP, segments=[3], hidden=["raw", "truth"])
    specs = {spec["name"]: spec for spec in state["layers"]}
    assert [spec["name"] for spec in state["layers"]] == list(names)  # hidden, not dropped
    assert {n for n, spec in specs.items() if spec.get("visible", True) is False} == {
        "raw",
        "truth",
    }
    assert "visible" not in specs["aligned"] and "visible" not in specs["seg"]
    for name in ("seg", "truth"):  # over the shown image: semi-transparent, every segment
        assert specs[name]["selectedAlpha"] == SELECTED_ALPHA
        assert specs[name]["notSelectedAlpha"] == NOT_SELECTED_ALPHA
        assert specs[name]["segments"] == ["3"]
    assert 0.3 <= NOT_SELECTED_ALPHA <= SELECTED_ALPHA <= 0.5
    import neuroglancer

    parsed = neuroglancer.ViewerState(state)
    assert [layer.visible for layer in parsed.layers] == [False, True, True, False]
    seg = parsed.layers["seg"]
    assert (seg.selected_alpha, seg.not_selected_alpha, seg.object_alpha) == (
        SELECTED_ALPHA,
        NOT_SELECTED_ALPHA,
        1.0,  # meshes opaque: Neuroglancer's default, left as it is
    )
    assert [int(s) for s in seg.segments] == [3]
    # no image shown (hidden, or none): the segmentation is drawn as Neuroglancer draws it
    alone = viewer_state(layers, HTTP, hidden=["raw", "aligned"])["layers"][2]
    assert "selectedAlpha" not in alone and "notSelectedAlpha" not in alone
    with pytest.raises(ValueError, match="no layer named nope"):
        viewer_state(layers, HTTP, hidden=["nope"])


def write_labels(url: str, labels: np.ndarray, chunk=(4, 4, 2)) -> str:
    spec = LayerSpec(
        layer_type="segmentation",
        dtype="uint64",
        size=Vec3.of(labels.shape),
        resolution=(8, 8, 8),
        chunk_size=Vec3.of(chunk),
    )
    layer = Layer.create(url, spec)
    for _, box in layer.storage_chunks(layer.bounds()):
        layer.write(box, labels[box.slices()])
    return url


def test_largest_segments_count_every_block(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 5, 9, 2**40, 7, 11], np.uint64), (12, 10, 6))
    labels[:, :, :2] = 0  # zero is no segment, however many voxels it has
    url = write_labels(f"file://{tmp_path}/seg", labels)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    expected = [int(i) for i in ids[np.lexsort((ids, -counts))]]
    context = StorageContext()
    # blocks of one storage chunk (4 × 4 × 2 voxels; bounds not a multiple), and the whole
    assert largest_segments(url, context, count=3, block_voxels=1) == expected[:3]
    assert largest_segments(url, context, count=10) == expected
    labels[:] = 4
    labels[0, 0, 0] = labels[1, 0, 0] = 6  # ties: the smaller id first
    labels[2, 0, 0] = labels[3, 0, 0] = 3
    url = write_labels(f"file://{tmp_path}/tie", labels)
    assert largest_segments(url, context, count=3, block_voxels=1) == [4, 3, 6]


def test_the_demo_state_shows_the_aligned_em_and_selects_the_largest_segments(tmp_path):
    labels = np.zeros((16, 16, 4), np.uint64)
    for n, label in enumerate((21, 22, 23, 24, 25, 26, 27)):
        labels[n * 2 : n * 2 + 2 + n % 3] = label
    names = ("raw", "aligned", "boundary", "clefts", "segmentation", "ground_truth")
    for name in names:
        if name in ("segmentation", "ground_truth"):
            write_labels(f"file://{tmp_path}/{name}", labels)
        else:
            write_layer(f"file://{tmp_path}/{name}", "image", (16, 16, 4), (8, 8, 8))
    layers = open_view_layers([str(tmp_path / n) for n in names], StorageContext())
    state = demo_view_state(f"file://{tmp_path}", layers, HTTP, StorageContext())
    specs = {spec["name"]: spec for spec in state["layers"]}
    shown = {n for n, spec in specs.items() if spec.get("visible", True)}
    assert shown == {"aligned", "segmentation"} and set(HIDDEN) == set(names) - shown
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    largest = ids[np.lexsort((ids, -counts))][:MESHES_SHOWN]
    assert specs["segmentation"]["segments"] == [str(i) for i in largest]
    assert "segments" not in specs["ground_truth"]  # its ids are other objects
    assert specs["segmentation"]["selectedAlpha"] == SELECTED_ALPHA
    assert state["position"] == [8.5, 8.5, 2.5]


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=90-", (90, 100)),
        ("bytes=-5", (95, 100)),
        ("bytes=10-500", (10, 100)),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=-", None),
        ("bytes=7-3", None),
    ],
)
def test_byte_ranges(header, expected):
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_byte_ranges(header):
    with pytest.raises(ValueError):
        byte_range(header, 100)


def foreign_state(layers, http=HTTP, context=StorageContext()):
    import neuroglancer

    state = viewer_state(layers, http, context)
    neuroglancer.ViewerState(state)  # the package's client parses it
    return state


def test_an_ome_zarr_is_shown_where_petavox_reads_it(tmp_path):
    """Translated: Neuroglancer opens level 0's array with a transform to petavox's offset
    (z, y, x axes to x, y, z); untranslated: the whole group, half a voxel up (Neuroglancer
    puts OME-Zarr voxel centres on the grid); #level=1: that level's array."""
    write_ome_zarr(tmp_path / "img.zarr", DATA, "0.4")
    write_ome_zarr(
        tmp_path / "at0.zarr", DATA, "0.5", translations={k: (0, 0, 0) for k in range(3)}
    )
    urls = [str(tmp_path / "img.zarr"), f"{tmp_path}/img.zarr#level=1", str(tmp_path / "at0.zarr")]
    layers = open_view_layers(urls, StorageContext())
    assert [v.name for v in layers] == ["img.zarr", "img.zarr-2", "at0.zarr"]
    assert [v.local_path for v in layers] == [
        str(tmp_path / n) for n in ("img.zarr",) * 2 + ("at0.zarr",)
    ]
    assert layers[0].extent == Extent((8.0, 8.0, 30.0), Vec3(*OFFSET), Vec3(32 + 56, 16 + 40, 16))
    sources = [spec["source"] for spec in foreign_state(layers)["layers"]]
    metres = {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [3e-8, "m"]}
    # Neuroglancer's names of the array's axes (a Zarr v2 array without names: d0, d1, d2),
    # given petavox's voxel sizes: the matrix is in voxels
    assert sources[0] == {
        "url": f"zarr2://{HTTP}/img.zarr/0",
        "transform": {
            "outputDimensions": metres,
            "inputDimensions": {"d0": metres["z"], "d1": metres["y"], "d2": metres["x"]},
            "matrix": [[0, 0, 1, 32], [0, 1, 0, 16], [1, 0, 0, 10]],
        },
    }
    assert sources[1]["url"] == f"zarr2://{HTTP}/img.zarr-2/1"
    assert sources[1]["transform"]["matrix"] == [[0, 0, 1, 16], [0, 1, 0, 8], [1, 0, 0, 10]]
    assert sources[1]["transform"]["outputDimensions"]["x"] == [16e-9, "m"]
    assert sources[2]["url"] == f"zarr3://{HTTP}/at0.zarr"
    assert sources[2]["transform"]["matrix"] == [[0, 0, 1, 0.5], [0, 1, 0, 0.5], [1, 0, 0, 0.5]]
    assert list(sources[2]["transform"]["inputDimensions"]) == ["z", "y", "x"]  # its axes


def test_channels_types_plain_arrays_and_object_stores(tmp_path):
    write_ome_zarr(tmp_path / "c.zarr", DATA, "0.5", channels=2)
    write_zarr3_sharded(tmp_path / "z3", DATA)
    write_n5(tmp_path / "v.n5", DATA)
    urls = [
        f"{tmp_path}/c.zarr#channel=1",
        f"zarr3://{tmp_path}/z3#resolution=4,4,40&offset=1,2,3&type=segmentation",
        f"n5://{tmp_path}/v.n5",
    ]
    layers = open_view_layers(urls, StorageContext())
    specs = foreign_state(layers)["layers"]
    # the channel axis: a local dimension, at the channel chosen
    assert specs[0]["source"]["transform"]["outputDimensions"]["c'"] == [1, ""]
    assert specs[0]["source"]["transform"]["inputDimensions"]["c"] == [1, ""]  # dimension_names
    assert specs[0]["source"]["transform"]["matrix"][3] == [1, 0, 0, 0, 0]
    assert specs[0]["localPosition"] == [1.5]
    assert specs[1]["type"] == "segmentation"  # #type= is the layer's type
    nm4 = {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-8, "m"]}
    assert specs[1]["source"] == {
        "url": f"zarr3://{HTTP}/z3",
        "transform": {
            "outputDimensions": nm4,
            "inputDimensions": {"z": nm4["z"], "y": nm4["y"], "x": nm4["x"]},  # dimension_names
            "matrix": [[0, 0, 1, 1], [0, 1, 0, 2], [1, 0, 0, 3]],
        },
    }
    # N5 lists x, y, z: the identity, at offset 0
    assert specs[2]["source"]["url"] == f"n5://{HTTP}/v.n5"
    assert specs[2]["source"]["transform"]["matrix"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    # in object storage: read by Neuroglancer itself, s3 path-style from a custom endpoint
    s3 = replace(
        layers[1],
        url="zarr3://s3://bucket/z3",
        foreign=replace(layers[1].foreign, store="s3://bucket/z3"),
    )
    gs = replace(
        layers[2], url="n5://gs://b/v.n5", foreign=replace(layers[2].foreign, store="gs://b/v.n5")
    )
    context = StorageContext(s3_endpoint="http://127.0.0.1:9000/")
    urls = [spec["source"]["url"] for spec in viewer_state([s3, gs], None, context)["layers"]]
    assert urls == ["zarr3://http://127.0.0.1:9000/bucket/z3", "n5://gs://b/v.n5"]


def test_an_n5_multiscale_group_is_shown_from_the_level_read(tmp_path):
    write_n5_multiscale(tmp_path / "em.n5", DATA)
    layers = open_view_layers([f"{tmp_path}/em.n5", f"{tmp_path}/em.n5#level=2"], StorageContext())
    sources = [spec["source"] for spec in foreign_state(layers)["layers"]]
    assert [s["url"] for s in sources] == [f"n5://{HTTP}/em.n5/s0", f"n5://{HTTP}/em.n5-2/s2"]
    assert sources[1]["transform"]["outputDimensions"]["x"] == [32e-9, "m"]


def test_a_volume_without_x_y_and_z_axes_is_refused(tmp_path):
    import zarr

    zarr.open_array(str(tmp_path / "yx.zarr"), mode="w", shape=(8, 8), dtype="u1")
    with pytest.raises(InputError, match=r"x, y and z axes; .*yx.zarr has the axes 'yx'"):
        open_view_layers([str(tmp_path / "yx.zarr")], StorageContext())


def test_the_file_server_serves_zarr_and_n5_files_unchanged(tmp_path):
    """Metadata (hidden .zarray, .zattrs, .zgroup too), nested chunk keys, v3 shards by byte
    range; a precomputed layer's folder still serves only what its info names."""
    write_ome_zarr(tmp_path / "img.zarr", DATA, "0.4")
    write_zarr3_sharded(tmp_path / "z3", DATA)
    write_n5_multiscale(tmp_path / "em.n5", DATA)
    (tmp_path / "img.zarr" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "z3" / "c" / "0" / "x.tmp").write_bytes(b"x")
    roots = {"img": tmp_path / "img.zarr", "z3": tmp_path / "z3", "n5": tmp_path / "em.n5"}
    roots["raw"] = make_layer(tmp_path / "raw")
    (tmp_path / "raw" / "notes.txt").write_text("x")
    files = [
        p.relative_to(tmp_path).as_posix()
        for p in sorted(tmp_path.rglob("*"))
        if p.is_file() and p.suffix != ".tmp" and p.name != ".DS_Store" and p.parts[-2:][0] != "raw"
    ]
    names = {"img.zarr": "img", "z3": "z3", "em.n5": "n5"}
    assert {".zattrs", ".zgroup", ".zarray", "zarr.json", "attributes.json"} <= {
        f.split("/")[-1] for f in files
    }
    with FileServer(roots) as server:
        for file in files:
            top, rest = file.split("/", 1)
            with urllib.request.urlopen(f"{server.url}/{names[top]}/{rest}", timeout=10) as got:
                assert got.read() == (tmp_path / file).read_bytes(), file
        shard = next(f for f in files if f.startswith("z3/c/"))
        ranged = urllib.request.Request(
            f"{server.url}/z3/{shard[3:]}", headers={"Range": "bytes=2-9"}
        )
        with urllib.request.urlopen(ranged, timeout=10) as got:
            assert got.status == 206 and got.read() == (tmp_path / shard).read_bytes()[2:10]
        for missing in ("img/.DS_Store", "z3/c/0/x.tmp", "raw/notes.txt", "img/../raw/info"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{server.url}/{missing}", timeout=10)
            assert refused.value.code == 404, missing
