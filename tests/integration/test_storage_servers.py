"""The local S3 (SeaweedFS, moto) and GCS (fake-gcs-server) servers work with every client we use.

boto3 / google-cloud-storage, cloud-files, cloud-volume and tensorstore each write and read
against each server; SeaweedFS refuses wrong credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenacity
from storage_servers import GCSServer, S3Server, client_env, moto_server, seaweedfs_server

pytestmark = pytest.mark.integration

SHAPE = (64, 48, 16)  # x, y, z: 2 x 2 x 2 storage chunks, the last ones partial in y
CHUNK = (32, 32, 8)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def no_cloudfiles_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """cloud-files retries every failed request 7 times with back-off (tens of seconds)."""
    from cloudfiles.interfaces import GoogleCloudStorageInterface, S3Interface

    for method in (
        S3Interface.put_file,
        S3Interface.get_file,
        GoogleCloudStorageInterface.files_exist,
    ):
        monkeypatch.setattr(method.retry, "stop", tenacity.stop_after_attempt(1))


# ---------------------------------------------------------------- helpers


def volume_data(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*SHAPE, 1), dtype=np.uint8)


def write_with_cloudvolume(url: str, data: np.ndarray, compress: bool | str) -> None:
    """``compress``: "gzip" or True (cloud-volume's default, gzip), False for none."""
    from cloudvolume import CloudVolume

    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="image",
        data_type="uint8",
        encoding="raw",
        resolution=[4, 4, 40],
        voxel_offset=[0, 0, 0],
        volume_size=list(SHAPE),
        chunk_size=list(CHUNK),
    )
    vol = CloudVolume(url, info=info, parallel=1, progress=False, compress=compress)
    vol.commit_info()
    vol[:, :, :] = data


def read_with_cloudvolume(url: str) -> np.ndarray:
    from cloudvolume import CloudVolume

    return np.asarray(CloudVolume(url, parallel=1, progress=False)[:, :, :])


def read_with_tensorstore(kvstore: dict[str, Any]) -> np.ndarray:
    import tensorstore as ts

    store = ts.open({"driver": "neuroglancer_precomputed", "kvstore": kvstore}, read=True).result()
    return np.asarray(store.read().result())


def write_with_tensorstore(kvstore: dict[str, Any], data: np.ndarray) -> None:
    import tensorstore as ts

    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": kvstore,
        "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
        "scale_metadata": {
            "size": list(SHAPE),
            "resolution": [4, 4, 40],
            "encoding": "raw",
            "chunk_size": list(CHUNK),
        },
        "create": True,
    }
    ts.open(spec).result().write(data).result()


def cloudfiles_roundtrip(url: str) -> None:
    from cloudfiles import CloudFiles

    cf = CloudFiles(url)
    cf.put("dir/plain.bin", b"plain bytes", compress=None)
    cf.put("dir/zipped.bin", b"zipped bytes" * 100, compress="gzip")
    cf.put("other.bin", b"x", compress=None)
    assert cf.get("dir/plain.bin") == b"plain bytes"
    assert cf.get("dir/zipped.bin") == b"zipped bytes" * 100
    assert sorted(cf.list("dir")) == ["dir/plain.bin", "dir/zipped.bin"]
    assert sorted(cf.list()) == ["dir/plain.bin", "dir/zipped.bin", "other.bin"]


# ---------------------------------------------------------------- S3


def test_boto3_puts_and_gets(s3: S3Server) -> None:
    client = s3.boto3_client()
    client.put_object(Bucket=s3.bucket, Key="boto3/hello.txt", Body=b"hello")
    assert client.get_object(Bucket=s3.bucket, Key="boto3/hello.txt")["Body"].read() == b"hello"


def test_boto3_uses_the_environment(s3: S3Server) -> None:
    import boto3

    client = boto3.client("s3")  # endpoint, region and keys from S3Server.env()
    client.put_object(Bucket=s3.bucket, Key="boto3-env/hello.txt", Body=b"env")
    assert client.get_object(Bucket=s3.bucket, Key="boto3-env/hello.txt")["Body"].read() == b"env"


