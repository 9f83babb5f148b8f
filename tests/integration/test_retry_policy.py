"""One retry policy (issue 18): against a store that always fails, a chunk's failing request is
tried at most `storage_retries + 1` times the storage client's own attempts, and then the chunk
fails naming itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fault_proxy import FaultMix, FaultProxy
from storage_servers import S3Server, client_env

from petavox.tasks.core import objects
from petavox.tasks.core.geometry import Box, ChunkGrid
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.runner import ChunkFailedError, run_chunk

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class ReadJob:
    url: str
    context: StorageContext

    def run(self, chunk) -> bytes | None:
        return objects.get(self.url, "policy/object", self.context)


@pytest.fixture
def failing_store(seaweedfs: S3Server) -> Iterator[tuple[FaultProxy, ReadJob]]:
    with FaultProxy(seaweedfs.endpoint) as proxy:
        through = {"AWS_ENDPOINT_URL": proxy.endpoint, "AWS_ENDPOINT_URL_S3": proxy.endpoint}
        with client_env({**seaweedfs.env(), **through}):
            context = StorageContext(s3_endpoint=proxy.endpoint)
            url = f"s3://{seaweedfs.bucket}/retry-policy"
            objects.put(url, "policy/object", b"there", context)
            yield proxy, ReadJob(url, context)


def test_a_store_that_always_fails_gets_a_bounded_number_of_attempts(failing_store, monkeypatch):
    proxy, job = failing_store
    assert job.run(None) == b"there"
    proxy.set_mix(FaultMix(slowdown=1.0))  # every request: 503 SlowDown
    # the clients' back-offs (cloud-files' and boto3's, ~20 s a request) are not what is
    # counted here; benchmarks/bench_retry.py measures the time
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    before = proxy.counts()["requests"]
    with pytest.raises(Exception, match="SlowDown"):
        job.run(None)  # one request through the storage client: its own retries
    per_request = proxy.counts()["requests"] - before
    assert per_request > 1  # the client retries by itself

    chunk = ChunkGrid(Box((0, 0, 0), (1, 1, 1)), (1, 1, 1)).chunk((0, 0, 0))
    before = proxy.counts()["requests"]
    with pytest.raises(ChunkFailedError, match=r"chunk 0_0_0: ClientError.*SlowDown"):
        run_chunk(job, chunk, "policy", storage_retries=1)
    # retried once on top of the client's attempts, and no more (botocore's retry quota may
    # have cut the second round short: fewer, never more)
    assert per_request < proxy.counts()["requests"] - before <= 2 * per_request
