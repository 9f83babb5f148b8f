"""The Terraform stacks in infra/, offline: formatting; the AWS stack initialised from a local copy
of the AWS provider, validated and plan-tested against a mocked provider (infra/aws/tests); the GCP
stack (no google provider offline) checked structurally by parsing its HCL; and who may reach the
Kubernetes API: each stack's variables.tf, which needs no provider, planned alone with allowed and
refused CIDR lists.

The terraform tests skip where the terraform binary or a local AWS provider mirror is absent. The
mirror is the directory named by TF_PLUGIN_DIR, one of Terraform's implied local mirror
directories, or a `tf-plugins` directory one level below the file system root.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"
AWS_VERSION_PREFIX = "5.100."


# ---- running terraform -------------------------------------------------------------------------
def terraform_binary() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.skip("the terraform binary is not on PATH")
    return found


def provider_platform() -> str:
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    return f"{sys.platform}_{machine.get(platform.machine().lower(), platform.machine())}"


def aws_plugin_dir() -> Path:
    """A filesystem mirror holding the AWS provider 5.100.x for this platform, or skip."""
    home = Path.home()
    candidates = [Path(os.environ["TF_PLUGIN_DIR"])] if os.environ.get("TF_PLUGIN_DIR") else []
    candidates += [
        home / ".terraform.d" / "plugins",
        home / ".local/share/terraform/plugins",
        Path("/usr/local/share/terraform/plugins"),
        Path("/usr/share/terraform/plugins"),
    ]
    candidates += sorted(Path("/").glob("*/tf-plugins"))
    for root in candidates:
        for version in sorted((root / AWS_PROVIDER).glob(f"{AWS_VERSION_PREFIX}*")):
            if any((version / provider_platform()).glob("terraform-provider-aws*")):
                return root
    pytest.skip(
        f"no local mirror of the AWS provider {AWS_VERSION_PREFIX}x for "
        f"{provider_platform()} (set TF_PLUGIN_DIR to one)"
    )


def terraform(workdir: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run terraform in workdir hermetically: an empty CLI config (written beside workdir), no
    TF_* settings from the caller, no update check."""
    cli_config = workdir.parent / "terraformrc"
    cli_config.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env |= {
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    return subprocess.run(
        [terraform_binary(), command, "-no-color", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def aws_stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """infra/aws copied to a temporary folder (no .terraform in the repository), initialised."""
    terraform_binary()
    plugins = aws_plugin_dir()
    work = tmp_path_factory.mktemp("terraform") / "aws"
    shutil.copytree(
        INFRA / "aws", work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*", "*.tfplan")
    )
    init = terraform(work, "init", "-input=false", "-backend=false", f"-plugin-dir={plugins}")
    assert init.returncode == 0, init.stdout + init.stderr
    return work


def test_every_stack_is_formatted(tmp_path):
    terraform_binary()
    (tmp_path / "fmt").mkdir()
    result = terraform(tmp_path / "fmt", "fmt", "-check", "-recursive", "-diff", str(INFRA))
    assert result.returncode == 0, f"run `terraform fmt -recursive infra`:\n{result.stdout}"


def test_aws_stack_is_valid(aws_stack):
    result = terraform(aws_stack, "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success! The configuration is valid." in result.stdout
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_aws_plan_tests_pass(aws_stack):
    """infra/aws/tests/*.tftest.hcl: every run block passes, none skipped."""
    runs = sum(
        len(re.findall(r'^run "', path.read_text(), re.M))
        for path in (aws_stack / "tests").glob("*.tftest.hcl")
    )
    result = terraform(aws_stack, "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Success! {runs} passed, 0 failed." in result.stdout, result.stdout


# ---- the GCP stack, structurally ---------------------------------------------------------------
REF = re.compile(r"\$\{\(?(var|local)\.([A-Za-z0-9_.]+)\)?\}")


class Module:
    """The blocks of a folder of .tf files, with var.* defaults and local.* values resolved."""

    def __init__(self, folder: Path):
        options = hcl2.SerializationOptions(
            with_comments=False, explicit_blocks=False, strip_string_quotes=True
        )
        self.blocks: dict[str, list[Any]] = {}
        for path in sorted(folder.glob("*.tf")):
            with path.open() as f:
                for kind, entries in hcl2.load(f, serialization_options=options).items():
                    self.blocks.setdefault(kind, []).extend(entries)
        self.variables = {n: b for v in self.blocks.get("variable", []) for n, b in v.items()}
        self.locals = {n: v for block in self.blocks.get("locals", []) for n, v in block.items()}

    def resources(self, kind: str) -> dict[str, dict]:
        return {
            name: body
            for block in self.blocks.get("resource", [])
            for name, body in block.get(kind, {}).items()
        }

    def resource(self, kind: str, name: str) -> dict:
        return self.resources(kind)[name]

    def lookup(self, scope: str, path: str) -> Any:
        name, *attributes = path.split(".")
        if scope == "var":
            if "default" not in self.variables[name]:
                raise LookupError(name)
            value = self.variables[name]["default"]
        else:
            value = self.value(self.locals[name])
        for attribute in attributes:
            value = value[attribute]
        return value

    def value(self, expr: Any) -> Any:
        """expr with references to variable defaults and locals replaced by their values."""
        if isinstance(expr, list):
            return [self.value(e) for e in expr]
        if isinstance(expr, dict):
            return {self.value(k): self.value(v) for k, v in expr.items()}
        if not isinstance(expr, str):
            return expr
        whole = REF.fullmatch(expr)
        if whole:
            try:
                return self.value(self.lookup(*whole.groups()))
            except LookupError:
                return expr

        def scalar(match: re.Match) -> str:
            try:
                return str(self.value(self.lookup(*match.groups())))
            except LookupError:
                return match.group(0)

        return REF.sub(scalar, expr)


@pytest.fixture(scope="module")
def gcp() -> Module:
    return Module(INFRA / "gcp")


def one_block(body: dict, name: str) -> dict:
    blocks = body.get(name, [])
    assert len(blocks) == 1, f"expected one {name} block, found {len(blocks)}"
    return blocks[0]


def test_gcp_bucket_is_private_and_versioned(gcp):
    bucket = gcp.value(gcp.resource("google_storage_bucket", "data"))
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert one_block(bucket, "versioning")["enabled"] is True
    for kind in (
        "google_storage_bucket_acl",
        "google_storage_bucket_access_control",
        "google_storage_default_object_acl",
        "google_storage_object_acl",
    ):
        assert not gcp.resources(kind), kind
    public = re.compile(r"allUsers|allAuthenticatedUsers")
    assert not public.search(str(gcp.blocks["resource"])), "nothing may be granted to everyone"


def test_gcp_lifecycle_expires_intermediate_files_and_noncurrent_versions(gcp):
    rules = gcp.value(gcp.resource("google_storage_bucket", "data"))["lifecycle_rule"]
    deletes = [
        one_block(r, "condition") for r in rules if one_block(r, "action")["type"] == "Delete"
    ]
    intermediate = [c for c in deletes if "matches_prefix" in c]
    assert intermediate == [{"age": 30, "matches_prefix": ["intermediate/"], "with_state": "LIVE"}]
    noncurrent = [c for c in deletes if "matches_prefix" not in c]
    assert noncurrent == [{"days_since_noncurrent_time": 7, "with_state": "ARCHIVED"}], (
        "apart from intermediate files, only noncurrent versions may be deleted"
    )


def node_pools(gcp: Module) -> dict[str, dict]:
    return {
        name: gcp.value(body) for name, body in gcp.resources("google_container_node_pool").items()
    }


def test_gcp_worker_pools_are_spot_and_scale_to_zero(gcp):
    pools = node_pools(gcp)
    assert set(pools) == {"head", "cpu", "gpu"}
    for name, maximum in (("cpu", 20), ("gpu", 4)):
        pool = pools[name]
        scaling = one_block(pool, "autoscaling")
        assert scaling["total_min_node_count"] == 0, name
        assert scaling["total_max_node_count"] == maximum, name
        assert pool["initial_node_count"] == 0, name
        assert one_block(pool, "node_config")["spot"] is True, name
    head = pools["head"]
    assert one_block(head, "autoscaling")["total_min_node_count"] >= 1
    assert not one_block(head, "node_config").get("spot", False)
    assert not one_block(head, "node_config").get("preemptible", False)


def test_gcp_gpu_pool_is_tainted_labelled_and_has_gpus(gcp):
    pools = node_pools(gcp)
    gpu = one_block(pools["gpu"], "node_config")
    assert gpu["taint"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
    assert gpu["labels"] == {"petavox.io/pool": "gpu"}
    accelerator = one_block(gpu, "guest_accelerator")
    assert accelerator["count"] >= 1
    assert one_block(accelerator, "gpu_driver_installation_config")["gpu_driver_version"]
    for name in ("head", "cpu"):
        config = one_block(pools[name], "node_config")
        assert "taint" not in config and "guest_accelerator" not in config, name
        assert config["labels"] == {"petavox.io/pool": name}


def test_gcp_nodes_run_as_the_minimal_account_with_workload_identity(gcp):
    cluster = gcp.value(gcp.resource("google_container_cluster", "this"))
    assert one_block(cluster, "workload_identity_config")["workload_pool"] == (
        "${var.project_id}.svc.id.goog"
    )
    assert one_block(cluster, "private_cluster_config")["enable_private_nodes"] is True
    for name, pool in node_pools(gcp).items():
        config = one_block(pool, "node_config")
        assert config["service_account"] == "${google_service_account.nodes.email}", name
        assert one_block(config, "workload_metadata_config")["mode"] == "GKE_METADATA", name
    node_member = "serviceAccount:${google_service_account.nodes.email}"
    project_roles = {
        r["role"]
        for r in gcp.resources("google_project_iam_member").values()
        if r["member"] == node_member
    }
    assert project_roles == {"roles/container.defaultNodeServiceAccount"}


def test_gcp_bucket_access_is_granted_on_the_bucket_only(gcp):
    for kind in ("google_project_iam_member", "google_project_iam_binding"):
        roles = [r["role"] for r in gcp.resources(kind).values()]
        assert not [role for role in roles if role.startswith("roles/storage")], kind
    assert not gcp.resources("google_project_iam_policy")
    # The worker account appears in exactly one grant: objectAdmin on the data bucket.
    grants = [
        (kind, body)
        for block in gcp.blocks["resource"]
        for kind, named in block.items()
        for body in named.values()
        if "google_service_account.worker.email" in str(body.get("member", ""))
    ]
    assert grants == [
        (
            "google_storage_bucket_iam_member",
            {
                "bucket": "${google_storage_bucket.data.name}",
                "role": "roles/storage.objectAdmin",
                "member": "serviceAccount:${google_service_account.worker.email}",
            },
        )
    ]


def test_gcp_workload_identity_binding_names_the_service_account(gcp):
    assert not gcp.resources("google_service_account_iam_binding")
    assert not gcp.resources("google_service_account_iam_policy")
    bindings = [gcp.value(b) for b in gcp.resources("google_service_account_iam_member").values()]
    assert [(b["service_account_id"], b["role"], b["member"]) for b in bindings] == [
        (
            "${google_service_account.worker.name}",
            "roles/iam.workloadIdentityUser",
            "serviceAccount:${var.project_id}.svc.id.goog[petavox/petavox-worker]",
        )
    ]


def test_gcp_cluster_enforces_network_policies(gcp):
    """Dataplane V2: the NetworkPolicies of deploy/kuberay are enforced, not merely stored."""
    cluster = gcp.resource("google_container_cluster", "this")
    assert cluster["datapath_provider"] == "ADVANCED_DATAPATH"
    assert "network_policy" not in cluster, "Calico's network_policy conflicts with Dataplane V2"


def test_gcp_network_has_secondary_ranges_private_access_and_nat(gcp):
    subnet = gcp.value(gcp.resource("google_compute_subnetwork", "nodes"))
    assert subnet["private_ip_google_access"] is True
    ranges = {r["range_name"] for r in subnet["secondary_ip_range"]}
    policy = one_block(
        gcp.value(gcp.resource("google_container_cluster", "this")), "ip_allocation_policy"
    )
    assert (
        {policy["cluster_secondary_range_name"], policy["services_secondary_range_name"]}
        == ranges
        == {"pods", "services"}
    )
    nat = gcp.resource("google_compute_router_nat", "this")
    assert one_block(nat, "subnetwork")["name"] == "${google_compute_subnetwork.nodes.id}"


def test_gcp_registry_deletes_untagged_images(gcp):
    repository = gcp.value(gcp.resource("google_artifact_registry_repository", "petavox"))
    assert repository["format"] == "DOCKER"
    policy = one_block(repository, "cleanup_policies")
    assert policy["action"] == "DELETE"
    assert one_block(policy, "condition")["tag_state"] == "UNTAGGED"


@pytest.mark.parametrize(
    ("cloud", "provider", "settings", "version"),
    [
        ("aws", "aws", {"region", "default_tags"}, "~> 5.100"),
        ("gcp", "google", {"project", "region", "default_labels"}, "~> 6.0"),
    ],
)
def test_no_credentials_and_no_backend_settings_in_the_stacks(cloud, provider, settings, version):
    module = Module(INFRA / cloud)
    (config,) = [block[provider] for block in module.blocks["provider"]]
    assert set(config) <= settings
    (terraform_block,) = module.blocks["terraform"]
    assert one_block(terraform_block, "required_providers")[provider]["version"] == version
    (backend,) = terraform_block["backend"]
    assert list(backend.values()) == [{}], "backend settings go in -backend-config"
    secrets = re.compile(r"^\s*(access_key|secret_key|credentials|access_token|token)\s*=", re.M)
    for path in [*(INFRA / cloud).glob("*.tf"), *(INFRA / cloud).glob("tests/*.tftest.hcl")]:
        assert not secrets.search(path.read_text()), path


# ---- who may reach the Kubernetes API -----------------------------------------------------------
API_CIDRS = {"aws": "api_public_cidrs", "gcp": "api_authorized_cidrs"}
OTHER_REQUIRED = {"aws": {}, "gcp": {"project_id": "my-project"}}
REFUSED_CIDRS = (
    '["0.0.0.0/0"]',
    '["203.0.113.7/32", "0.0.0.0/0"]',
    '["10.0.0.0/0"]',
    '["203.0.113.7"]',
    '["203.0.113.5/24"]',
    '["2001:db8::/32"]',
    '["my-office"]',
)
ACCEPTED_CIDRS = ('["203.0.113.7/32"]', '["198.51.100.0/24", "203.0.113.7/32"]', "[]")


@pytest.mark.parametrize("cloud", sorted(API_CIDRS))
def test_api_cidrs_are_required_and_never_default_to_the_internet(cloud: str) -> None:
    """The operator names who may reach the API: no default, two validations, and no
    0.0.0.0/0 default anywhere in the text of variables.tf."""
    name = API_CIDRS[cloud]
    variable = Module(INFRA / cloud).variables[name]
    assert "default" not in variable, f"{cloud}: {name} must have no default"
    conditions = [v["condition"] for v in variable["validation"]]
    assert len(conditions) == 2 and all(f"var.{name}" in c for c in conditions)
    text = (INFRA / cloud / "variables.tf").read_text()
    assert not re.search(r'default\s*=\s*\[?\s*"0\.0\.0\.0/0"', text), cloud


def test_an_empty_cidr_list_turns_the_public_endpoint_off() -> None:
    """AWS is plan-tested (aws/tests); GCP, which cannot be planned here, structurally."""
    cluster = Module(INFRA / "gcp").resource("google_container_cluster", "this")
    private = one_block(cluster, "private_cluster_config")
    assert private["enable_private_nodes"] is True
    assert private["enable_private_endpoint"] == "${length(var.api_authorized_cidrs) == 0}"
    (dynamic,) = one_block(cluster, "master_authorized_networks_config")["dynamic"]
    assert dynamic["cidr_blocks"]["for_each"] == "${var.api_authorized_cidrs}"


def variables_only(cloud: str, work: Path) -> Path:
    """The stack's variables.tf alone, initialised: it needs no provider, so terraform evaluates
    the variables' validations offline (a plan of nothing) for either cloud."""
    stack = work / cloud
    stack.mkdir()
    shutil.copy(INFRA / cloud / "variables.tf", stack)
    init = terraform(stack, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stdout + init.stderr
    return stack


def plan_with_cidrs(stack: Path, cloud: str, cidrs: str | None) -> subprocess.CompletedProcess[str]:
    values = OTHER_REQUIRED[cloud] | ({} if cidrs is None else {API_CIDRS[cloud]: cidrs})
    return terraform(
        stack, "plan", "-input=false", "-lock=false", *(f"-var={k}={v}" for k, v in values.items())
    )


@pytest.mark.parametrize("cloud", sorted(API_CIDRS))
def test_api_cidrs_refuse_the_internet_and_malformed_blocks(cloud: str, tmp_path: Path) -> None:
    stack = variables_only(cloud, tmp_path)
    name = API_CIDRS[cloud]
    missing = plan_with_cidrs(stack, cloud, None)
    assert missing.returncode != 0, missing.stdout
    assert "No value for required variable" in missing.stderr and name in missing.stderr
    for cidrs in REFUSED_CIDRS:
        result = plan_with_cidrs(stack, cloud, cidrs)
        assert result.returncode != 0, (cidrs, result.stdout)
        assert f"{name}: " in result.stderr, (cidrs, result.stderr)  # our validation refused it
    for cidrs in ACCEPTED_CIDRS:
        result = plan_with_cidrs(stack, cloud, cidrs)
        assert result.returncode == 0, (cidrs, result.stdout + result.stderr)
