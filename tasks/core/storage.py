"""How to reach object storage: the runtime context (endpoints), never part of a run's identity.

Credentials are not held here: they come from the environment or the libraries' secret files
(cloud-files' `~/.cloudvolume/secrets`, instance metadata, workload identity) so they are never
hashed, logged or pickled into a task.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

from petavox.tasks.core.errors import InputError

SUPPORTED_SCHEMES = ("file", "s3", "gs", "http", "https")
READ_ONLY_SCHEMES = ("http", "https")
#: volume format prefixes: ``zarr3://s3://bucket/v.zarr``; precomputed:// is the default format
FORMAT_PREFIXES = ("precomputed", "zarr", "zarr2", "zarr3", "n5")


class StorageURLError(InputError, ValueError):
    """A URL petavox cannot use: names it and the forms it takes."""


@dataclass(frozen=True, kw_only=True)
class StorageContext:
    """Endpoints for S3-compatible stores (MinIO, SeaweedFS, Ceph) and a GCS emulator.

    `s3_endpoint` (e.g. ``http://127.0.0.1:9000``) applies to every ``s3://`` URL of a run, for
    every reader and writer (cloud-volume, cloud-files, tensorstore). `gcs_endpoint` points the
    GCS clients at an emulator.
    """

    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    gcs_endpoint: str | None = None

    def apply(self) -> None:
        """Make this process's storage clients honour the context (call before any I/O)."""
        if self.s3_endpoint:
            os.environ["AWS_ENDPOINT_URL"] = self.s3_endpoint
            os.environ.setdefault("AWS_DEFAULT_REGION", self.s3_region)
        if self.s3_endpoint or "AWS_ACCESS_KEY_ID" in os.environ:
            # cloud-files raises KeyError('AWS_SESSION_TOKEN') when keys come from the
            # environment without a session token (cloud-files 6.x).
            os.environ.setdefault("AWS_SESSION_TOKEN", "")
        if self.gcs_endpoint:
            os.environ["STORAGE_EMULATOR_HOST"] = self.gcs_endpoint
            os.environ["TENSORSTORE_GCS_HTTP_URL"] = self.gcs_endpoint
            os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "x")


def scheme_of(url: str) -> str:
    """The URL's scheme; a bare path counts as ``file``."""
    parsed = urlparse(url)
    return parsed.scheme or "file"


def split_volume_url(url: str) -> tuple[str | None, str, str]:
    """(format prefix or None, storage URL, options after '#') of a volume URL."""
    fmt = None
    head, sep, rest = url.partition("://")
    if sep and head in FORMAT_PREFIXES:
        fmt, url = head, rest
    store, _, fragment = url.partition("#")
    return fmt, store, fragment


def normalize_url(url: str) -> str:
    """Canonical storage URL: a bare path becomes an absolute ``file://`` URL; no trailing /.

    A format prefix and '#' options (see `foreign_volumes`) are kept; ``precomputed://`` is
    the default format and dropped."""
    fmt, store, fragment = split_volume_url(url)
    if "://" not in store:
        store = "file://" + os.path.abspath(os.path.expanduser(store))
    scheme = scheme_of(store)
    if scheme not in SUPPORTED_SCHEMES:
        raise StorageURLError(
            f"unsupported storage URL {url!r}: use file://, s3://, gs:// or http(s):// (read "
            "only), optionally after a format prefix zarr://, zarr3://, n5:// or precomputed:// "
            "(an S3-compatible server such as MinIO is s3:// plus storage.s3_endpoint)"
        )
    store = store.rstrip("/")
    prefix = f"{fmt}://" if fmt and fmt != "precomputed" else ""
    return prefix + store + (f"#{fragment}" if fragment else "")


def is_plain_url(url: str) -> bool:
    """A writable storage URL: no format prefix or options, not http(s)."""
    fmt, store, fragment = split_volume_url(url)
    plain = fmt in (None, "precomputed") and not fragment
    return plain and scheme_of(store) not in READ_ONLY_SCHEMES


def join_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])


def local_path(url: str) -> str | None:
    """The filesystem path of a ``file://`` URL, else None."""
    if scheme_of(url) != "file":
        return None
    return url[len("file://") :] if url.startswith("file://") else url


def tensorstore_kvstore(url: str, context: StorageContext) -> dict:
    """A tensorstore kvstore spec for a storage URL, honouring the context's endpoints."""
    url = normalize_url(url)
    scheme = scheme_of(url)
    if scheme == "file":
        return {"driver": "file", "path": local_path(url) + "/"}
    parsed = urlparse(url)
    path = parsed.path.lstrip("/") + "/"
    if scheme in READ_ONLY_SCHEMES:
        return {"driver": "http", "base_url": f"{scheme}://{parsed.netloc}", "path": path}
    if scheme == "gs":
        return {"driver": "gcs", "bucket": parsed.netloc, "path": path}
    spec: dict = {"driver": "s3", "bucket": parsed.netloc, "path": path}
    endpoint = context.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        # tensorstore ignores AWS_ENDPOINT_URL; without an explicit endpoint it would retry
        # towards the public cloud forever.
        spec.update(
            endpoint=endpoint,
            aws_region=context.s3_region,
            aws_credentials={"type": "environment"},
        )
    return spec
