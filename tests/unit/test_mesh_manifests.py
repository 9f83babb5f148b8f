"""Legacy mesh manifests: the id prefixes that split the work, and how many there are."""

from __future__ import annotations

import random

from petavox.tasks.mesh.mesh_jobs import id_prefixes
from petavox.workflows.stages.mesh import manifest_digits


def test_id_prefixes_give_every_id_to_exactly_one_task():
    rng = random.Random(0)
    ids = [*range(1, 250), *(rng.randrange(1, 2**64) for _ in range(2000))]
    for digits in (1, 2, 3):
        prefixes = id_prefixes(digits)
        assert len(prefixes) == 10**digits - 1
        for label in ids:
            name = f"{label}:0:0-64_0-64_0-64"  # a fragment's file name
            owners = [p for p in prefixes if name.startswith(p)]
            assert len(owners) == 1, (label, owners)


def test_manifest_tasks_grow_with_the_volume():
    assert [manifest_digits(n) for n in (1, 8, 100, 1000, 10**5, 10**9)] == [1, 1, 1, 2, 4, 5]
