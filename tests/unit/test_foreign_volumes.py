"""Zarr v2, Zarr v3 (sharded), N5 and OME-Zarr (0.4, 0.5) volumes read through `Layer` (issue 23),
local and over HTTP; their errors before any work."""

from __future__ import annotations

import functools
import http.server
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from foreign_data import (
    OFFSET,
    RESOLUTION,
    TRANSLATION_NM,
    centred_translations,
    volume,
    write_n5,
    write_n5_multiscale,
    write_ome_zarr,
    write_zarr2,
    write_zarr3_sharded,
)

from petavox.tasks.core.errors import InputError, LayerMismatchError, LayerNotFoundError
from petavox.tasks.core.foreign_volumes import FOREIGN, VolumeFormatError
from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layer_sources import LayerSource
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.sources import open_source
from petavox.workflows.cli import main
from petavox.workflows.config import parse_config

DATA = volume()
PLAIN = {"zarr2": write_zarr2, "zarr3": write_zarr3_sharded, "n5": write_n5}
FORMAT_OF = {"zarr2": "zarr", "zarr3": "zarr3", "n5": "n5", "0.4": "zarr", "0.5": "zarr3"}


def expect_level(layer: Layer, mip: int, level_zyx: np.ndarray, level: int | None = None) -> None:
    """Bounds, resolution and every voxel of one level (default: the mip's), plus zeros
    outside the bounds."""
    scale = 2 ** (mip if level is None else level)
    start = Vec3(OFFSET[0] // scale, OFFSET[1] // scale, OFFSET[2])
    assert layer.bounds(mip) == Box.from_shape(level_zyx.shape[::-1], start)
    assert layer.resolution(mip) == pytest.approx((8.0 * scale, 8.0 * scale, 30.0))
    np.testing.assert_array_equal(layer.read(layer.bounds(mip), mip), level_zyx.transpose())
    grown = Box(layer.bounds(mip).start - 2, layer.bounds(mip).stop + 1)
    part = layer.read(grown, mip)
    assert part[:2].sum() == 0 and part[-1].sum() == 0
    np.testing.assert_array_equal(part[2:-1, 2:-1, 2:-1], level_zyx.transpose())


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_levels_scale_and_translation(tmp_path, version):
    levels = write_ome_zarr(tmp_path / "img.zarr", DATA, version)
    layer = Layer.open(str(tmp_path / "img.zarr"))  # detected from its metadata
    assert layer.info[FOREIGN]["format"] == FORMAT_OF[version]
    assert (layer.num_mips, layer.layer_type, layer.dtype) == (3, "image", np.uint8)
    for mip, level in enumerate(levels):
        expect_level(layer, mip, level)
    second = Layer.open(f"{FORMAT_OF[version]}://{tmp_path}/img.zarr#level=1")
    assert second.num_mips == 2
    expect_level(second, 0, levels[1], level=1)
    expect_level(second, 1, levels[2], level=2)


@pytest.mark.parametrize("fmt", sorted(PLAIN))
def test_plain_arrays_with_and_without_a_format_prefix(tmp_path, fmt):
    PLAIN[fmt](tmp_path / "v", DATA)
    for url in (str(tmp_path / "v"), f"{fmt}://file://{tmp_path}/v#resolution=8,8,30"):
        layer = Layer.open(url)
        assert layer.info[FOREIGN]["format"] == FORMAT_OF[fmt]
        assert layer.bounds() == Box.from_shape(DATA.shape[::-1])
        np.testing.assert_array_equal(layer.read(layer.bounds()), DATA.transpose())
        box = Box(Vec3(5, 7, 1), Vec3(40, 33, 5))
        np.testing.assert_array_equal(layer.read(box), DATA[1:5, 7:33, 5:40].transpose())
    assert layer.resolution() == RESOLUTION
    if fmt == "zarr3":  # a sharded array: chunks inside shards
        assert layer.chunk_size() == Vec3(16, 16, 2)


def test_channels_labels_and_types(tmp_path):
    levels = write_ome_zarr(tmp_path / "c.zarr", DATA, "0.5", channels=2)
    both = Layer.open(str(tmp_path / "c.zarr"))
    assert both.num_channels == 2
    np.testing.assert_array_equal(both.read(both.bounds(2), 2), levels[2].transpose(3, 2, 1, 0))
    one = Layer.open(f"{tmp_path}/c.zarr#channel=1&level=2")
    np.testing.assert_array_equal(one.read(one.bounds()), levels[2][1].transpose())
    labels = (DATA // 64).astype(np.uint32)
    write_ome_zarr(tmp_path / "l.zarr", labels, "0.4", labels=True)
    assert Layer.open(str(tmp_path / "l.zarr")).layer_type == "segmentation"
    assert Layer.open(f"{tmp_path}/l.zarr#type=image").layer_type == "image"


def test_precomputed_prefix_and_writes_refused(tmp_path):
    spec = LayerSpec(layer_type="image", dtype="uint8", size=Vec3(56, 40, 6), resolution=(8, 8, 30))
    layer = Layer.create(f"file://{tmp_path}/raw", spec)
    layer.write(layer.bounds(), DATA.transpose().copy(order="F"))
    same = Layer.open(f"precomputed://file://{tmp_path}/raw")
    assert same.url == layer.url and FOREIGN not in same.info
    np.testing.assert_array_equal(same.read(same.bounds()), DATA.transpose())
    write_zarr2(tmp_path / "z", DATA)
    foreign = Layer.open(str(tmp_path / "z"))
    with pytest.raises(LayerMismatchError, match=r"cannot write to .* a zarr volume.*precomputed"):
        foreign.write(foreign.bounds(), DATA.transpose().copy(order="F"))
    with pytest.raises(LayerMismatchError, match="a zarr volume"):
        Layer.create(str(tmp_path / "z"), spec)
    with pytest.raises(LayerMismatchError, match="read only"):
        Layer.create("https://127.0.0.1:9/raw", spec)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("#level=3", "has levels 0..2, not #level=3"),
        ("#channel=2", "has channels 0..1, not #channel=2"),
        ("#lvl=1", "unknown option 'lvl=1'.*level, channel"),
        ("/0#axes=zyx", r"axes 'zyx' do not fit a 4-D array"),
    ],
)
def test_bad_volume_urls(tmp_path, suffix, message):
    write_ome_zarr(tmp_path / "c.zarr", DATA, "0.4", channels=2)
    with pytest.raises(InputError, match=message):
        Layer.open(f"{tmp_path}/c.zarr{suffix}")


