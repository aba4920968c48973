"""The cluster profiles and per-rule resources, without a cluster: every rule's resources (config.yaml through
common.smk rule_resources) go to the right partition of profiles/slurm/partitions.yaml under the slurm
plugin's own partition selection; GPU rules carry the paper's GPU counts; the profiles hold what they must.
tests/test_slurm.py repeats the routing on a real SLURM."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from helpers.rules import RULES

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "profiles/slurm"
PAPER_GPUS = {"train_autoencoder": 1, "encode_latents": 1, "train_ldm": 2, "train_ldae": 2, "embed": 1,
              "reconstruct": 1, "interpolate": 1, "manipulate": 1, "time_inference": 1}  # fmt: skip


@pytest.fixture(scope="module")
def workflow():
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        wf = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[ROOT / "config.yaml"]),
            snakefile=ROOT / "Snakefile",
            workdir=ROOT,
        )
        return wf._workflow


def rule_text(rule) -> str:
    return RULES.get(rule.name, (None, ""))[1]  # the rule block as written


def declared_resources(workflow, rule) -> tuple[dict, int]:
    """(resources, threads) a rule declares through the common.smk helpers (empty for rules without)."""
    text = rule_text(rule)
    helpers = workflow.globals
    used = re.search(r'rule_resources\("(\w+)"\)', text)
    resources = helpers["rule_resources"](used.group(1)) if used else {}
    used = re.search(r'rule_threads\("(\w+)"\)', text)
    threads = helpers["rule_threads"](used.group(1)) if used else 1
    return resources, threads


def fake_job(name, resources, threads):
    return SimpleNamespace(name=name, threads=threads, resources=SimpleNamespace(get=resources.get, **resources))


def test_slurm_profile():
    profile = yaml.safe_load((SLURM / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["software-deployment-method"] == "apptainer" and "--nv" in profile["apptainer-args"]
    assert profile["retries"] >= 1 and profile["slurm-requeue"] is True  # time limits / preemption resume
    assert (SLURM / profile["slurm-partition-config"]).is_file()
    assert "group-components" not in profile, "per-session bundles come from the workflow (session_bundles)"
    assert profile["cores"] >= 4 and profile["resources"]["mem_mb"] >= 64000
    for key in ("slurm_partition", "slurm_account"):  # placeholders stay comments: they would pin every rule
        assert key not in (profile.get("default-resources") or {})


def test_default_profile_suits_every_executor():
    """Snakemake also loads profiles/default under --profile profiles/slurm, and its keys win there."""
    profile = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text()) or {}
    clash = {"cores", "jobs", "executor", "default-resources", "resources", "software-deployment-method", "retries"}
    assert not clash & set(profile), f"profiles/default must not set {sorted(clash & set(profile))}"


def test_partitions_file_separates_cpu_and_gpu():
    parts = yaml.safe_load((SLURM / "partitions.yaml").read_text())["partitions"]
    assert parts["cpu"]["max_gpu"] == 0 and parts["gpu"]["max_gpu"] >= 2
    assert "a100" in parts["gpu"]["available_gpu_models"]


def test_paper_gpu_rules(workflow):
    rules = {rule.name: rule for rule in workflow.rules}
    for name, gpus in PAPER_GPUS.items():
        if name not in rules:
            continue
        resources, threads = declared_resources(workflow, rules[name])
        assert resources.get("gpu") == gpus, (name, resources)
        assert resources.get("gpu_model") == "a100" and resources.get("cpus_per_gpu") == 8, (name, resources)
        assert threads == gpus * 8, (name, threads)
        assert resources["runtime"] >= 120 and resources["mem_mb"] >= 16000, (name, resources)


def test_every_rule_goes_to_the_partition_its_gpus_call_for(workflow):
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    partitions = read_partition_file(SLURM / "partitions.yaml")
    log = logging.getLogger("test")
    routed = {}
    for rule in workflow.rules:
        if rule.norun:
            continue
        resources, threads = declared_resources(workflow, rule)
        resources.setdefault("mem_mb", 4000)  # the slurm profile's default-resources
        resources.setdefault("runtime", 60)
        expected = "gpu" if resources.get("gpu") else "cpu"
        routed[rule.name] = get_best_partition(partitions, fake_job(rule.name, resources, threads), log)
        assert routed[rule.name] == expected, (rule.name, resources, threads, routed[rule.name])
    assert "gpu" in routed.values() or not set(PAPER_GPUS) & set(routed)


def test_rule_resources_helper(workflow):
    helpers, config = workflow.globals, workflow.config
    cpu = helpers["rule_resources"]("adni_to_bids")
    assert cpu["gpu"] == 0 and "gpu_model" not in cpu and cpu["mem_mb"] == config["resources"]["adni_to_bids"]["mem_mb"]
    unknown = helpers["rule_resources"]("no_such_rule")  # falls back to resources.default
    assert unknown["mem_mb"] == config["resources"]["default"]["mem_mb"] and unknown["gpu"] == 0
    resume = helpers["resume_dir"]
    assert resume("train_ldm", {"lr": 1}) == resume("train_ldm", {"lr": 1})
    assert resume("train_ldm", {"lr": 1}) != resume("train_ldm", {"lr": 2})
    assert resume("train_ldm", {"lr": 1}).startswith(str(config["out_dir"]))
