"""Tile manifests: which image file holds each tile of each section, and where the stage put it.

`read_manifest` reads one local manifest file and returns `TileEntry`s sorted by section, then
y, then x. Positions are nominal (the stage's), in pixels, of each tile's top-left pixel; the
montage refines them. Tile paths relative to the manifest are resolved against its folder into
absolute ``file://`` URLs (``"file://" + absolute path``, as `core.storage.normalize_url`
writes them); ``gs://``, ``s3://`` and ``http(s)://`` URLs are kept as they are. Image files are
not opened or checked here. The format is chosen by file name, else by content:

* petavox CSV (``*.csv``): a header row naming ``section,file,x,y`` and optionally ``unit``
  (``px``, the default, or ``nm``: then `pixel_size_nm` is needed); other columns are ignored.
* petavox JSON (``*.json``): ``{"unit": "px", "tiles": [{"section", "file", "x", "y"}, ...]}``.
* Fiji/ImageJ Grid/Collection stitching ``TileConfiguration.txt`` (and the
  ``TileConfiguration.registered.txt`` it writes). Confirmed against the plugin's parser
  (fiji/Stitching, ``Stitching_Grid.getLayoutFromFile``): lines are trimmed, lines starting
  with ``#`` or of 3 characters or fewer are skipped, ``dim = n`` must come before the tiles,
  and each tile line is ``file; series; (x, y)``: three ``;``-separated fields, the series
  usually empty, as many coordinates as ``dim``, in pixels, file names relative to the file's
  folder. ``multiseries = true`` (tiles as series of one file) and ``dim = 3`` are refused.
  It has no sections: every tile is section 0.
* Zeiss MultiSEM ``full_image_coordinates.txt``. Confirmed from the readers in the Lichtman
  lab's mb_aligner and Janelia's EM_recon_pipeline (no Zeiss specification was found): one
  tab-separated line per tile, ``<path>\\t<x>\\t<y>\\t<z>``, written on Windows (CRLF, ``\\``
  in paths such as ``000007\\020_000007_082_<timestamp>.png``), paths relative to the file's
  folder; both readers use x and y directly as the pixel offsets of the tile's top-left corner
  (large stage values, often negative: they subtract the minimum, which is left to the montage
  here). Assumed: the fourth column is the section index (0 when absent). The sample lines
  found all carry 0 there, and those readers take the section from the folder name
  (``<nnn>_S<section>R1``) instead, one file per section. mb_aligner also keeps only the
  newest of a beam listed twice (same ``<section>_<mfov>_<beam>`` name prefix); here the same
  file listed twice is an error, and re-takes under new names are all kept.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from petavox.tasks.core.errors import InputError

REMOTE_SCHEMES = ("gs", "s3", "http", "https")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_COLUMNS = ("section", "file", "x", "y")
_FORMATS = (
    "a petavox CSV (*.csv, header section,file,x,y[,unit]), a petavox JSON (*.json, "
    '{"unit": "px", "tiles": [...]}), a Fiji TileConfiguration.txt or a Zeiss MultiSEM '
    "full_image_coordinates.txt"
)
_EMPTY_FIX = "add one line per tile: its section (if the format has one), image file, x and y"


@dataclass(frozen=True)
class TileEntry:
    """One tile: its section, its image's URL and the nominal position of its top-left pixel."""

    section: int  # section index (z)
    url: str  # absolute file:// URL, or a gs://, s3://, http(s):// URL as given
    x: float  # nominal stage position of the tile's top-left pixel, in pixels
    y: float


@dataclass(frozen=True)
class _Row:
    """A tile as read, before its path is resolved; `where` names its line for messages."""

    where: str
    section: int
    file: str
    x: float
    y: float


def read_manifest(path: str | Path, pixel_size_nm: float | None = None) -> list[TileEntry]:
    """The tiles of the manifest at `path` (a local file), sorted by section, y, then x.

    `pixel_size_nm` converts positions given in nm (``unit`` ``nm``) to pixels."""
    path = Path(path)
    if pixel_size_nm is not None and not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise InputError(f"pixel_size_nm {pixel_size_nm!r} must be a positive number of nm")
    text = _read_text(path)
    if not text.strip():
        raise InputError(f"{path}: the tile manifest is empty; {_EMPTY_FIX}")
    rows = _READERS[manifest_format(path, text)](path, text, pixel_size_nm)
    return _entries(path, rows)


