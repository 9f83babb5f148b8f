"""deploy/docker-compose.yml (the laptop cluster: MinIO, a Ray head and a worker) against the
compose specification's JSON schema, and its wiring."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from deploy_files import COMPOSE, REPO, compose, documented_command, image_tag, interpolate

S3_VARIABLES = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
}


def compose_schema() -> dict[str, Any]:
    """The compose specification's schema as vendored by check-jsonschema (test extra)."""
    pytest.importorskip("check_jsonschema", reason="check-jsonschema ships compose-spec.json")
    path = files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    return json.loads(path.read_text())


def test_the_compose_file_matches_the_compose_specification():
    import jsonschema

    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert not [e.message for e in validator.iter_errors(compose())]
    typo = compose()
    typo["services"]["ray-worker"]["healthcheck"]["intervall"] = "5s"
    assert list(validator.iter_errors(typo)), "the schema must reject unknown keys"


def published_ports(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def test_services_are_wired_in_order_with_healthchecks_on_loopback_ports():
    services = compose()["services"]
    assert set(services) == {"minio", "create-bucket", "ray-head", "ray-worker"}
    after = {name: s.get("depends_on", {}) for name, s in services.items()}
    assert after["create-bucket"] == {"minio": {"condition": "service_healthy"}}
    assert after["ray-head"] == {"create-bucket": {"condition": "service_completed_successfully"}}
    assert after["ray-worker"] == {"ray-head": {"condition": "service_healthy"}}
    for name in ("minio", "ray-head", "ray-worker"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["create-bucket"]["restart"] == "no"
    ports = [p for s in services.values() for p in published_ports(s)]
    assert ports and all(re.fullmatch(r"127\.0\.0\.1:\d+:\d+", p) for p in ports), ports


def test_head_and_worker_run_the_same_image_and_the_worker_joins_the_head():
    services = compose()["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    assert head["image"] == worker["image"] == f"petavox:{image_tag()}"
    assert (COMPOSE.parent / head["build"]["context"]).resolve() == REPO
    assert (REPO / head["build"]["dockerfile"]).is_file()
    assert head["entrypoint"][:4] == ["ray", "start", "--head", "--block"]
    port = next(a.split("=")[1] for a in head["entrypoint"] if a.startswith("--port="))
    assert worker["entrypoint"] == ["ray", "start", f"--address=ray-head:{port}", "--block"]
    assert "--num-cpus=0" in head["entrypoint"], "tasks run on the worker, as on a cluster"


def test_ray_containers_reach_minio_with_its_credentials_and_the_documented_bucket():
    services = compose()["services"]
    head, worker, minio = services["ray-head"], services["ray-worker"], services["minio"]
    assert head["environment"] == worker["environment"]
    env = head["environment"]
    assert set(env) >= S3_VARIABLES
    assert not re.search(r"AKIA[0-9A-Z]{16}", COMPOSE.read_text())
    # The keys are MinIO's root credentials: the same variables with the same defaults.
    assert env["AWS_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
    for value in (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]):
        assert re.fullmatch(r"\$\{\w+:-[^}]+\}", value), "a variable with a laptop default"
    assert interpolate(env["AWS_ACCESS_KEY_ID"], {"MINIO_ROOT_USER": "alice"}) == "alice"
    endpoint = urlparse(env["AWS_ENDPOINT_URL"])
    assert endpoint.scheme == "http" and endpoint.hostname == "minio"
    assert f"127.0.0.1:{endpoint.port}:{endpoint.port}" in published_ports(minio)
    command = documented_command("ray-head")
    assert command[:2] == ["petavox", "demo"]
    output = urlparse(command[command.index("--output") + 1])
    assert output.scheme == "s3" and command[command.index("--address") + 1] == "auto"
    create = " ".join(services["create-bucket"]["entrypoint"])
    assert f"local/{output.netloc}" in create and env["AWS_ENDPOINT_URL"] in create


def test_the_laptop_credentials_are_documented_as_laptop_only():
    header = "".join(line for line in COMPOSE.read_text().splitlines(True) if line[:1] == "#")
    assert "laptop-only" in header and "deploy/.env" in header
    assert "deploy/.env" in Path(REPO / ".gitignore").read_text().split()
