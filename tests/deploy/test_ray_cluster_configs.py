"""deploy/ray-cluster (Ray's cluster launcher, no Kubernetes): each config against the JSON schema
shipped in the ray wheel (ray/autoscaler/ray-schema.json) and Ray's own config checks, then the
cluster it describes: an on-demand head, spot CPU and GPU workers from zero, our image (the
CUDA variant on GPU workers), a cloud identity on every node and no keys."""

from __future__ import annotations

import json
import re
import shlex
from importlib.resources import files
from typing import Any

import jsonschema
import pytest
from deploy_files import RAY_CLUSTER, image_tag, load_yaml

CONFIGS = {"aws": RAY_CLUSTER / "aws.yaml", "gcp": RAY_CLUSTER / "gcp.yaml"}


@pytest.fixture(params=sorted(CONFIGS))
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    loaded = load_yaml(CONFIGS[request.param])
    assert loaded["provider"]["type"] == request.param
    return loaded


def test_configs_match_rays_schema_and_pass_rays_checks(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((files("ray") / "autoscaler" / "ray-schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert not [e.message for e in validator.iter_errors(config)]
    typo = {**config, "idle_timeout_minute": 5}
    assert list(validator.iter_errors(typo)), "the schema must reject unknown keys"
    validate_config(prepare_config(config))


def test_head_on_demand_and_workers_on_spot_from_zero(config):
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu", "gpu"} and config["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    assert 0 < config["idle_timeout_minutes"] <= 15
    assert config["max_workers"] == types["cpu"]["max_workers"] + types["gpu"]["max_workers"]
    aws = config["provider"]["type"] == "aws"
    if aws:
        assert config["provider"]["cache_stopped_nodes"] is False, "spot cannot be stopped"
    for name, node in types.items():
        node_config = node["node_config"]
        if aws:
            spot = node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
        else:
            spot = node_config.get("scheduling", {}).get("provisioningModel") == "SPOT"
        assert spot == (name != "head"), name
        if name != "head":
            assert node["min_workers"] == 0 and node["max_workers"] > 0, name
    gpu = types["gpu"]["node_config"]
    if aws:
        assert re.match(r"(g4dn|g5|g6)\.", gpu["InstanceType"])
    else:
        assert gpu["guestAccelerators"][0]["acceleratorCount"] >= 1
        assert gpu["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_every_node_runs_our_image_and_the_launcher_can_start_it(config):
    from ray.autoscaler._private.docker import docker_start_cmds

    docker = config["docker"]
    repository, tag = docker["image"].rsplit(":", 1)
    assert tag == image_tag()
    gpu = config["available_node_types"]["gpu"]["docker"]
    assert gpu["worker_image"] == f"{repository}:{image_tag(gpu=True)}"
    assert "--gpus all" in gpu["worker_run_options"]
    assert not [
        t for n, t in config["available_node_types"].items() if n != "gpu" and "docker" in t
    ]
    # The image's ENTRYPOINT is petavox; the launcher's `docker run ... IMAGE bash` must run bash.
    command = shlex.split(
        docker_start_cmds(
            "ubuntu",
            docker["image"],
            {},
            "petavox",
            docker["run_options"],
            "petavox",
            "/home/petavox",
            "docker",
        )
    )
    assert command[-2:] == [docker["image"], "bash"]
    assert "--entrypoint=" in command


def test_every_node_has_a_cloud_identity_and_no_keys(config):
    text = CONFIGS[config["provider"]["type"]].read_text()
    for name, node in config["available_node_types"].items():
        node_config = node["node_config"]
        if config["provider"]["type"] == "aws":
            profile = node_config["IamInstanceProfile"]["Arn"]
            assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/petavox-ray-\w+", profile)
        else:
            accounts = node_config["serviceAccounts"]
            assert re.fullmatch(
                r"petavox-ray-\w+@[\w-]+\.iam\.gserviceaccount\.com", accounts[0]["email"]
            ), name
    assert not {"ssh_private_key", "ssh_public_key"} & set(config["auth"])
    assert not re.search(
        r"AKIA[0-9A-Z]{16}|aws_secret_access_key|BEGIN [A-Z ]*PRIVATE KEY|"
        r"\.pem\b|KeyName",
        text,
    )