def test_time_points_dtypes_groups_and_missing_metadata(tmp_path):
    import zarr

    zarr.open_array(str(tmp_path / "t.zarr"), mode="w", shape=(3, 1, 4, 8, 8), dtype="u1")
    with pytest.raises(InputError, match=r"3 time points.*#t=N"):
        Layer.open(str(tmp_path / "t.zarr"))
    assert Layer.open(f"{tmp_path}/t.zarr#t=2").bounds() == Box.from_shape((8, 8, 4))
    zarr.open_array(str(tmp_path / "i16.zarr"), mode="w", shape=(4, 8, 8), dtype="i2")
    with pytest.raises(InputError, match=r"holds int16.*petavox ingest"):
        Layer.open(str(tmp_path / "i16.zarr"))
    assert open_source(str(tmp_path / "i16.zarr")).dtype == np.int16  # ingest converts it
    zarr.open_array(str(tmp_path / "c.zarr"), mode="w", shape=(4, 8, 8), dtype="c8")
    with pytest.raises(InputError, match="integer and float volumes only"):
        Layer.open(str(tmp_path / "c.zarr"))
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    with pytest.raises(InputError, match=r"group without OME-Zarr multiscales.*array inside"):
        Layer.open(str(tmp_path / "g.zarr"))
    with pytest.raises(LayerNotFoundError, match="nor Zarr or N5 metadata"):
        Layer.open(f"zarr://{tmp_path}/nothing")
    write_n5(tmp_path / "n5", DATA)
    with pytest.raises(InputError, match="holds n5 metadata, not zarr3; use n5://"):
        Layer.open(f"zarr3://{tmp_path}/n5")


def test_ingest_source_reads_through_the_layer(tmp_path):
    levels = write_ome_zarr(tmp_path / "img.zarr", DATA, "0.5")
    source = open_source(f"{tmp_path}/img.zarr#level=1")
    assert isinstance(source, LayerSource)
    assert (source.shape, source.resolution) == (Vec3(28, 20, 6), (16.0, 16.0, 30.0))
    box = Box(Vec3(3, 2, 1), Vec3(20, 11, 6))
    np.testing.assert_array_equal(source.read(box), levels[1][1:6, 2:11, 3:20].transpose())


