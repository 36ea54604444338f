"""The AWS cluster launcher config (cluster.yaml) against Ray's own schema, offline.

`ray up` resolves a config in ``ray.autoscaler._private.commands._bootstrap_config``:
``prepare_config`` (merge with the provider's defaults.yaml, merge setup commands, fill per-type
min/max workers), then the AWS resource autodetection (boto3, skipped here), then
``validate_config`` (jsonschema against ``ray/autoscaler/ray-schema.json`` plus Ray's own checks),
then the AWS bootstrap (IAM, key pair, subnets; skipped here). These tests run the two offline
steps exactly as Ray does, prove the validation rejects broken copies, and pin the properties
the cluster relies on: a head without CPUs, spot GPU workers from zero, a localhost-only
dashboard, token auth, and no credentials in the file.
"""

from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

from ray.autoscaler._private import commands as ray_commands  # noqa: E402
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
TOKEN_PATH = "/home/ray/.ray/auth_token"  # ~/.ray/auth_token of user "ray" in Ray's images
CHECKOUT = "/home/ray/ecg_ray"
AMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def ray_up_validate(config: dict[str, Any]) -> dict[str, Any]:
    """The offline part of what `ray up` does to a config; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def config(text) -> dict[str, Any]:
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def prepared(config) -> dict[str, Any]:
    return ray_up_validate(config)


def worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: node for name, node in config["available_node_types"].items()
            if name != config["head_node_type"]}


def gpu_type(config: dict[str, Any]) -> dict[str, Any]:
    (node,) = [node for node in worker_types(config).values() if node["resources"].get("GPU", 0) > 0]
    return node


def test_ray_up_still_prepares_then_validates():
    """The helper mirrors `ray up`: if Ray changes how it validates, this test says so."""
    source = inspect.getsource(ray_commands._bootstrap_config)
    assert source.index("prepare_config(") < source.index("validate_config(")


def test_config_passes_ray_validation(config, prepared):
    validate_config(copy.deepcopy(config))  # the file alone is complete (cluster_synced_files set)
    assert prepared["cluster_name"] == "ecg-ray"
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"] == "us-west-2"
    assert prepared["provider"]["availability_zone"].startswith("us-west-2")
    assert prepared["provider"]["cache_stopped_nodes"] is False
    assert prepared["auth"] == {"ssh_user": "ubuntu"}


def test_head_runs_no_work(prepared):
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["min_workers"] == 0 and head["max_workers"] == 0
    assert "InstanceMarketOptions" not in head["node_config"], "the head must be on-demand"


def test_gpu_workers_are_spot_and_scale_from_zero(prepared, text):
    gpu = gpu_type(prepared)
    assert gpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert gpu["min_workers"] == 0
    assert gpu["resources"] == {"CPU": 4, "GPU": 1}
    assert 0 < gpu["max_workers"] <= prepared["max_workers"]
    # every elastic range the comments advertise fits the GPU type (one GPU per training worker)
    ranges = [(int(low), int(high)) for low, high in re.findall(r"--workers (\d+)-(\d+)", text)]
    assert ranges, "the elastic-training example is documented"
    for low, high in ranges:
        assert 1 <= low <= high <= gpu["max_workers"]


def test_cpu_workers_for_ray_data(prepared):
    cpu_only = [node for node in worker_types(prepared).values() if node["resources"].get("GPU", 0) == 0]
    assert len(cpu_only) == 1
    (cpu,) = cpu_only
    assert cpu["min_workers"] == 0 and cpu["max_workers"] > 0 and cpu["resources"]["CPU"] > 0
    assert sum(node["min_workers"] for node in worker_types(prepared).values()) == 0
    assert prepared["idle_timeout_minutes"] > 0 and prepared["upscaling_speed"] > 0


def test_dashboard_is_local_and_token_auth_is_on(prepared):
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "ray stop" in prepared["head_start_ray_commands"][0]
    assert "ray start --head --port=6379" in head_start
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "RAY_AUTH_MODE=token" in head_start
    worker_start = " ".join(prepared["worker_start_ray_commands"])
    assert "--address=$RAY_HEAD_IP:6379" in worker_start and "RAY_AUTH_MODE=token" in worker_start
    assert "0.0.0.0" not in head_start + worker_start
    # the head makes the token; workers get the head's copy before `ray start`
    assert any("ray get-auth-token --generate" in cmd for cmd in prepared["head_setup_commands"])
    assert TOKEN_PATH in prepared["cluster_synced_files"]


def setup_of(prepared: dict[str, Any], name: str) -> list[str]:
    """The commands Ray runs on a node of type ``name`` (after merge_setup_commands), as the autoscaler picks them."""
    if name == prepared["head_node_type"]:
        return prepared["head_setup_commands"]
    return prepared["available_node_types"][name].get("worker_setup_commands", prepared["worker_setup_commands"])


def image_of(prepared: dict[str, Any], name: str) -> str:
    docker = prepared["docker"]
    if name == prepared["head_node_type"]:
        return docker.get("head_image", docker.get("image"))
    own = prepared["available_node_types"][name].get("docker", {})
    return own.get("worker_image", docker.get("worker_image", docker.get("image")))


def _project_requirement(name: str):
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (requirement,) = [Requirement(dep) for dep in deps if Requirement(dep).name == name]
    return requirement


def _torch_installs(commands: list[str]) -> list[str]:
    return [cmd for cmd in commands if re.search(r"pip install .*\btorch\b", cmd)]


def test_installs_the_mounted_checkout(prepared):
    assert prepared["file_mounts"] == {CHECKOUT: "."}
    for name in prepared["available_node_types"]:
        setup = setup_of(prepared, name)
        (torch,) = [setup.index(cmd) for cmd in _torch_installs(setup)]
        assert setup.index(f"pip install -e {CHECKOUT}") > torch, name  # torch first: its build is the one kept


def test_every_node_runs_in_a_ray_image_of_the_pinned_version(prepared):
    """Ray in the containers must be the version ecg_ray pins (clients and cluster must match)."""
    ray_pin = _project_requirement("ray")
    for name in prepared["available_node_types"]:
        image = image_of(prepared, name)
        match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(cpu|cu\d+)", image or "")
        assert match, f"{name}: {image!r} is not a pinned rayproject/ray image"
        assert match.group(1) in ray_pin.specifier, f"{name}: image Ray {match.group(1)} vs pyproject {ray_pin}"
        gpu = prepared["available_node_types"][name]["resources"].get("GPU", 0) > 0
        assert match.group(4).startswith("cu") == gpu, f"{name}: GPU nodes need the CUDA image, others the CPU one"
    assert prepared["docker"]["pull_before_run"] is True


def test_gpu_nodes_install_the_cuda_torch_of_their_image(prepared):
    torch_pin = _project_requirement("torch")
    for name, node in prepared["available_node_types"].items():
        cuda = re.search(r"-(cpu|cu\d+)$", image_of(prepared, name)).group(1)
        (install,) = _torch_installs(setup_of(prepared, name))
        version = re.search(r"torch==([\d.]+)", install).group(1)
        assert version in torch_pin.specifier
        index = re.search(r"--index-url https://download\.pytorch\.org/whl/(\w+)", install)
        assert index, f"{name}: torch must come from PyTorch's index for a known build, got {install!r}"
        assert index.group(1) == cuda, f"{name}: image {cuda} but torch build {index.group(1)}"
        if node["resources"].get("GPU", 0) > 0:
            assert cuda != "cpu"


def test_every_node_gets_a_current_ami(prepared):
    """No node type may fall back to Ray's built-in default (an Ubuntu 18.04 Deep Learning AMI)."""
    for name, node in prepared["available_node_types"].items():
        ami = node["node_config"].get("ImageId", "")
        assert ami == f"resolve:ssm:{AMI_PARAMETER}" or re.fullmatch(r"ami-[0-9a-f]{8,17}", ami), (name, ami)