def manifest_format(path: str | Path, text: str) -> str:
    """``csv``, ``json``, ``fiji`` or ``multisem``: by file name, else by the first content."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".json"):
        return "json"
    if name.startswith("tileconfiguration") and name.endswith(".txt"):
        return "fiji"
    if "image_coordinates" in name and name.endswith(".txt"):
        return "multisem"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    content = next((ln for ln in lines if not ln.startswith("#")), "")
    if first.startswith("{"):
        return "json"
    if re.match(r"dim\s*=", content) or content.count(";") == 2:
        return "fiji"
    if "\t" in content:
        return "multisem"
    if {"section", "file"} <= {c.strip().lower() for c in first.split(",")}:
        return "csv"
    raise InputError(f"{path}: unknown tile manifest format; give {_FORMATS}")


def _read_text(path: Path) -> str:
    """The manifest's text (UTF-8, a byte-order mark dropped; any line endings)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"tile manifest {path} not found; check the path") from None
    except UnicodeDecodeError as err:
        problem = f"{path}: not a UTF-8 text file ({err.reason})"
        raise InputError(f"{problem}; save it as UTF-8") from None
    except OSError as err:
        raise InputError(f"cannot read tile manifest {path}: {err.strerror}") from None


def _error(path: Path, where: str, problem: str, fix: str) -> InputError:
    return InputError(f"{path}, {where}: {problem}; {fix}")


def _as_float(value: object) -> float | None:
    """A number from a cell or a JSON value (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _number(path: Path, where: str, name: str, value: object) -> float:
    """A finite position."""
    value = value.strip() if isinstance(value, str) else value
    number = _as_float(value)
    if number is None or not math.isfinite(number):
        raise _error(path, where, f"{name} is {value!r}, not a number", "write it as e.g. 1024.5")
    return number


def _section(path: Path, where: str, value: object) -> int:
    """A section index: a whole number ≥ 0 (``3`` or ``3.0``)."""
    value = value.strip() if isinstance(value, str) else value
    number = _as_float(value)
    if number is None or not number.is_integer() or number < 0:
        raise _error(
            path, where, f"section is {value!r}", "give the section index as a whole number ≥ 0"
        )
    return int(number)


def _scale(path: Path, where: str, unit: object, pixel_size_nm: float | None) -> float:
    """Pixels per unit of the positions: 1 for ``px``, 1 / `pixel_size_nm` for ``nm``."""
    unit = "px" if unit is None or unit == "" else str(unit).strip().lower()
    if unit == "px":
        return 1.0
    if unit != "nm":
        raise _error(path, where, f"unknown unit {unit!r}", "use px (the default) or nm")
    if pixel_size_nm is None:
        raise _error(
            path,
            where,
            "positions are in nm but no pixel size was given",
            "pass pixel_size_nm (the tiles' pixel size in nm), or give positions in px",
        )
    return 1.0 / pixel_size_nm


def _csv_rows(path: Path, text: str, pixel_size_nm: float | None) -> list[_Row]:
    """Rows of a petavox CSV: header ``section,file,x,y[,unit]``, extra columns ignored."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    names = [c.strip().lower() for c in header or []]
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise _error(
            path,
            "line 1",
            f"missing column(s) {', '.join(missing)} (header read: {','.join(header or [])!r})",
            "the first line must be a header naming section,file,x,y (and optionally unit)",
        )
    index = {name: names.index(name) for name in (*_COLUMNS, "unit") if name in names}
    rows = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        where = f"line {reader.line_num}"
        if len(cells) <= max(index[c] for c in _COLUMNS):
            raise _error(
                path,
                where,
                f"{len(cells)} value(s) for {len(names)} columns",
                "give one value per header column",
            )
        unit = cells[index["unit"]] if index.get("unit", len(cells)) < len(cells) else None
        scale = _scale(path, where, unit, pixel_size_nm)
        section, file = cells[index["section"]], cells[index["file"]]
        rows.append(_row(path, where, section, file, cells[index["x"]], cells[index["y"]], scale))
    return rows


