"""The slurm profile on a real (one-node) SLURM cluster: tools/slurm/up.sh brings it up (CI: .ci/run does).

Every run goes through `--profile profiles/slurm` plus the small override tests/slurm/profile (squeue status,
no account, the node's 2 CPUs) and checks, from the sbatch calls (a logging shim in front of sbatch) and from
SLURM's own job records (jobcomp log), that every job was submitted with sbatch to the right partition.

* a miniature of the workflow (tests/slurm/mini): CPU job -> cpu, 1- and 2-GPU jobs -> gpu with --gpus,
  per-session jobs and their gather job bundled into one cluster job (group "preprocess");
* a "training" job that hits its time limit is resubmitted by the profile's retries and resumes;
* a job requeued by SLURM (what preemption does) resumes from its checkpoint under the same job id;
* the tiny end-to-end workflow (tests/configs/ci.yaml) through the slurm profile.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from helpers.config import merged_config
from helpers.rules import RULES, cli_commands, module_file, rule_verbs

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SHIM = ROOT / "tests/slurm/bin"
STATE = Path(os.environ.get("LDAE_SLURM_STATE", "/var/lib/ldae-slurm"))
JOBCOMP = STATE / "jobcomp.log"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def cluster_problem() -> str | None:
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "no SLURM client tools (sinfo/sbatch): run tools/slurm/up.sh as root first"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R %t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: is slurmctld running? (tools/slurm/up.sh)"
    if out.returncode:
        return f"sinfo fails ({out.stderr.strip()}): run tools/slurm/up.sh as root first"
    states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    for partition in ("cpu", "gpu"):
        if partition not in states:
            return f"SLURM partition {partition!r} missing (partitions: {sorted(states)}); use tools/slurm/up.sh"
    if not JOBCOMP.parent.is_dir():
        return f"{JOBCOMP.parent} missing: this is not the cluster of tools/slurm/up.sh"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = cluster_problem()
    if problem and os.environ.get("LDAE_REQUIRE_SLURM"):
        pytest.fail(f"LDAE_REQUIRE_SLURM is set (CI) but {problem}")
    if problem:
        pytest.skip(problem)


# ---- running snakemake through the slurm profile -----------------------------------------------------
class Run:
    def __init__(self, tmp: Path, result: subprocess.CompletedProcess | None = None):
        self.tmp, self.result = tmp, result

    @property
    def log(self) -> str:
        return (self.tmp / "snakemake.log").read_text()

    def sbatch(self) -> list[dict]:
        path = self.tmp / "sbatch.jsonl"
        calls = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        for call in calls:
            call.update(parse_sbatch(call["args"]))
        return calls


def parse_sbatch(args: list[str]) -> dict:
    """Partition, GPUs and the Snakemake jobs (rule names) of one sbatch call."""
    partition = args[args.index("-p") + 1] if "-p" in args else None
    gpus = next((a.split("=", 1)[1] for a in args if a.startswith("--gpus=")), None)
    wrap = next(a.split("=", 1)[1] for a in args if a.startswith("--wrap="))
    words = shlex.split(wrap)
    start = words.index("--target-jobs") + 1
    targets = []
    for word in words[start:]:
        if word.startswith("--"):
            break
        targets.append(word)
    return {"partition": partition, "gpus": gpus, "rules": [t.split(":", 1)[0] for t in targets]}


def snakemake_env(tmp: Path) -> dict:
    env = dict(os.environ)
    # the sbatch shim first; the interpreter running the tests next (rules call `python`: no images here)
    env["PATH"] = os.pathsep.join([str(SHIM), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["LDAE_SBATCH_LOG"] = str(tmp / "sbatch.jsonl")
    env.pop("SLURM_JOB_ID", None)
    return env


def slurm_args(tmp: Path, snakefile: Path, configfiles: list[Path], targets=()) -> list[str]:
    return SNAKEMAKE + [
        "--snakefile", str(snakefile),
        "--profile", "profiles/slurm",
        "--profile", "tests/slurm/profile",
        "--configfile", *map(str, configfiles),
        "--slurm-logdir", str(tmp / "slurm_logs"),
        *targets,
    ]  # fmt: skip


def run_slurm(tmp: Path, snakefile: Path, configfiles: list[Path], targets=(), timeout=900) -> Run:
    with open(tmp / "snakemake.log", "w") as log:
        result = subprocess.run(
            slurm_args(tmp, snakefile, configfiles, targets), cwd=ROOT, env=snakemake_env(tmp),
            stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
        )  # fmt: skip
    return Run(tmp, result)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def jobcomp(jobids, timeout=30.0) -> dict[str, list[dict]]:
    """SLURM's record of each finished job (one entry per run; a requeued job has several)."""
    wanted, records = set(jobids), {}
    deadline = time.time() + timeout
    while True:
        records = {}
        for line in JOBCOMP.read_text().splitlines() if JOBCOMP.exists() else []:
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if fields.get("JobId") in wanted:
                records.setdefault(fields["JobId"], []).append(fields)
        done = all(any(r["JobState"] != "PENDING" for r in records.get(j, [])) for j in wanted)
        if done or time.time() > deadline:
            return records
        time.sleep(1)