def test_every_worker_gets_token_auth(prepared):
    assert prepared["cluster_synced_files"] == [TOKEN_PATH]
    for name in prepared["available_node_types"]:
        assert any("RAY_AUTH_MODE=token" in cmd for cmd in setup_of(prepared, name)), name
    # the token is made where the synced path points: ~ of the image's user
    assert any("ray get-auth-token --generate" in cmd and "~/.ray/auth_token" in cmd
               for cmd in prepared["head_setup_commands"])
    assert TOKEN_PATH.startswith("/home/ray/") and CHECKOUT.startswith("/home/ray/")


def test_torch_pin_satisfies_the_project():
    assert "2.13.0" in _project_requirement("torch").specifier


SECRET_PATTERNS = [
    r"AKIA[0-9A-Z]{16}",                                            # an AWS access key id
    r"BEGIN [A-Z ]*PRIVATE KEY",
    r"(?i)aws_(access_key_id|secret_access_key|session_token)\s*[:=]",
    r"RAY_AUTH_TOKEN\s*[:=]",                                       # a token value (not _PATH)
]
SECRET_KEYS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "ssh_private_key", "keyname"}


def _keys(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keys(item)


def test_no_secrets(text, config):
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text), pattern
    assert not SECRET_KEYS & {key.lower() for key in _keys(config)}
    assert "ssh_private_key" not in config["auth"]
    for local in config.get("file_mounts", {}).values():
        assert not re.search(r"\.pem$|id_rsa|id_ed25519|\.aws|credentials", local), local


def _broken(config: dict[str, Any], how: str) -> dict[str, Any]:
    bad = copy.deepcopy(config)
    gpu_name = next(name for name, node in worker_types(bad).items() if node["resources"].get("GPU"))
    if how == "unknown top-level key":
        bad["max_worker"] = 3
    elif how == "max_workers not an integer":
        bad["max_workers"] = "twelve"
    elif how == "fractional GPU resource":
        bad["available_node_types"][gpu_name]["resources"]["GPU"] = 0.5
    elif how == "negative CPU resource":
        bad["available_node_types"][bad["head_node_type"]]["resources"]["CPU"] = -1
    elif how == "unknown node-type key":
        bad["available_node_types"][gpu_name]["min_worker"] = 0
    elif how == "node type without node_config":
        del bad["available_node_types"][gpu_name]["node_config"]
    elif how == "setup command not a string":
        bad["setup_commands"] = [*bad["setup_commands"], ["pip", "install", "-e", "."]]
    elif how == "head type not defined":
        bad["head_node_type"] = "ray.head.gpu"
    elif how == "min_workers above max_workers":
        bad["available_node_types"][gpu_name]["min_workers"] = bad["max_workers"] + 1
    else:
        raise AssertionError(how)
    return bad


@pytest.mark.parametrize("how", [
    "unknown top-level key", "max_workers not an integer", "fractional GPU resource", "negative CPU resource",
    "unknown node-type key", "node type without node_config", "setup command not a string",
    "head type not defined", "min_workers above max_workers",
])
def test_broken_copy_fails_validation(config, how):
    bad = _broken(config, how)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        ray_up_validate(bad)
