"""DAG scale: how long `snakemake -n` takes on an ADNI-sized session table, and how many jobs the cluster
sees with the slurm profile's grouping. Writes bench/results/dag_scale.json (see bench/README.md).

    .venv/bin/python bench/dag_scale/run.py [--sessions 10340] [--repeats 2] [--workdir DIR]

Steps (all in a scratch output folder; nothing runs, tools/fake_run.py fakes completed jobs):
  1. the session and split tables are "done" for N sessions (the `sessions` checkpoint complete, so the
     per-session part of the DAG expands);
  2. plan: `snakemake -n` of everything after them (N per-session preprocessing jobs, ...), plain and with
     --profile profiles/slurm (its group-components bundle per-session jobs: count the sbatch jobs);
  3. complete: every job "done", `snakemake -n` again (nothing to do: the check itself), on a smaller
     table (--complete-sessions; faking 10,340 finished sessions takes Snakemake's scheduler about an hour).
While workflow/rules/preprocess.smk has no rule yet, bench/dag_scale/Snakefile adds a stand-in per-session
rule shaped like it (recorded as "snakefile" in the results); rerun the bench when the real rule lands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CI = ROOT / "tests/configs/ci.yaml"
RESULTS = ROOT / "bench/results/dag_scale.json"


def has_session_rule() -> bool:
    text = (ROOT / "workflow/rules/preprocess.smk").read_text()
    return bool(re.search(r"^rule\s+\w+\s*:", text, re.M))


CPU = {}  # command -> CPU seconds (user + system) of its last run: on a shared machine wall time is noisy


def timed(cmd: list[str]) -> tuple[float, dict, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU[tuple(cmd)] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    stats = next(
        (json.loads(line[len("DAGSTATS ") :]) for line in result.stderr.splitlines() if line.startswith("DAGSTATS ")),
        {},
    )
    return seconds, stats, result.stdout


def save(results: dict) -> None:
    path = Path(results.get("results_file", RESULTS))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10340, help="rows of the session table (ADNI: 10,340)")
    parser.add_argument("--repeats", type=int, default=2, help="timings per scenario (the best is kept)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--group-sizes",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[25, 100],
        help="preprocess.group_size values to time besides the configured one",
    )
    parser.add_argument(
        "--complete-sessions", type=int, default=1000,
        help="sessions for the all-done check (faking every job done costs O(n^2) in Snakemake's local "
        "scheduler: ~1 h for 10,340 sessions; 0 skips it)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default: %(default)s)")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ldae-dag-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base.yaml"
    base.write_text(yaml.safe_dump({"out_dir": str(work / "out")}))
    real = has_session_rule()
    snakefile = ROOT / "Snakefile" if real else HERE / "Snakefile"
    target = [] if real else ["standin_all"]
    common = ["-s", str(snakefile), "--configfile", str(CI), str(base)]
    py = sys.executable
    count = [py, str(HERE / "count_jobs.py")]
    fake = [py, str(ROOT / "tools/fake_run.py"), "--sessions", str(args.sessions), "--"]
    out = work / "out"

    results: dict = {
        "results_file": str(args.out),
        "sessions": args.sessions,
        "snakefile": "workflow (real preprocessing rule)"
        if real
        else "bench/dag_scale/Snakefile (stand-in per-session rule)",
        "host": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg(), "python": platform.python_version()},
    }
    import snakemake

    results["snakemake"] = snakemake.__version__

    # 1. tables done
    t, _, _ = timed(fake + [*common, "--cores", "1", str(out / "tables/sessions.tsv"), str(out / "tables/splits.tsv")])
    results["fake_tables_s"] = round(t, 2)

    def best(cmd, key=None):
        runs, cpu = [], []
        for _ in range(args.repeats):
            runs.append(timed(cmd))
            cpu.append(CPU[tuple(cmd)])
        if key:
            results[key + "_cpu_s"] = round(min(cpu), 2)
        return min(r[0] for r in runs), runs[0][1], runs[0][2]

    # 2. plan everything after the tables
    t, stats, stdout = best(count + ["-n", "--cores", "1", *target, *common], "plan_dry_run")
    results["plan_dry_run_s"] = round(t, 2)
    results["plan_jobs"] = stats.get("planned_jobs")
    results["plan_jobs_by_rule"] = dict(re.findall(r"^(\w+)\s+(\d+)$", stdout.split("Job stats:")[-1], re.M))
    t, stats, _ = best(count + ["-n", "--profile", "profiles/slurm", *target, *common], "plan_dry_run_slurm_profile")
    results["plan_dry_run_slurm_profile_s"] = round(t, 2)
    results["slurm_profile"] = stats
    save(results)

    # bundle size (config preprocess.group_size) against DAG time: Snakemake checks a group job's
    # readiness in O(size^2), so large bundles cost DAG time
    sweep = {}
    for size in args.group_sizes:
        override = work / f"group_size_{size}.yaml"
        override.write_text(yaml.safe_dump({"preprocess": {"group_size": size}}))
        t, stats, _ = timed(count + ["-n", "--profile", "profiles/slurm", *target, *common, str(override)])
        sweep[size] = {"wall_s": round(t, 2), "cpu_s": round(CPU[tuple(count + ["-n", "--profile", "profiles/slurm",
                       *target, *common, str(override)])], 2), "cluster_jobs": stats.get("cluster_jobs")}  # fmt: skip
    results["group_size_sweep"] = sweep
    save(results)

    save(results)

    # 3. everything done: the up-to-date check (own, smaller folder)
    if args.complete_sessions:
        small = work / "complete"
        small.mkdir(exist_ok=True)
        (small / "base.yaml").write_text(yaml.safe_dump({"out_dir": str(small / "out")}))
        small_common = ["-s", str(snakefile), "--configfile", str(CI), str(small / "base.yaml")]
        small_fake = [py, str(ROOT / "tools/fake_run.py"), "--sessions", str(args.complete_sessions), "--"]
        t, _, _ = timed(small_fake + [*target, *small_common, "--cores", "1"])
        results["complete_sessions"] = args.complete_sessions
        results["fake_complete_s"] = round(t, 2)
        t, stats, stdout = best(count + ["-n", "--cores", "1", *target, *small_common], "complete_dry_run")
        assert "Nothing to be done" in stdout, stdout[-2000:]
        results["complete_dry_run_s"] = round(t, 2)
    results["host"]["loadavg_after"] = os.getloadavg()
    save(results)
    print(json.dumps(results, indent=2))
    if not (args.keep or args.workdir):
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
