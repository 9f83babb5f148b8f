"""`petavox export` to an S3-compatible server (SeaweedFS, credentials enforced), the endpoint
given only through the run's storage context.

The stage's plans run here, in the test's process, through the pipeline's own steps (claim,
infos, each plan's driver hook, every chunk's job, the global step): the shared Ray's workers
were started before this server's credentials existed, and credentials never travel in a
task."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pytest
import tensorstore as ts
from storage_servers import client_env
from test_export import expected, expected_transforms, make_layer

from petavox.tasks.core import objects
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.config import RunConfig, parse_config
from petavox.workflows.pipeline import plan_stages, prepare
from petavox.workflows.provenance import claim

pytestmark = pytest.mark.integration

ENDPOINT_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def server(seaweedfs) -> Iterator:
    saved = dict(os.environ)
    env = {k: v for k, v in seaweedfs.env().items() if k not in ENDPOINT_VARS}
    for var in ENDPOINT_VARS:
        os.environ.pop(var, None)
    try:
        with client_env(env):
            yield seaweedfs
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_here(config: RunConfig) -> dict[tuple[str, str], int]:
    """Run the config's plans here; what the chunks' jobs wrote, as their ledger records."""
    context = config.storage.context()
    written: dict[tuple[str, str], int] = {}
    for steps in plan_stages(config):
        claim(steps, config.overwrite, context)
        for plan in steps.plans:
            prepare(plan, config)
            if plan.hooks.before is not None:
                plan.hooks.before()
            for chunk in plan.grid:
                with objects.recording_writes() as wrote:
                    plan.job.run(chunk)
                written.update(wrote)
            if plan.global_step is not None:
                plan.global_step()
    return written


@pytest.mark.parametrize("fmt", ["ome-zarr", "zarr3"])
def test_export_to_s3_reads_back_at_every_level(tmp_path, server, fmt):
    layer = make_layer(f"file://{tmp_path}/image", "image")
    dest = f"s3://{server.bucket}/export-{fmt}/image.zarr"
    config = parse_config(
        {
            "output": f"s3://{server.bucket}/export-{fmt}",
            "stages": [{"stage": "export", "input": layer.url, "output": dest, "format": fmt}],
            "storage": {"s3_endpoint": server.endpoint},
        }
    )
    written = run_here(config)
    context = StorageContext(s3_endpoint=server.endpoint)
    # the objects tensorstore stored are recorded with their sizes on S3 too
    first = "0/0/0/0" if fmt == "ome-zarr" else "0/c/0/0/0"
    assert written[(dest, first)] == objects.list_sizes(dest, first[:-1], context)[first] > 0
    key = ".zattrs" if fmt == "ome-zarr" else "zarr.json"
    attrs = json.loads(objects.get(dest, key, context))
    if fmt == "zarr3":
        attrs = attrs["attributes"]["ome"]
    datasets = attrs["multiscales"][0]["datasets"]
    driver = "zarr" if fmt == "ome-zarr" else "zarr3"
    for mip in range(layer.num_mips):
        assert datasets[mip]["coordinateTransformations"] == expected_transforms(layer, mip)
        kvstore = server.tensorstore_kvstore(f"export-{fmt}/image.zarr/{mip}/")
        data = ts.open({"driver": driver, "kvstore": kvstore}).result().read().result()
        np.testing.assert_array_equal(data, expected(layer, mip))
