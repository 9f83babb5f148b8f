"""Where a classifier comes from: the one shipped in the package (``petavox:NAME``), a local
file or a file/s3/gs URL."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from petavox.tasks.classify.forest import Forest
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.objects import fetch_file
from petavox.tasks.core.storage import StorageContext

BUILTIN = "petavox:"
BUILTIN_CELLS = "petavox:cells-synthetic.json"  # trained on the generator's cell classes
_PARSED: dict[str, Forest] = {}  # by the file's digest: a worker parses each model once
_PARSED_MAX = 4


def fetch_classifier(url: str, context: StorageContext = StorageContext()) -> bytes:
    """The bytes of the classifier at `url`; an InputError naming it when there is none."""
    if url.startswith(BUILTIN):
        folder = Path(str(resources.files("petavox.tasks.classify"))) / "models"
        path = folder / url[len(BUILTIN) :]
        if not path.is_file():
            shipped = ", ".join(sorted(p.name for p in folder.glob("*.json"))) or "none"
            raise InputError(f"no built-in classifier {url!r}; petavox ships {shipped}")
        return path.read_bytes()
    data = fetch_file(url, context)
    if data is None:
        raise InputError(
            f"classifier {url} does not exist; give --model a path or URL, and check the "
            "URL and credentials"
        )
    return data


def parse_classifier(data: bytes, url: str) -> Forest:
    """The classifier in `data` (read from `url`); an InputError when it is not one."""
    try:
        return Forest.from_json(data)
    except (ValueError, KeyError) as exc:
        raise InputError(f"{url} is not a petavox classifier: {exc}") from None


def load_classifier(url: str, context: StorageContext = StorageContext()) -> Forest:
    """The classifier at `url`, parsed (once per process for the same bytes: the tasks of a
    step all load it; read-only)."""
    data = fetch_classifier(url, context)
    key = hashlib.sha256(data).hexdigest()
    if key not in _PARSED:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = parse_classifier(data, url)
    return _PARSED[key]
