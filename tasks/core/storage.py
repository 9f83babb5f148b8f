"""How to reach object storage: the runtime context (endpoints), never part of a run's identity.

Credentials are not held here: they come from the environment or the libraries' secret files
(cloud-files' `~/.cloudvolume/secrets`, instance metadata, workload identity) so they are never
hashed, logged or pickled into a task.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

SUPPORTED_SCHEMES = ("file", "s3", "gs")


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


def normalize_url(url: str) -> str:
    """Canonical storage URL: a bare path becomes an absolute ``file://`` URL; no trailing /."""
    if "://" not in url:
        url = "file://" + os.path.abspath(os.path.expanduser(url))
    scheme = scheme_of(url)
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"unsupported storage URL {url!r}: use file://, s3:// or gs:// "
            "(an S3-compatible server such as MinIO is s3:// plus storage.s3_endpoint)"
        )
    return url.rstrip("/")


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