def _json_rows(path: Path, text: str, pixel_size_nm: float | None) -> list[_Row]:
    """Tiles of a petavox JSON: ``{"unit": "px"|"nm", "tiles": [{section, file, x, y}]}``."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}"
        raise _error(path, where, f"not valid JSON ({err.msg})", "fix the syntax") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tiles"), list):
        raise _error(
            path,
            "top level",
            "no list of tiles",
            'write an object {"unit": "px", "tiles": [{"section": 0, "file": "t.tif", '
            '"x": 0, "y": 0}, ...]}',
        )
    scale = _scale(path, '"unit"', doc.get("unit"), pixel_size_nm)
    rows = []
    for i, tile in enumerate(doc["tiles"]):
        where = f"tiles[{i}]"
        if not isinstance(tile, dict):
            raise _error(path, where, f"{tile!r} is not an object", 'write {"section": 0, ...}')
        missing = [k for k in _COLUMNS if k not in tile]
        if missing:
            raise _error(
                path, where, f"missing {', '.join(missing)}", "give section, file, x and y"
            )
        file = tile["file"] if isinstance(tile["file"], str) else ""
        rows.append(_row(path, where, tile["section"], file, tile["x"], tile["y"], scale))
    return rows


def _fiji_rows(path: Path, text: str, pixel_size_nm: float | None) -> list[_Row]:
    """Tiles of a Fiji TileConfiguration (``file; ; (x, y)``, dim = 2), all in section 0."""
    dim = None
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line, where = raw.strip(), f"line {number}"
        if line.startswith("#") or len(line) <= 3:
            continue
        key, _, value = line.partition("=")
        if key.strip() == "dim":
            dim = value.strip()
            if dim != "2":
                raise _error(
                    path,
                    where,
                    f"dim = {dim}: only 2-D tile positions are read (sections are montaged "
                    "one by one)",
                    "give each tile's 2-D position, (x, y), with dim = 2, or list the tiles "
                    "of each section in a petavox CSV with a section column",
                )
            continue
        if key.strip() == "multiseries":
            if value.strip() == "true":
                raise _error(
                    path,
                    where,
                    "multiseries = true (tiles as series inside one file)",
                    "save each tile as its own image file and list those",
                )
            continue
        if dim is None:
            raise _error(path, where, "tile before the 'dim = 2' line", "add dim = 2 above it")
        rows.append(_fiji_tile(path, where, line))
    return rows


def _fiji_tile(path: Path, where: str, line: str) -> _Row:
    """One ``file; series; (x, y)`` line."""
    fields = line.split(";")
    point = fields[-1].strip()
    if len(fields) != 3 or not (point.startswith("(") and point.endswith(")")):
        raise _error(path, where, f"cannot read {line!r}", "write it as file.tif; ; (x, y)")
    coords = point[1:-1].split(",")
    if len(coords) != 2:
        raise _error(path, where, f"{len(coords)} coordinates in {point}", "give (x, y)")
    return _row(path, where, 0, fields[0].strip(), coords[0], coords[1], 1.0)


def _multisem_rows(path: Path, text: str, pixel_size_nm: float | None) -> list[_Row]:
    """Tiles of a MultiSEM ``full_image_coordinates.txt``: path, x, y[, z] separated by tabs."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"line {number}"
        if len(fields) < 3:
            raise _error(
                path,
                where,
                f"{len(fields)} tab-separated field(s)",
                "give the image path, x and y (and optionally z), separated by tabs",
            )
        section = fields[3] if len(fields) > 3 and fields[3].strip() else 0
        file = fields[0].strip().replace("\\", "/")
        rows.append(_row(path, where, section, file, fields[1], fields[2], 1.0))
    return rows


def _row(
    path: Path, where: str, section: object, file: str, x: object, y: object, scale: float
) -> _Row:
    """A checked row: a section index, a file name, positions scaled to pixels."""
    file = file.strip()
    if not file:
        raise _error(path, where, "no image file", "give the tile's image path or URL")
    x_px = _number(path, where, "x", x) * scale
    y_px = _number(path, where, "y", y) * scale
    return _Row(where, _section(path, where, section), file, x_px, y_px)


def _tile_url(path: Path, row: _Row) -> str:
    """The tile's URL: remote URLs as given, local paths absolute ``file://``."""
    match = _SCHEME.match(row.file)
    local = row.file
    if match:
        scheme = match.group(1).lower()
        if scheme in REMOTE_SCHEMES:
            return row.file
        if scheme != "file":
            raise _error(
                path,
                row.where,
                f"unsupported URL scheme {scheme}:// in {row.file!r}",
                "give a local path or a file://, gs://, s3:// or http(s):// URL",
            )
        local = row.file[len("file://") :]
    folder = os.path.dirname(os.path.abspath(path))
    return "file://" + os.path.normpath(os.path.join(folder, local))


def _entries(path: Path, rows: list[_Row]) -> list[TileEntry]:
    """Resolved, duplicate-checked and sorted entries; an empty manifest is an error."""
    if not rows:
        raise InputError(f"{path}: the tile manifest lists no tiles; {_EMPTY_FIX}")
    seen: dict[tuple[int, str], str] = {}
    entries = []
    for row in rows:
        url = _tile_url(path, row)
        first = seen.setdefault((row.section, url), row.where)
        if first != row.where:
            raise _error(
                path,
                row.where,
                f"tile {row.file!r} is listed twice for section {row.section} (also {first})",
                "remove one of the two (each tile once per section)",
            )
        entries.append(TileEntry(row.section, url, row.x, row.y))
    return sorted(entries, key=lambda e: (e.section, e.y, e.x, e.url))


_READERS: dict[str, Callable[[Path, str, float | None], list[_Row]]] = {
    "csv": _csv_rows,
    "json": _json_rows,
    "fiji": _fiji_rows,
    "multisem": _multisem_rows,
}