@pytest.fixture
def http_root(tmp_path):
    """A throwaway read-only HTTP server on 127.0.0.1 serving tmp_path; stopped after the test."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_http_layers_are_read_only(tmp_path, http_root):
    spec = LayerSpec(layer_type="image", dtype="uint8", size=Vec3(56, 40, 6), resolution=(8, 8, 30))
    layer = Layer.create(f"file://{tmp_path}/raw", spec)
    layer.write(layer.bounds(), DATA.transpose().copy(order="F"))
    remote = Layer.open(f"{http_root}/raw")
    np.testing.assert_array_equal(remote.read(remote.bounds()), DATA.transpose())
    levels = write_ome_zarr(tmp_path / "img.zarr", DATA, "0.4")
    remote = Layer.open(f"{http_root}/img.zarr")
    for mip, level in enumerate(levels):
        expect_level(remote, mip, level)
    with pytest.raises(LayerMismatchError, match=r"cannot write to http://.*precomputed layers"):
        remote.write(remote.bounds(), DATA.transpose().copy(order="F"))


class NoRay:
    """Stands in for the pipeline's `RaySession`: a refusal must come before any Ray session."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a Ray session was started for a bad input")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["downsample", "ftp://host/raw"], "unsupported storage URL 'ftp://host/raw'"),
        (["downsample", "zarr3://{tmp}/z3"], "cannot write to zarr3://.* a zarr3 volume"),
        (["downsample", "{tmp}/img.zarr#level=5", "{tmp}/out"], "not #level=5"),
        (["segment", "{tmp}/nothing", "{tmp}/out"], "no precomputed layer .*nor Zarr or N5"),
        (["infer", "{tmp}/t.zarr", "{tmp}/out"], "3 time points"),
        (["ingest", "{tmp}/img.zarr", "https://127.0.0.1:9/out"], "over http.*read only"),
        (["ingest", "{tmp}/img.zarr#channel=1", "{tmp}/out"], "has channels 0..0"),
    ],
)
def test_cli_refuses_bad_inputs_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    import zarr

    monkeypatch.setattr("petavox.workflows.pipeline.RaySession", NoRay)
    write_zarr3_sharded(tmp_path / "z3", DATA)
    write_ome_zarr(tmp_path / "img.zarr", DATA, "0.4")
    zarr.open_array(str(tmp_path / "t.zarr"), mode="w", shape=(3, 1, 4, 8, 8), dtype="u1")
    before = sorted(p.name for p in Path(tmp_path).iterdir())
    assert main([a.format(tmp=tmp_path) for a in args] + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("error:") == 1, err
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == before  # nothing written


def test_ingest_takes_the_layer_type_of_an_ome_zarr_unless_given(tmp_path):
    """An OME-Zarr label image ingests as a segmentation layer (compressed_segmentation)."""
    from petavox.workflows.pipeline import plan_run

    labels = (DATA // 64).astype(np.uint32)
    write_ome_zarr(tmp_path / "l.zarr", labels, "0.4", labels=True)

    def planned(**given) -> dict:
        ingest = {"stage": "ingest", "input": str(tmp_path / "l.zarr"), "output": "gt", **given}
        config = parse_config({"output": str(tmp_path / "run"), "stages": [ingest]})
        (plan,) = plan_run(config)
        (info,) = plan.layer_infos.values()
        return info

    found = planned()
    assert found["type"] == "segmentation"
    assert found["scales"][0]["encoding"] == "compressed_segmentation"
    assert planned(layer_type="image")["type"] == "image"  # as given
    assert not (tmp_path / "run").exists()  # planning writes nothing


@pytest.mark.parametrize(("group_factors", "unit"), [(True, "nm"), (False, "um")])
def test_n5_multiscale_group_reads_level_0_and_level_k(tmp_path, group_factors, unit):
    """s0, s1, s2 with downsamplingFactors (the group's `scales` list, or found by looking),
    pixelResolution in nm or µm: mip k is level k, at base resolution × its factors."""
    levels = write_n5_multiscale(tmp_path / "em.n5", DATA, group_factors, unit)
    layer = Layer.open(f"n5://{tmp_path}/em.n5")
    assert layer.info[FOREIGN]["arrays"] == ["s0", "s1", "s2"]
    assert (layer.num_mips, layer.layer_type) == (3, "image")
    for mip, level in enumerate(levels):
        assert layer.bounds(mip) == Box.from_shape(level.shape[::-1])
        assert layer.resolution(mip) == pytest.approx((8.0 * 2**mip, 8.0 * 2**mip, 30.0))
        np.testing.assert_array_equal(layer.read(layer.bounds(mip), mip), level.transpose())
    second = Layer.open(f"{tmp_path}/em.n5#level=1")  # detected from attributes.json
    assert second.num_mips == 2 and second.resolution() == pytest.approx((16.0, 16.0, 30.0))
    np.testing.assert_array_equal(second.read(second.bounds()), levels[1].transpose())
    with pytest.raises(InputError, match=r"has levels 0..2, not #level=3"):
        Layer.open(f"n5://{tmp_path}/em.n5#level=3")
    (tmp_path / "empty.n5").mkdir()
    (tmp_path / "empty.n5" / "attributes.json").write_text('{"n5": "2.5.1"}')
    with pytest.raises(InputError, match=r"N5 group without datasets s0, s1"):
        Layer.open(f"n5://{tmp_path}/empty.n5")


def offsets(layer: Layer) -> list[tuple[int, ...]]:
    return [tuple(layer.bounds(mip).start) for mip in range(layer.num_mips)]


def test_translations_within_a_thousandth_of_a_voxel_are_whole_voxels(tmp_path):
    near = {k: (256.0 + 0.004 * 2**k, 128.0 - 0.004, 300.0) for k in range(3)}
    levels = write_ome_zarr(tmp_path / "near.zarr", DATA, translations=near)
    layer = Layer.open(str(tmp_path / "near.zarr"))
    assert offsets(layer) == [(32, 16, 10), (16, 8, 10), (8, 4, 10)]
    expect_level(layer, 1, levels[1])


def test_centred_downsampling_translations_map_to_the_precomputed_mips(tmp_path):
    """translation_k = translation_0 + (scale_k - scale_0) / 2: level k starts where the
    precomputed mip k of level 0 would (its offset scaled down, floored)."""
    levels = write_ome_zarr(tmp_path / "c.zarr", DATA, translations=centred_translations())
    layer = Layer.open(str(tmp_path / "c.zarr"))
    assert offsets(layer) == [(32, 16, 10), (16, 8, 10), (8, 4, 10)]
    for mip, level in enumerate(levels):
        expect_level(layer, mip, level)
    odd = centred_translations((264.0, 136.0, 300.0))  # level 0 at voxel 33, 17, 10
    write_ome_zarr(tmp_path / "odd.zarr", DATA, translations=odd)
    assert offsets(Layer.open(str(tmp_path / "odd.zarr"))) == [
        (33, 17, 10),
        (16, 8, 10),
        (8, 4, 10),
    ]
    # reading from level 1 on: the same rule, against the volume's level 0
    assert offsets(Layer.open(f"{tmp_path}/odd.zarr#level=1")) == [(16, 8, 10), (8, 4, 10)]


def test_an_off_grid_translation_is_refused_naming_the_fix(tmp_path):
    off = dict.fromkeys(range(3), (260.0, 128.0, 300.0))  # x: 32.5 voxels of level 0
    write_ome_zarr(tmp_path / "off.zarr", DATA, translations=off)
    url = f"file://{tmp_path}/off.zarr"
    with pytest.raises(VolumeFormatError) as refused:
        Layer.open(url)
    text = str(refused.value)
    for part in (url, "level 0", "on x", "260 nm", "32.5 voxels of 8 nm", "0.5 of a voxel"):
        assert part in text, (part, text)
    assert "#offset=X,Y,Z" in text and "#offset=33,16,10" in text
    # level 1 has the same translation, 16.25 voxels: not the centred one either
    with pytest.raises(VolumeFormatError, match=r"level 1 is off .* on x is 260 nm, 16.25 vox"):
        Layer.open(f"{url}#level=1")
    fixed = Layer.open(f"{url}#offset=32,16,10")  # voxels of the level read; coarser follow
    assert offsets(fixed) == [(32, 16, 10), (16, 8, 10), (8, 4, 10)]
    assert offsets(Layer.open(f"{url}#level=1&offset=5,6,7")) == [(5, 6, 7), (2, 3, 7)]
    np.testing.assert_array_equal(fixed.read(fixed.bounds()), DATA.transpose())


def test_only_the_level_read_may_fail(tmp_path):
    """A coarse level off the grid: the volume still reads at level 0 (and 1); reading that
    level is refused, naming it."""
    odd = {2: (TRANSLATION_NM[0] + 5.0, TRANSLATION_NM[1], TRANSLATION_NM[2])}
    levels = write_ome_zarr(tmp_path / "odd.zarr", DATA, translations=odd)
    layer = Layer.open(str(tmp_path / "odd.zarr"))
    assert layer.num_mips == 3
    expect_level(layer, 0, levels[0])
    expect_level(layer, 1, levels[1])
    with pytest.raises(VolumeFormatError, match=r"level 2 is off .* on x is 261 nm"):
        layer.read(layer.bounds(2), 2)
    with pytest.raises(VolumeFormatError, match="level 2 is off"):
        Layer.open(f"{tmp_path}/odd.zarr#level=2")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("#offset=1,2", r"#offset= needs three whole numbers .* not '1,2'"),
        ("#offset=1.5,2,3", r"#offset= needs three whole numbers"),
        ("#resolution=8,0,30", r"#resolution= needs three sizes > 0 \(nm\)"),
        ("#resolution=a,b,c", r"#resolution= needs three sizes"),
    ],
)
def test_bad_offset_and_resolution_options(tmp_path, options, message):
    write_zarr2(tmp_path / "z", DATA)
    with pytest.raises(InputError, match=message):
        Layer.open(f"{tmp_path}/z{options}")
    layer = Layer.open(f"{tmp_path}/z#offset=3,-2,1&resolution=4,4,40")
    assert layer.bounds() == Box.from_shape(DATA.shape[::-1], Vec3(3, -2, 1))
    assert layer.resolution() == (4.0, 4.0, 40.0)
    np.testing.assert_array_equal(layer.read(layer.bounds()), DATA.transpose())