@pytest.mark.parametrize("form", ["alias", "s3-with-endpoint-env", "s3-with-host"])
def test_cloudfiles_puts_gets_and_lists(s3: S3Server, form: str) -> None:
    url = {
        "alias": s3.alias_url(f"cf-{form}"),
        "s3-with-endpoint-env": f"s3://{s3.bucket}/cf-{form}",
        "s3-with-host": f"s3://{s3.endpoint}/{s3.bucket}/cf-{form}",
    }[form]
    cloudfiles_roundtrip(url)
    body = s3.boto3_client().get_object(Bucket=s3.bucket, Key=f"cf-{form}/dir/plain.bin")["Body"]
    assert body.read() == b"plain bytes"  # it really went to this server


@pytest.mark.parametrize("form", ["alias", "s3-with-endpoint-env"])
def test_cloudvolume_writes_and_reads(s3: S3Server, form: str) -> None:
    path = f"cv-{form}"
    url = s3.alias_url(path) if form == "alias" else f"s3://{s3.bucket}/{path}"
    data = volume_data(seed=1)
    write_with_cloudvolume(url, data, compress=True)
    np.testing.assert_array_equal(read_with_cloudvolume(url), data)
    keys = s3.boto3_client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{path}/")["Contents"]
    assert len(keys) == 1 + 8  # info + 8 chunks


def test_cloudvolume_rejects_an_endpoint_inside_an_s3_path(s3: S3Server) -> None:
    from cloudvolume import CloudVolume
    from cloudvolume.exceptions import UnsupportedProtocolError

    with pytest.raises(UnsupportedProtocolError):
        CloudVolume(f"s3://{s3.endpoint}/{s3.bucket}/cv-host", progress=False)


@pytest.mark.parametrize("compress", ["gzip", False])
def test_tensorstore_reads_a_cloudvolume_layer(s3: S3Server, compress: str | bool) -> None:
    path = f"cv-for-ts-{compress}"
    data = volume_data(seed=2)
    write_with_cloudvolume(s3.alias_url(path), data, compress=compress)
    head = s3.boto3_client().head_object(Bucket=s3.bucket, Key=f"{path}/4_4_40/0-32_0-32_0-8")
    assert head.get("ContentEncoding") == (compress or None)
    np.testing.assert_array_equal(read_with_tensorstore(s3.tensorstore_kvstore(f"{path}/")), data)


def test_cloudvolume_reads_a_tensorstore_layer(s3: S3Server) -> None:
    data = volume_data(seed=3)
    write_with_tensorstore(s3.tensorstore_kvstore("ts-for-cv/"), data)
    np.testing.assert_array_equal(read_with_cloudvolume(s3.alias_url("ts-for-cv")), data)


def test_seaweedfs_refuses_wrong_credentials(
    seaweedfs: S3Server, no_cloudfiles_retries: None
) -> None:
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from cloudfiles import CloudFiles
    from cloudvolume import CloudVolume

    good = seaweedfs.boto3_client()
    good.put_object(Bucket=seaweedfs.bucket, Key="secret/object", Body=b"secret")
    seaweedfs.register_alias()
    with client_env(seaweedfs.env()):
        write_with_cloudvolume(seaweedfs.alias_url("secret/cv"), volume_data(7), compress=True)

    for client in (
        seaweedfs.boto3_client(aws_secret_access_key="wrong-secret"),
        seaweedfs.boto3_client(aws_access_key_id="nobody"),
        seaweedfs.boto3_client(config=Config(signature_version=UNSIGNED)),  # anonymous
    ):
        with pytest.raises(ClientError):
            client.get_object(Bucket=seaweedfs.bucket, Key="secret/object")
        with pytest.raises(ClientError):
            client.put_object(Bucket=seaweedfs.bucket, Key="secret/intruder", Body=b"x")
        with pytest.raises(ClientError):
            client.list_objects_v2(Bucket=seaweedfs.bucket)

    with client_env({**seaweedfs.env(), "AWS_SECRET_ACCESS_KEY": "wrong-secret"}):
        cf = CloudFiles(seaweedfs.alias_url("secret"))
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            cf.put("intruder", b"x", compress=None)
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            cf.get("object")
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            CloudVolume(seaweedfs.alias_url("secret/cv"), progress=False)
        with pytest.raises(ValueError, match="SignatureDoesNotMatch"):
            read_with_tensorstore(seaweedfs.tensorstore_kvstore("secret/cv/"))

    listing = good.list_objects_v2(Bucket=seaweedfs.bucket, Prefix="secret/")["Contents"]
    assert "secret/intruder" not in [entry["Key"] for entry in listing]


