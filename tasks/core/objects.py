"""Objects in a store (info files, ledger segments, tables, encoded chunks): get, put, list,
and delete a folder (`petavox clean`; runs never delete).

On ``file://`` these use the standard library; elsewhere cloud-files. The local path matters
because importing cloud-files (which imports the GCS and S3 clients) takes longer than the
whole of a resumed run that has nothing left to do: `petavox status` and a finished rerun read
infos and the ledger, nothing else.

Every write of a task goes through `put` or `put_encoded`, so `recording_writes` sees all of
them: a chunk's record in the ledger lists the objects its task wrote with their stored sizes, and a
listing (names and sizes, never the data) later tells whether they are still there, whole.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from petavox.tasks.core.storage import StorageContext, local_path

#: up to this many keys, `get_many` fetches on its own threads (see there)
FEW_KEYS = 32

#: (url, key) -> stored size of each object written since `recording_writes` began
_written: ContextVar[dict[tuple[str, str], int] | None] = ContextVar("written", default=None)


@contextmanager
def recording_writes() -> Iterator[dict[tuple[str, str], int]]:
    """Collect ``(url, key) -> stored size`` of every object written inside the block (the last
    write of a key wins)."""
    written: dict[tuple[str, str], int] = {}
    token = _written.set(written)
    try:
        yield written
    finally:
        _written.reset(token)


def note_written(url: str, key: str, size: int) -> None:
    """Record an object written by other means (tensorstore) in the current task's record."""
    written = _written.get()
    if written is not None:
        written[(url, key)] = size


def files(url: str, context: StorageContext):
    """A cloud-files client for `url` (remote stores, and compressed local files)."""
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
            return files(url, context).get(key) if os.path.exists(target + ".gz") else None
        with open(target, "rb") as f:
            return f.read()
    return files(url, context).get(key)


def fetch_file(url: str, context: StorageContext = StorageContext()) -> bytes | None:
    """The bytes of one file: a local path or a file/s3/gs URL (a model, a labels table);
    None when there is none."""
    path = local_path(url) if "://" in url else url
    if path is not None:
        return Path(path).read_bytes() if Path(path).is_file() else None
    folder, _, key = url.rpartition("/")
    return get(folder, key, context)


def get_many(
    url: str, keys: Iterable[str], context: StorageContext = StorageContext()
) -> dict[str, bytes | None]:
    """Each object's bytes (None if there is none); remote ones fetched in parallel."""
    keys = list(keys)
    if local_path(url) is not None or not keys:
        return {key: get(url, key, context) for key in keys}
    if len(keys) > FEW_KEYS:
        found = files(url, context).get(keys, return_dict=True)
        return {key: found.get(key) for key in keys}
    # A few keys on threads of our own: cloud-files' threaded get polls its queue every 0.1 s,
    # which made each small metadata read (a layer's Zarr/N5 probe, ledger markers) cost 0.1 s.
    client = files(url, context)
    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        return dict(zip(keys, pool.map(client.get, keys)))


def put(
    url: str,
    key: str,
    data: bytes,
    context: StorageContext = StorageContext(),
    content_type: str | None = None,
) -> None:
    """Write bytes; on file:// atomically (a reader never sees half a file)."""
    path = local_path(url)
    if path is None:
        files(url, context).put(
            key, data, content_type=content_type, compress=None, cache_control="no-cache"
        )
    else:
        write_atomically(os.path.join(path, key), data)
    note_written(url, key, len(data))


def put_encoded(
    url: str,
    key: str,
    data: bytes,
    *,
    compress: str | None,
    content_type: str,
    cache_control: str,
    context: StorageContext = StorageContext(),
) -> None:
    """Write an encoded chunk, compressed with `compress` (gzip, ...) and stored with that
    Content-Encoding, as cloud-volume's upload does; on file:// uncompressed and atomically."""
    if local_path(url) is not None:
        put(url, key, data, context)
        return
    from cloudfiles import compression

    stored = compression.compress(data, compress)
    files(url, context).put(
        key,
        stored,
        content_type=content_type,
        compress=compress,
        cache_control=cache_control,
        raw=True,
    )
    note_written(url, key, len(stored))


def write_atomically(target: str, data: bytes | memoryview) -> None:
    """Write a file under a temporary name in its folder, then rename it into place: a process
    killed mid-write leaves a ``.tmp-`` file (which no reader takes for data), never half a file
    under the real name. Files get the mode a plain open() gives (0666 less the umask, so 0644
    under umask 022; `tempfile.mkstemp` would make them 0600), folders that of os.makedirs."""
    folder, name = os.path.split(target)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def put_json(url: str, key: str, value: Any, context: StorageContext = StorageContext()) -> None:
    put(url, key, json.dumps(value).encode(), context, content_type="application/json")


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
        for key in files(url, context).list(prefix=prefix):
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


def list_sizes(url: str, folder: str, context: StorageContext = StorageContext()) -> dict[str, int]:
    """Key -> stored size of each object in `folder` (``""`` or ending in ``/``), not in its
    subfolders: one listing, no object read."""
    path = local_path(url)
    if path is None:
        depth = folder.count("/")
        listed = files(url, context).list(prefix=folder, size=True)
        return {key: size for key, size in listed if key.count("/") == depth}
    directory = os.path.join(path, folder)
    if not os.path.isdir(directory):
        return {}
    found = {}
    for entry in os.scandir(directory):
        if not entry.name.startswith(".tmp-") and entry.is_file():
            found[folder + entry.name] = entry.stat().st_size
    return found


def list_tree(url: str, folder: str, context: StorageContext = StorageContext()) -> dict[str, int]:
    """Key -> stored size of every object under `folder` (ending in ``/``), its subfolders
    included: one listing, no object read. On file:// every file counts, ``.tmp-`` leftovers of
    killed writes too (they take space as well)."""
    path = local_path(url)
    if path is None:
        return dict(files(url, context).list(prefix=folder, size=True))
    found = {}
    for parent, _, names in os.walk(os.path.join(path, folder)):
        for name in names:
            full = os.path.join(parent, name)
            key = os.path.relpath(full, path).replace(os.sep, "/")
            found[key] = os.stat(full).st_size
    return found


def delete_tree(url: str, folder: str, context: StorageContext = StorageContext()) -> None:
    """Delete every object under `folder` (ending in ``/``), its subfolders included. On file://
    the folder goes, and so do its parents under `url` that it leaves empty."""
    if not folder.endswith("/") or not folder.strip("/"):
        raise ValueError(f"delete_tree takes a folder (ending in /) under {url}, not {folder!r}")
    path = local_path(url)
    if path is None:
        keys = list(files(url, context).list(prefix=folder))
        if keys:
            files(url, context).delete(keys)
        return
    target = os.path.join(path, folder)
    shutil.rmtree(target, ignore_errors=True)
    parent = os.path.dirname(target.rstrip(os.sep))
    while os.path.abspath(parent) != os.path.abspath(path):
        try:
            os.rmdir(parent)  # only when empty
        except OSError:
            break
        parent = os.path.dirname(parent)
