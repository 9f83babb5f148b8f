"""The fault proxy (tests/fault_proxy.py) in front of SeaweedFS: requests pass through signed and
byte-exact, each fault kind is injected and counted, a client with retries reads and writes
correct data through 15 % faults, and an outage refuses every request, then ends."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import botocore.exceptions
import pytest
from botocore.config import Config
from fault_proxy import FaultMix, FaultProxy
from storage_servers import S3Server, client_env

pytestmark = pytest.mark.integration

NO_RETRIES = Config(retries={"total_max_attempts": 1}, connect_timeout=5)


@pytest.fixture
def proxy(seaweedfs: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs.endpoint) as running:
        yield running


def test_requests_pass_through_signed_and_unchanged(seaweedfs, proxy):
    """The client signs for the proxy's Host; the server checks the same header."""
    client = seaweedfs.boto3_client(endpoint_url=proxy.endpoint, config=NO_RETRIES)
    data = os.urandom(300_000)
    client.put_object(Bucket=seaweedfs.bucket, Key="proxy/pass.bin", Body=data)
    got = client.get_object(Bucket=seaweedfs.bucket, Key="proxy/pass.bin")["Body"].read()
    head = client.head_object(Bucket=seaweedfs.bucket, Key="proxy/pass.bin")
    assert got == data and head["ContentLength"] == len(data)
    direct = seaweedfs.boto3_client().get_object(Bucket=seaweedfs.bucket, Key="proxy/pass.bin")
    assert direct["Body"].read() == data
    counts = proxy.counts()
    assert counts["requests"] == counts["forwarded"] == 3
    assert (counts["PUT"], counts["GET"], counts["HEAD"]) == (1, 1, 1)


@pytest.mark.parametrize(
    ("kind", "error", "text"),
    [
        ("slowdown", botocore.exceptions.ClientError, "SlowDown"),
        ("reset", botocore.exceptions.BotoCoreError, "onnect"),
        ("truncate", botocore.exceptions.ResponseStreamingError, "IncompleteRead"),
    ],
)
def test_each_fault_is_injected_and_counted(seaweedfs, proxy, kind, error, text):
    key = f"proxy/{kind}.bin"
    seaweedfs.boto3_client().put_object(Bucket=seaweedfs.bucket, Key=key, Body=b"x" * 10_000)
    client = seaweedfs.boto3_client(endpoint_url=proxy.endpoint, config=NO_RETRIES)
    proxy.set_mix(FaultMix(**{kind: 1.0}))
    for _ in range(4):  # a reset may come before or after the server answered
        with pytest.raises(error, match=text):
            client.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read()
    counts = proxy.counts()
    assert counts[kind] == 4 and counts["requests"] == 4
    assert all(counts[other] == 0 for other in ("slowdown", "reset", "truncate") if other != kind)


def test_a_client_with_retries_gets_correct_data_through_15_percent_faults(seaweedfs, proxy):
    from cloudfiles import CloudFiles

    proxy.set_mix(FaultMix(slowdown=0.05, reset=0.05, truncate=0.05, seed=3))
    files = {f"obj-{i}": os.urandom(20_000 + i) for i in range(40)}
    env = {**seaweedfs.env(), "AWS_ENDPOINT_URL": proxy.endpoint}
    env.pop("AWS_ENDPOINT_URL_S3")
    with client_env(env):
        cf = CloudFiles(f"s3://{seaweedfs.bucket}/proxy/retries")
        for name, data in files.items():
            cf.put(name, data, compress=None)
        got = {name: cf.get(name) for name in files}
    assert got == files
    direct = seaweedfs.boto3_client()
    stored = direct.get_object(Bucket=seaweedfs.bucket, Key="proxy/retries/obj-7")
    assert stored["Body"].read() == files["obj-7"]
    counts = proxy.counts()
    faults = counts["slowdown"] + counts["reset"] + counts["truncate"]
    assert counts["requests"] >= 80 and faults >= 3


def test_an_outage_refuses_every_request_then_ends(seaweedfs, proxy):
    client = seaweedfs.boto3_client(endpoint_url=proxy.endpoint, config=NO_RETRIES)
    client.put_object(Bucket=seaweedfs.bucket, Key="proxy/outage.bin", Body=b"before")
    proxy.outage(1.5)
    assert proxy.in_outage
    for _ in range(3):
        with pytest.raises(botocore.exceptions.BotoCoreError, match="onnect"):
            client.get_object(Bucket=seaweedfs.bucket, Key="proxy/outage.bin")
    proxy.outage(1.5, mode="503")
    with pytest.raises(botocore.exceptions.ClientError, match="SlowDown"):
        client.get_object(Bucket=seaweedfs.bucket, Key="proxy/outage.bin")
    time.sleep(1.6)
    assert not proxy.in_outage
    got = client.get_object(Bucket=seaweedfs.bucket, Key="proxy/outage.bin")["Body"].read()
    assert got == b"before"
    counts = proxy.counts()
    assert counts["outage_resets"] >= 3 and counts["outage_503"] == 1 and counts["outages"] == 2
