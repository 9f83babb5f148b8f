"""Tile manifests: the four formats, path resolution, sorting, units and the errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import local_path
from petavox.tasks.montage.manifest import TileEntry, manifest_format, read_manifest


def url_of(path: Path) -> str:
    return "file://" + os.path.normpath(str(path))


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline=newline) as f:
        f.write(text)
    return path


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_manifest(path, **kwargs)
    message = str(info.value)
    assert str(path) in message  # every message names the file
    return message


def test_csv_resolves_paths_keeps_remote_urls_and_sorts(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "b.tif"
    manifest = write(
        tmp_path / "run" / "tiles.csv",
        "file,Section,x,y,note\n"  # any column order and case; extra columns ignored
        "raw/c.tif,1,0,0,first\n"
        f"{elsewhere},0,500,10,\n"
        "gs://bucket/run/a.tif,0,20,10,\n"
        "\n"
        "./raw/../raw/d.tif,0,0,900,\n",
    )
    entries = read_manifest(str(manifest))  # a str path works too
    assert entries == [
        TileEntry(0, "gs://bucket/run/a.tif", 20.0, 10.0),
        TileEntry(0, url_of(elsewhere), 500.0, 10.0),
        TileEntry(0, url_of(tmp_path / "run" / "raw" / "d.tif"), 0.0, 900.0),
        TileEntry(1, url_of(tmp_path / "run" / "raw" / "c.tif"), 0.0, 0.0),
    ]


def test_local_urls_lead_back_to_the_tile_files(tmp_path):
    (tmp_path / "raw").mkdir()
    for name in ("a b.tif", "c.tif"):
        (tmp_path / "raw" / name).write_bytes(b"")
    manifest = write(tmp_path / "m.csv", "section,file,x,y\n0,raw/a b.tif,0,0\n0,raw/c.tif,9,0\n")
    paths = [local_path(e.url) for e in read_manifest(manifest)]
    assert [os.path.basename(p) for p in paths] == ["a b.tif", "c.tif"]
    assert all(os.path.isfile(p) for p in paths)


def test_csv_unit_column_converts_nm_per_row(tmp_path):
    manifest = write(
        tmp_path / "m.csv",
        "section,file,x,y,unit\n0,a.tif,4096,2048,nm\n0,b.tif,7,3,\n0,c.tif,5,6,PX\n",
    )
    got = {os.path.basename(e.url): (e.x, e.y) for e in read_manifest(manifest, pixel_size_nm=4)}
    assert got == {"a.tif": (1024.0, 512.0), "b.tif": (7.0, 3.0), "c.tif": (5.0, 6.0)}


def test_nm_positions_need_a_pixel_size(tmp_path):
    manifest = write(tmp_path / "m.csv", "section,file,x,y,unit\n0,a.tif,0,0,px\n0,b.tif,8,8,nm\n")
    message = error_of(manifest)
    assert "line 3" in message and "pixel_size_nm" in message
    with pytest.raises(InputError, match="pixel_size_nm"):
        read_manifest(manifest, pixel_size_nm=0)


def test_json_with_nm_and_remote_urls(tmp_path):
    doc = {
        "unit": "nm",
        "tiles": [
            {"section": 2, "file": "s3://bucket/t1.png", "x": 80, "y": 0},
            {"section": 2, "file": "https://host/t0.png", "x": 0, "y": 0, "extra": True},
            {"section": 1, "file": "t/z.png", "x": 0.5, "y": 16},
        ],
    }
    manifest = write(tmp_path / "tiles.json", json.dumps(doc))
    assert read_manifest(manifest, pixel_size_nm=8) == [
        TileEntry(1, url_of(tmp_path / "t" / "z.png"), 0.0625, 2.0),
        TileEntry(2, "https://host/t0.png", 0.0, 0.0),
        TileEntry(2, "s3://bucket/t1.png", 10.0, 0.0),
    ]


@pytest.mark.parametrize("name", ["TileConfiguration.txt", "TileConfiguration.registered.txt"])
def test_fiji_tile_configuration_is_section_zero(tmp_path, name):
    manifest = write(
        tmp_path / name,
        "# Define the number of dimensions we are working on\n"
        "dim = 2\n"
        "\n"
        "# Define the image coordinates\n"
        "tile_2.tif; ; (921.5, -3.25)\n"
        "  tile_1.tif;;(0.0,0.0)  \n"
        "sub/tile_3.tif; ; (1.0E3, 850.0)\n",
    )
    assert read_manifest(manifest) == [
        TileEntry(0, url_of(tmp_path / "tile_2.tif"), 921.5, -3.25),
        TileEntry(0, url_of(tmp_path / "tile_1.tif"), 0.0, 0.0),
        TileEntry(0, url_of(tmp_path / "sub" / "tile_3.tif"), 1000.0, 850.0),
    ]


def test_fiji_three_dimensional_layout_is_refused(tmp_path):
    manifest = write(
        tmp_path / "TileConfiguration.txt",
        "# Define the number of dimensions we are working on\ndim = 3\n\n"
        "# Define the image coordinates\ntile_1.tif; ; (0.0, 0.0, 0.0)\n",
    )
    message = error_of(manifest)
    assert "line 2" in message and "dim = 3" in message and "2-D" in message


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        ("a.tif; ; (0, 0)\n", "line 1", "dim = 2"),  # no header
        ("dim = 2\na.tif; (0, 0)\n", "line 2", "file.tif; ; (x, y)"),
        ("dim = 2\na.tif; ; (0, 0, 0)\n", "line 2", "3 coordinates"),
        ("dim = 2\na.tif; ; (0, zero)\n", "line 2", "'zero', not a number"),
        ("dim = 2\nmultiseries = true\na.czi; 0; (0, 0)\n", "line 2", "multiseries"),
    ],
)
def test_fiji_errors_name_the_line(tmp_path, body, line, fragment):
    message = error_of(write(tmp_path / "TileConfiguration.txt", body))
    assert line in message and fragment in message


def test_multisem_full_image_coordinates(tmp_path):
    section = tmp_path / "wafer" / "010_S10R1"
    manifest = write(
        section / "full_image_coordinates.txt",
        "000001\\001_000001_002_2021-05-25T2146499297643.bmp\t-372876.505\t-123997.579\t3\n"
        "000001\\001_000001_001_2021-05-25T2146499297643.bmp\t-372876.505\t-125000\t3\n"
        "000002\\001_000002_001_2021-05-25T2146499297643.bmp\t-360000\t-125000\t4\n",
        newline="\r\n",  # the microscope writes on Windows
    )
    entries = read_manifest(manifest)
    tile = section / "000001" / "001_000001_001_2021-05-25T2146499297643.bmp"
    assert entries[0] == TileEntry(3, url_of(tile), -372876.505, -125000.0)
    assert [(e.section, e.y) for e in entries] == [(3, -125000.0), (3, -123997.579), (4, -125000)]
    assert all("\\" not in e.url for e in entries)


def test_multisem_without_z_is_section_zero(tmp_path):
    text = "001\\a.bmp\t5\t6\n001\\b.bmp\t7\t8\n"
    manifest = write(tmp_path / "full_image_coordinates.txt", text)
    entries = read_manifest(manifest)
    assert [(e.section, e.x, e.y) for e in entries] == [(0, 5.0, 6.0), (0, 7.0, 8.0)]


def test_format_by_content_when_the_name_does_not_tell(tmp_path):
    assert manifest_format(tmp_path / "layout.txt", "# c\ndim = 2\na.tif; ; (0, 0)\n") == "fiji"
    assert manifest_format(tmp_path / "coords.txt", "a.bmp\t1\t2\t0\n") == "multisem"
    assert manifest_format(tmp_path / "tiles", '{"tiles": []}') == "json"
    assert manifest_format(tmp_path / "tiles.txt", "section,file,x,y\n") == "csv"
    manifest = write(tmp_path / "positions.txt", "a.bmp\t1\t2\t5\n")
    assert read_manifest(manifest)[0].section == 5


def test_unknown_format(tmp_path):
    manifest = write(tmp_path / "project.xml", "<trakem2><t2_patch/></trakem2>\n")
    message = error_of(manifest)
    assert "unknown tile manifest format" in message and "TileConfiguration" in message


def test_missing_columns(tmp_path):
    manifest = write(tmp_path / "m.csv", "section,path,x,y\n0,a.tif,0,0\n")
    message = error_of(manifest)
    assert "line 1" in message and "missing column(s) file" in message and "header" in message
    headless = write(tmp_path / "n.csv", "0,a.tif,0,0\n1,b.tif,0,0\n")
    assert "missing column(s) section, file, x, y" in error_of(headless)


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("0,b.tif,12px,0", "x is '12px', not a number"),
        ("0,b.tif,0,", "y is '', not a number"),
        ("0,b.tif,0,nan", "y is 'nan', not a number"),
        ("1.5,b.tif,0,0", "section is '1.5'"),
        ("-1,b.tif,0,0", "section is '-1'"),
        ("0,,0,0", "no image file"),
        ("0,b.tif,0", "3 value(s) for 4 columns"),
        ("0,b.tif,0,0,furlong", "unknown unit 'furlong'"),
        ("0,ftp://host/b.tif,0,0", "unsupported URL scheme ftp://"),
    ],
)
def test_bad_csv_rows_name_the_line(tmp_path, row, fragment):
    header = "section,file,x,y,unit" if "furlong" in row else "section,file,x,y"
    manifest = write(tmp_path / "m.csv", f"{header}\n0,a.tif,0,0\n{row}\n")
    message = error_of(manifest)
    assert "line 3" in message and fragment in message


def test_a_tile_listed_twice_in_a_section(tmp_path):
    manifest = write(
        tmp_path / "m.csv",
        "section,file,x,y\n0,raw/a.tif,0,0\n1,raw/a.tif,0,0\n0,./raw/a.tif,5,5\n",
    )
    message = error_of(manifest)
    assert "line 4" in message and "line 2" in message and "listed twice for section 0" in message


def test_the_same_tile_in_two_sections_is_allowed(tmp_path):
    manifest = write(tmp_path / "m.csv", "section,file,x,y\n0,a.tif,0,0\n1,a.tif,0,0\n")
    assert [e.section for e in read_manifest(manifest)] == [0, 1]


def test_multisem_duplicate_line(tmp_path):
    line = "001\\a.bmp\t5\t6\t0\n"
    manifest = write(tmp_path / "full_image_coordinates.txt", line + "001\\b.bmp\t0\t0\t0\n" + line)
    assert "line 3" in error_of(manifest)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("m.csv", ""),
        ("m.csv", "section,file,x,y\n\n"),
        ("m.json", '{"unit": "px", "tiles": []}'),
        ("TileConfiguration.txt", "# Define the number of dimensions\ndim = 2\n"),
        ("full_image_coordinates.txt", "\r\n"),
    ],
)
def test_empty_manifests(tmp_path, name, text):
    message = error_of(write(tmp_path / name, text))
    assert "empty" in message or "lists no tiles" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"tiles": [{"section": 0, "file": "a.tif", "x": 0}]}', "tiles[0]: missing y"),
        ('[{"section": 0, "file": "a.tif", "x": 0, "y": 0}]', "no list of tiles"),
        ('{"tiles": [\n{"section": 0,, }]}', "line 2: not valid JSON"),
        ('{"tiles": [{"section": 0, "file": "a", "x": 0, "y": 0}, 7]}', "tiles[1]: 7 is not"),
        ('{"tiles": [{"section": true, "file": "a", "x": 0, "y": 0}]}', "section is True"),
        ('{"unit": "um", "tiles": [{"section": 0, "file": "a", "x": 0, "y": 0}]}', "'um'"),
    ],
)
def test_bad_json(tmp_path, text, fragment):
    assert fragment in error_of(write(tmp_path / "m.json", text))


def test_missing_manifest_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "nope.csv")
