"""Small objects in a store (info files, done-markers): get, put, list.

On ``file://`` these use the standard library; elsewhere cloud-files. The local path matters
because importing cloud-files (which imports the GCS and S3 clients) takes longer than the
whole of a resumed run that has nothing left to do: `petavox status` and a finished rerun read
infos and list markers, nothing else.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from petavox.tasks.core.storage import StorageContext, local_path


def _files(url: str, context: StorageContext):
    context.apply()
    from cloudfiles import CloudFiles

    return CloudFiles(url)


def get(url: str, key: str, context: StorageContext = StorageContext()) -> bytes | None:
    """The object's bytes, or None if there is none."""
    path = local_path(url)
    if path is not None:
        target = os.path.join(path, key)
        if not os.path.exists(target):
            # cloud-files may have stored it gzipped beside the plain name
            return _files(url, context).get(key) if os.path.exists(target + ".gz") else None
        with open(target, "rb") as f:
            return f.read()
    return _files(url, context).get(key)


def put(url: str, key: str, data: bytes, context: StorageContext = StorageContext()) -> None:
    """Write bytes; on file:// atomically (a reader never sees half a file)."""
    path = local_path(url)
    if path is None:
        _files(url, context).put(key, data, compress=None, cache_control="no-cache")
        return
    target = os.path.join(path, key)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, target)


def put_json(url: str, key: str, value: Any, context: StorageContext = StorageContext()) -> None:
    if local_path(url) is None:
        _files(url, context).put_json(key, value, cache_control="no-cache")
        return
    put(url, key, json.dumps(value).encode(), context)


def put_array(url: str, key: str, array: np.ndarray, context: StorageContext = StorageContext()):
    """Store an array as .npy (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    put(url, key, buf.getvalue(), context)


def put_arrays(
    url: str, key: str, arrays: dict[str, np.ndarray], context: StorageContext = StorageContext()
) -> None:
    """Store named arrays as one .npz (never pickled)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    put(url, key, buf.getvalue(), context)


def get_arrays(url: str, key: str, context: StorageContext = StorageContext()) -> dict:
    """Arrays stored by `put_arrays`; a missing object is a `FileNotFoundError` naming it."""
    data = get(url, key, context)
    if data is None:
        raise FileNotFoundError(f"{url}/{key} is missing; rerun the stage that writes it")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def get_array(url: str, key: str, context: StorageContext = StorageContext()) -> np.ndarray:
    """An array stored by `put_array`; a missing one is a `FileNotFoundError` naming it."""
    data = get(url, key, context)
    if data is None:
        raise FileNotFoundError(f"{url}/{key} is missing; rerun the stage that writes it")
    return np.load(io.BytesIO(data), allow_pickle=False)


def list_keys(url: str, prefix: str, context: StorageContext = StorageContext()) -> Iterator[str]:
    """Keys under ``url`` that start with `prefix`: a folder (``"flows/"``) or a folder plus the
    start of a name (``"mesh/12"``); only the folder's own files, not its subfolders'."""
    path = local_path(url)
    if path is None:
        folder_depth = prefix.count("/")
        for key in _files(url, context).list(prefix=prefix):
            if key.count("/") == folder_depth:
                yield key
        return
    folder, _, start = prefix.rpartition("/")
    directory = os.path.join(path, folder)
    if not os.path.isdir(directory):
        return
    lead = folder + "/" if folder else ""
    for entry in os.scandir(directory):
        name = entry.name.removesuffix(".gz")  # cloud-files may have stored it gzipped
        if name.startswith(start) and not name.startswith(".tmp-") and entry.is_file():
            yield lead + name
