"""Neuroglancer states and links for `petavox view` (and the demo), and byte ranges."""

import json
import urllib.parse

import pytest

from petavox.tasks.core.errors import InputError, LayerMismatchError, LayerNotFoundError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import LayerSpec, write_info
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.file_server import byte_range
from petavox.workflows.view import (
    NEUROGLANCER,
    ViewLayer,
    neuroglancer_link,
    open_view_layers,
    viewer_state,
)

HTTP = "http://127.0.0.1:8123"


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
    assert layers == [
        ViewLayer(name="em", url=f"file://{tmp_path}/em", layer_type="image"),
        ViewLayer(name="seg", url=f"file://{tmp_path}/seg", layer_type="segmentation"),
    ]
    state = viewer_state(layers, HTTP, segments=[7, 2**40])
    assert state == {
        "layers": [
            {"type": "image", "source": f"precomputed://{HTTP}/em", "name": "em"},
            {
                "type": "segmentation",
                "source": f"precomputed://{HTTP}/seg",
                "name": "seg",
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
        open_view_layers(["http://127.0.0.1:1/raw"], StorageContext())
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