def finished_jobs(log: str) -> Counter:
    """Jobs the main Snakemake process saw finish, by rule (local rules such as `all` excluded)."""
    local = set(re.findall(r"^local(?:rule|checkpoint) (\w+):", log, re.M))
    done = Counter(re.findall(r"^Finished jobid: \S+ \(Rule: (\w+)\)", log, re.M))
    return Counter({rule: n for rule, n in done.items() if rule not in local})


def assert_all_through_sbatch(run: Run, expected_partition) -> list[dict]:
    """Every job went through sbatch, to the partition expected for its rule, and SLURM ran it there."""
    assert run.result.returncode == 0, run.log[-6000:]
    calls = run.sbatch()
    assert calls, "no sbatch call recorded"
    assert all(c["rc"] == 0 for c in calls), [c for c in calls if c["rc"]]
    submitted = Counter(rule for c in calls for rule in c["rules"])
    assert submitted == finished_jobs(run.log), (submitted, finished_jobs(run.log))
    for call in calls:
        partitions = {expected_partition(rule) for rule in call["rules"]}
        assert partitions == {call["partition"]}, f"{call['rules']} submitted to {call['partition']}"
    records = jobcomp(c["jobid"] for c in calls)
    for call in calls:
        last = records[call["jobid"]][-1]
        assert last["JobState"] == "COMPLETED", (call["rules"], last)
        assert last["Partition"] == call["partition"], (call["rules"], last)
    return calls


# ---- the miniature -------------------------------------------------------------------------------------
MINI = ROOT / "tests/slurm/mini/Snakefile"


