"""deploy/kuberay, offline: rendered by `kubectl kustomize`; the built-in kinds and every pod
template inside the Ray resources validated strictly against Kubernetes' schemas
(kubernetes-validate); RayCluster and RayJob against the KubeRay CRD (kuberay_crd.py); then what
the cluster must do: scale both worker groups from zero, land each group on its node pool, run
every pod as the bucket's service account with no credentials but the Ray token from its
Secret, one image and Ray version, a RayJob that runs the mounted run config, and network
policies that admit only the cluster's own pods, its submitter and the KubeRay operator
(evaluated with network_policy.py)."""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from deploy_files import KUBERAY, REPO, image_tag, ray_version
from kuberay_crd import SCHEMAS
from network_policy import Pod, admitted

from petavox.workflows.cli import build_parser
from petavox.workflows.config import parse_config

SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL", re.IGNORECASE)
POOL = "petavox.io/pool"
GPU_TOLERATION = {
    "key": "nvidia.com/gpu",
    "operator": "Equal",
    "value": "present",
    "effect": "NoSchedule",
}


TOKEN_SECRET = {"name": "petavox-ray-token", "key": "auth_token"}  # created by the operator


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/kuberay`: every object."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it renders the kustomization offline)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(KUBERAY)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = [d["kind"] for d in docs]
    assert sorted(kinds) == [
        "ConfigMap",
        "Namespace",
        "NetworkPolicy",
        "NetworkPolicy",
        "RayCluster",
        "RayJob",
        "ServiceAccount",
    ], "no Secret: the Ray token is created by the operator, never committed"
    return docs


@pytest.fixture(scope="module")
def rendered(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The objects of which there is one of a kind, by kind."""
    return {d["kind"]: d for d in documents if d["kind"] != "NetworkPolicy"}


@pytest.fixture(scope="module")
def network_policies(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == "NetworkPolicy"]


def pod_templates(rendered: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template of the Ray resources, by where it is."""
    spec = rendered["RayCluster"]["spec"]
    templates = {"head": spec["headGroupSpec"]["template"]}
    templates |= {g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]}
    templates["submitter"] = rendered["RayJob"]["spec"]["submitterPodTemplate"]
    return templates


def ray_groups(rendered: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod templates of the RayCluster's groups (what `ray start` runs in)."""
    return {k: v for k, v in pod_templates(rendered).items() if k != "submitter"}


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return template["spec"].get("initContainers", []) + template["spec"]["containers"]


# ---- schemas -------------------------------------------------------------------------------
def test_builtin_kinds_and_pod_templates_pass_kubernetes_strict_validation(
    rendered, network_policies
):
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version()
    for kind in ("Namespace", "ServiceAccount", "ConfigMap"):
        kv.validate(rendered[kind], version, strict=True)
    for policy in network_policies:
        kv.validate(policy, version, strict=True)
    templates = pod_templates(rendered)
    assert set(templates) == {"head", "cpu", "gpu", "submitter"}
    for where, template in templates.items():
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": where},
            "template": template,
        }
        kv.validate(pod_template, version, strict=True)
    typo = copy.deepcopy(pod_template)
    typo["template"]["spec"]["nodeSelecter"] = {POOL: "head"}
    with pytest.raises(kv.ValidationError):
        kv.validate(typo, version, strict=True)


def test_ray_resources_match_the_kuberay_crd(rendered):
    import jsonschema

    for kind, schema in SCHEMAS.items():
        validator = jsonschema.Draft7Validator(schema)
        assert not [e.message for e in validator.iter_errors(rendered[kind])], kind
    cluster = SCHEMAS["RayCluster"]
    for path, value in (
        (("workerGroupSpecs", 0, "minReplica"), 0),
        (("workerGroupSpecs", 1, "maxReplicas"), "4"),
        (("autoscalerOptions", "upscalingMode"), "Fast"),
    ):
        broken = copy.deepcopy(rendered["RayCluster"])
        node = broken["spec"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert list(jsonschema.Draft7Validator(cluster).iter_errors(broken)), path


# ---- scaling and placement -----------------------------------------------------------------
def test_both_worker_groups_scale_from_zero_with_the_in_tree_autoscaler(rendered):
    spec = rendered["RayCluster"]["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert 0 < spec["autoscalerOptions"]["idleTimeoutSeconds"] <= 900
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for name, group in groups.items():
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0, name
        assert group["maxReplicas"] > 0, name
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "tasks go to workers"


def test_each_group_lands_on_its_pool_and_only_gpu_pods_tolerate_gpu_nodes(rendered):
    for pool, template in ray_groups(rendered).items():
        pod = template["spec"]
        assert pod["nodeSelector"] == {POOL: pool}
        gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for c in pod["containers"]]
        if pool == "gpu":
            assert pod["tolerations"] == [GPU_TOLERATION]
            assert int(gpus[0]) >= 1
        else:
            assert "tolerations" not in pod and not any(gpus), pool
    assert pod_templates(rendered)["submitter"]["spec"]["nodeSelector"] == {POOL: "head"}


def test_requests_equal_limits_for_every_container(rendered):
    resources = [rendered["RayCluster"]["spec"]["autoscalerOptions"]["resources"]]
    resources += [c["resources"] for t in pod_templates(rendered).values() for c in containers(t)]
    assert len(resources) == 5
    for r in resources:
        assert r["requests"] == r["limits"] and {"cpu", "memory"} <= set(r["limits"]), r


# ---- identity and credentials --------------------------------------------------------------
def terraform_default(variable: str) -> str:
    text = (REPO / "infra" / "aws" / "variables.tf").read_text()
    match = re.search(rf'variable "{variable}" {{[^}}]*?default\s*=\s*"([^"]+)"', text)
    assert match, variable
    return match.group(1)


def test_every_ray_pod_runs_as_the_bucket_service_account_and_holds_no_credentials(rendered):
    account = rendered["ServiceAccount"]["metadata"]
    assert account["name"] == terraform_default("k8s_service_account") == "petavox-worker"
    assert account["namespace"] == terraform_default("k8s_namespace") == "petavox"
    annotations = account["annotations"]
    assert set(annotations) & {"eks.amazonaws.com/role-arn", "iam.gke.io/gcp-service-account"}
    for kind in ("ConfigMap", "RayCluster", "RayJob"):
        assert rendered[kind]["metadata"]["namespace"] == account["namespace"], kind
    for where, template in ray_groups(rendered).items():
        assert template["spec"]["serviceAccountName"] == account["name"], where
    for where, template in pod_templates(rendered).items():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert not [v for v in pod.get("volumes", []) if "secret" in v], where
        for container in containers(template):
            for env in container.get("env", []):
                if env["name"] == "RAY_AUTH_TOKEN":  # the one secret: Ray's token (below)
                    assert env["valueFrom"] == {"secretKeyRef": TOKEN_SECRET}, (where, env)
                    continue
                assert not SECRET_NAME.search(env["name"]), (where, env)
                assert "secretKeyRef" not in env.get("valueFrom", {}), (where, env)
            assert "envFrom" not in container, where
    text = "\n".join(p.read_text() for p in KUBERAY.iterdir())
    assert not re.search(r"AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY|\.pem\b|\.aws/", text)


# ---- Ray token authentication and network policies ----------------------------------------
def ray_processes(rendered: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The env of every container that runs Ray or talks to it: head, worker groups, the RayJob
    submitter (every container of their pods) and the autoscaler KubeRay adds to the head."""
    found = {
        f"{where}/{c['name']}": c.get("env", [])
        for where, template in pod_templates(rendered).items()
        for c in containers(template)
    }
    found["autoscaler"] = rendered["RayCluster"]["spec"]["autoscalerOptions"].get("env", [])
    return found


def test_every_ray_process_presents_the_token_from_the_secret(rendered):
    cluster = rendered["RayCluster"]["spec"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET["name"]}
    mode = {"name": "RAY_AUTH_MODE", "value": "token"}
    token = {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": TOKEN_SECRET}}
    processes = ray_processes(rendered)
    assert len(processes) == 5, processes.keys()  # head, cpu, gpu, submitter, autoscaler
    for where, env in processes.items():
        variables = {e["name"]: e for e in env}
        assert variables.get("RAY_AUTH_MODE") == mode, where
        assert variables.get("RAY_AUTH_TOKEN") == token, (where, variables.get("RAY_AUTH_TOKEN"))
        assert "RAY_AUTH_TOKEN_PATH" not in variables, where
    text = "\n".join(p.read_text() for p in KUBERAY.iterdir())
    assert not re.search(r"^kind:\s*Secret\b", text, re.M), "the token Secret is not committed"
    assert not re.search(r"RAY_AUTH_MODE\W+(value:\s*)?disabled", text)


def cluster_pods(rendered: dict[str, dict[str, Any]]) -> dict[str, Pod]:
    """The pods KubeRay makes, with the labels it puts on them, and the submitter's pod."""
    cluster = rendered["RayCluster"]["metadata"]
    job = rendered["RayJob"]["spec"]
    ray = {"ray.io/cluster": cluster["name"], "ray.io/is-ray-node": "yes"}
    return {
        "head": Pod(cluster["namespace"], ray | {"ray.io/node-type": "head"}),
        "worker": Pod(cluster["namespace"], ray | {"ray.io/node-type": "worker"}),
        "submitter": Pod(
            rendered["RayJob"]["metadata"]["namespace"],
            job["submitterPodTemplate"]["metadata"]["labels"]
            | {"batch.kubernetes.io/job-name": rendered["RayJob"]["metadata"]["name"]},
        ),
    }


def test_network_policies_admit_only_the_cluster_its_submitter_and_the_operator(
    rendered, network_policies
):
    pods = cluster_pods(rendered)
    namespace = pods["head"].namespace
    strangers = {
        "pod in the namespace": Pod(namespace, {"app": "debug"}),
        "another Ray cluster": Pod(namespace, {"ray.io/cluster": "other"}),
        "look-alike elsewhere": Pod("default", dict(pods["worker"].labels)),
        "operator look-alike": Pod(namespace, {"app.kubernetes.io/name": "kuberay-operator"}),
    }
    operator = Pod("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"})
    ray_ports = (6379, 8265, 10001, 8076, 52365, 12345)
    for target in ("head", "worker"):
        for peer in ("head", "worker"):
            for port in ray_ports:
                assert admitted(network_policies, pods[peer], pods[target], port), (peer, target)
        for who, stranger in strangers.items():
            for port in ray_ports:
                assert not admitted(network_policies, stranger, pods[target], port), (who, target)
    for client in (pods["submitter"], operator):
        assert admitted(network_policies, client, pods["head"], 8265), client
        for port in ray_ports:
            assert not admitted(network_policies, client, pods["worker"], port), client
            if port != 8265:
                assert not admitted(network_policies, client, pods["head"], port), (client, port)
    for policy in network_policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"], "egress (bucket, registry) stays open"


def test_one_image_and_ray_version_everywhere(rendered):
    assert rendered["RayCluster"]["spec"]["rayVersion"] == ray_version()
    images = {where: containers(t)[-1]["image"] for where, t in pod_templates(rendered).items()}
    repository = images["head"].rsplit(":", 1)[0]
    assert images == {
        "head": f"{repository}:{image_tag()}",
        "cpu": f"{repository}:{image_tag()}",
        "gpu": f"{repository}:{image_tag(gpu=True)}",
        "submitter": f"{repository}:{image_tag()}",
    }


# ---- the job -------------------------------------------------------------------------------
def test_the_rayjob_runs_the_mounted_run_config_on_the_raycluster(rendered):
    job, cluster = rendered["RayJob"]["spec"], rendered["RayCluster"]
    entrypoint = shlex.split(job["entrypoint"])
    assert entrypoint == ["petavox", "run", "/config/run.yaml", "--address", "auto"]
    build_parser().parse_args(entrypoint[1:])  # a command petavox accepts
    # KubeRay's rules for a job on an existing cluster (clusterSelector mode)
    assert job["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert "rayClusterSpec" not in job and not job.get("suspend")
    assert not job.get("shutdownAfterJobFinishes")
    assert job.get("deletionPolicy") not in ("DeleteCluster", "DeleteWorkers")
    yaml.safe_load(job.get("runtimeEnvYAML", ""))
    # the head (where the entrypoint runs) mounts the ConfigMap holding the run config
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    mount = next(
        m
        for m in head["containers"][0]["volumeMounts"]
        if entrypoint[2].startswith(m["mountPath"] + "/")
    )
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    config_map = rendered["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    key = entrypoint[2].removeprefix(mount["mountPath"] + "/")
    config = parse_config(yaml.safe_load(config_map["data"][key]), key)
    assert config.output.split("://")[0] in ("s3", "gs"), "a cluster run writes to a bucket"