def test_two_seaweedfs_servers_run_side_by_side(seaweedfs: S3Server, tmp_path: Path) -> None:
    with seaweedfs_server(tmp_path / "second", bucket="second-bucket") as second:
        assert second.endpoint != seaweedfs.endpoint
        client = second.boto3_client()
        client.put_object(Bucket=second.bucket, Key="k", Body=b"2")
        assert client.get_object(Bucket=second.bucket, Key="k")["Body"].read() == b"2"
        seaweedfs.boto3_client().head_bucket(Bucket=seaweedfs.bucket)
    assert (tmp_path / "second" / "weed.log").stat().st_size > 0


def test_cloudfiles_pools_s3_clients_per_bucket_not_per_endpoint(moto: S3Server) -> None:
    """A cloud-files 6.4.3 bug, and why ``client_env`` resets its pools and aliases differ.

    If this starts failing, cloud-files keys its pools by endpoint now and the workarounds
    can go.
    """
    from botocore.exceptions import ClientError
    from cloudfiles import CloudFiles

    def get(server: S3Server, key: str) -> bytes:
        response = server.boto3_client().get_object(Bucket=server.bucket, Key=key)
        return bytes(response["Body"].read())

    with moto_server(bucket=moto.bucket) as other, client_env(moto.env()):
        CloudFiles(f"s3://{moto.bucket}/pool").put("k", b"1", compress=None)
        # Meant for `other`, but the pooled client for (s3, bucket) still talks to `moto`.
        CloudFiles(f"s3://{other.endpoint}/{other.bucket}/pool").put("k", b"2", compress=None)
        assert get(moto, "pool/k") == b"2"
        with pytest.raises(ClientError):
            get(other, "pool/k")
        # A per-server alias is a separate pool.
        other.register_alias()
        CloudFiles(other.alias_url("pool")).put("k", b"3", compress=None)
        assert get(other, "pool/k") == b"3"


# ---------------------------------------------------------------- GCS


def test_google_cloud_storage_puts_and_gets(gcs: GCSServer) -> None:
    from google.cloud import storage

    client = storage.Client()  # anonymous, endpoint from STORAGE_EMULATOR_HOST
    bucket = client.bucket(gcs.bucket)
    bucket.blob("gcs/hello.txt").upload_from_string(b"hello")
    assert bucket.blob("gcs/hello.txt").download_as_bytes() == b"hello"
    assert gcs.bucket in [b.name for b in client.list_buckets()]


def test_cloudfiles_puts_gets_and_lists_on_gcs(gcs: GCSServer) -> None:
    cloudfiles_roundtrip(f"gs://{gcs.bucket}/cf")


def test_cloudfiles_exists_is_unsupported_by_fake_gcs(
    gcs: GCSServer, no_cloudfiles_retries: None
) -> None:
    """cloud-files' exists() uses the GCS batch API, which fake-gcs-server lacks.

    If this starts failing, the emulator (or cloud-files) changed and exists() works on it.
    """
    from cloudfiles import CloudFiles

    cf = CloudFiles(f"gs://{gcs.bucket}/exists")
    cf.put("k", b"v", compress=None)
    with pytest.raises(ValueError, match="not multi-part"):
        cf.exists("k")


def test_cloudvolume_writes_and_reads_on_gcs(gcs: GCSServer) -> None:
    data = volume_data(seed=4)
    url = f"gs://{gcs.bucket}/cv"
    write_with_cloudvolume(url, data, compress=True)
    np.testing.assert_array_equal(read_with_cloudvolume(url), data)


@pytest.mark.parametrize("compress", ["gzip", False])
def test_tensorstore_reads_a_cloudvolume_layer_on_gcs(gcs: GCSServer, compress: str | bool) -> None:
    from google.cloud import storage

    path = f"cv-for-ts-{compress}"
    data = volume_data(seed=5)
    write_with_cloudvolume(f"gs://{gcs.bucket}/{path}", data, compress=compress)
    blob = storage.Client().bucket(gcs.bucket).get_blob(f"{path}/4_4_40/0-32_0-32_0-8")
    assert blob is not None
    assert blob.content_encoding == (compress or None)
    np.testing.assert_array_equal(read_with_tensorstore(gcs.tensorstore_kvstore(f"{path}/")), data)


def test_cloudvolume_reads_a_tensorstore_layer_on_gcs(gcs: GCSServer) -> None:
    data = volume_data(seed=6)
    write_with_tensorstore(gcs.tensorstore_kvstore("ts-for-cv/"), data)
    np.testing.assert_array_equal(read_with_cloudvolume(f"gs://{gcs.bucket}/ts-for-cv"), data)