def test_cpu_and_gpu_jobs_go_to_their_partitions_and_sessions_are_bundled(tmp_path):
    items = 7
    override = write_yaml(tmp_path / "override.yaml", {
        "out_dir": str(tmp_path / "out"),
        "resources": {"default": {"cpus_per_gpu": 1}, "mini_gpu1": {"gpus": 1}, "mini_gpu2": {"gpus": 2},
                      "preprocess": {"threads": 1, "mem_mb": 1000, "runtime": 5},
                      "preprocess_bundle": {"mem_mb": 100, "runtime": 1}},
        "mini": {"items": items},
    })  # fmt: skip
    run = run_slurm(tmp_path, MINI, [override])
    gpu_rules = {"mini_gpu1", "mini_gpu2"}
    calls = assert_all_through_sbatch(run, lambda rule: "gpu" if rule in gpu_rules else "cpu")

    by_rule = {tuple(sorted(set(c["rules"]))): c for c in calls}
    assert by_rule[("mini_cpu",)]["gpus"] is None
    assert by_rule[("mini_gpu1",)]["gpus"] == "a100:1"
    assert by_rule[("mini_gpu2",)]["gpus"] == "a100:2"
    assert "--cpus-per-gpu=1" in by_rule[("mini_gpu2",)]["args"]
    # the 7 per-session jobs and their gather job in ONE sbatch job (the bundle): items 2 side by side
    # (2 CPUs, 2 x 1000 MB), 4 rounds of 5 min, then the gather job's 1 min
    bundle = by_rule[("mini_bundle", "mini_item")]
    assert Counter(bundle["rules"]) == {"mini_item": items, "mini_bundle": 1}
    assert "--cpus-per-task=2" in bundle["args"]
    assert bundle["args"][bundle["args"].index("-t") + 1] == str(5 * -(-items // 2) + 1)
    # and inside the jobs SLURM said where they ran
    out = tmp_path / "out/mini"
    assert "partition=gpu" in (out / "gpu2.txt").read_text()
    assert "partition=cpu" in (out / "cpu.txt").read_text()
    assert all("partition=cpu" in p.read_text() for p in (out / "items").glob("*.txt"))


def train_config(tmp: Path, **train) -> Path:
    return write_yaml(tmp / "train.yaml", {
        "out_dir": str(tmp / "out"),
        "resources": {"mini_train": {"runtime": train.pop("runtime", 10)}},
        "mini": {"train": {"step_seconds": 1, "save_every": 2, **train}},
    })  # fmt: skip


def test_training_job_resumes_after_its_time_limit(tmp_path):
    """1-minute limit, ~100 s of work: SLURM kills attempt 1 (TIMEOUT), the profile's retries resubmit
    it, and attempt 2 continues from the saved step instead of starting over."""
    run = run_slurm(tmp_path, MINI, [train_config(tmp_path, steps=100, runtime=1)], ["mini_train"])
    assert run.result.returncode == 0, run.log[-6000:]
    calls = run.sbatch()
    assert [(c["rules"], c["partition"]) for c in calls] == [(["mini_train"], "cpu")] * 2, calls
    records = jobcomp(c["jobid"] for c in calls)
    assert [records[c["jobid"]][-1]["JobState"] for c in calls] == ["TIMEOUT", "COMPLETED"]
    done = json.loads((tmp_path / "out/mini/train/done.json").read_text())
    first, second = done["attempts"]
    assert first["start_step"] == 0 and 30 <= second["start_step"] < 100, done
    assert [first["slurm_job_id"], second["slurm_job_id"]] == [c["jobid"] for c in calls]
    assert done["steps"] == 100


def test_requeued_training_job_resumes_from_its_checkpoint(tmp_path):
    """Preemption with requeue (sbatch --requeue from the profile): SLURM stops the job and queues it
    again under the same id; it continues from its last saved step, and Snakemake just waits."""
    config = train_config(tmp_path, steps=30)
    resume = tmp_path / "out/resume/mini_train"
    with open(tmp_path / "snakemake.log", "w") as log:
        proc = subprocess.Popen(
            slurm_args(tmp_path, MINI, [config], ["mini_train"]), cwd=ROOT, env=snakemake_env(tmp_path),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline, step = time.time() + 240, 0
            while step < 6 and time.time() < deadline and proc.poll() is None:
                time.sleep(1)
                state = next(resume.glob("*/last.json"), None)
                step = json.loads(state.read_text())["step"] if state else 0
            assert step >= 6, f"the job did not get going (step {step})"
            jobid = Run(tmp_path).sbatch()[0]["jobid"]
            subprocess.run(["scontrol", "requeue", jobid], check=True)
            time.sleep(2)  # a requeued job is held for a while (BeginTime); a test need not wait for it
            subprocess.run(["scontrol", "update", f"JobId={jobid}", "StartTime=now"], check=True)
            proc.wait(timeout=400)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
    run = Run(tmp_path, subprocess.CompletedProcess(proc.args, proc.returncode))
    assert proc.returncode == 0, run.log[-6000:]
    calls = run.sbatch()
    assert len(calls) == 1 and "--requeue" in calls[0]["args"], calls
    done = json.loads((tmp_path / "out/mini/train/done.json").read_text())
    first, second = done["attempts"]
    assert first["slurm_job_id"] == second["slurm_job_id"] == jobid
    assert first["start_step"] == 0 and second["start_step"] >= 6, done
    assert [r["JobState"] for r in jobcomp([jobid])[jobid]][-1] == "COMPLETED"


# ---- the tiny end-to-end workflow ---------------------------------------------------------------------
def missing_verb_modules() -> list[str]:
    commands = cli_commands()
    return [
        f"{rule} (ldae {verb} -> {commands.get(verb)})"
        for rule, _, verb in rule_verbs()
        if verb not in commands or module_file(commands[verb]) is None
    ]


def test_tiny_workflow_end_to_end_through_the_slurm_profile(tmp_path):
    missing = missing_verb_modules()
    if missing:
        pytest.skip("rules whose `ldae` verb is not written yet: " + ", ".join(missing))
    ci = ROOT / "tests/configs/ci.yaml"
    config = merged_config(ROOT / "config.yaml", ci)
    # GPU rules: a GPU count in config and resources from rule_resources(); they keep their GPUs (fake a100s
    # on the test node) but use 1 each here, with 1 CPU per GPU (the miniature checks 2-GPU jobs)
    gpu_rules = {
        rule for rule, (_, body) in RULES.items()
        if f'rule_resources("{rule}")' in body and config["resources"].get(rule, {}).get("gpus")
    }  # fmt: skip
    # Every job must fit the 2-CPU test node as declared: a bundle's sessions run as job steps inside its
    # allocation with their own (config) sizes, so shrink them in the config rather than only capping them
    # in the profile.
    resources = {
        rule: {"mem_mb": min(entry.get("mem_mb", 1000), 1000), **({"threads": 1} if "threads" in entry else {})}
        for rule, entry in config["resources"].items()
    }
    resources["default"]["cpus_per_gpu"] = 1
    for rule in gpu_rules:
        resources[rule]["gpus"] = 1
    override = write_yaml(tmp_path / "override.yaml", {"out_dir": str(tmp_path / "out"), "resources": resources})
    run = run_slurm(tmp_path, ROOT / "Snakefile", [ci, override], timeout=1800)
    calls = assert_all_through_sbatch(run, lambda rule: "gpu" if rule in gpu_rules else "cpu")
    rules = {rule for c in calls for rule in c["rules"]}
    assert {"synthesize_adni", "adni_to_bids", "sessions", "splits"} <= rules, rules
    assert all(c["gpus"] == "a100:1" for c in calls if c["partition"] == "gpu")
    assert all(c["gpus"] is None for c in calls if c["partition"] == "cpu")
    assert (tmp_path / "out/tables/splits.tsv").exists()
