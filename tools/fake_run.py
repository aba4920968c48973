"""Mark a whole workflow run as done without running it: every job's outputs are created (empty files,
directory() outputs as folders; the session and split tables as a fake cohort of N sessions, with an empty
file for each of its scans under <out_dir>/bids) and Snakemake
records its metadata (params, code, software env) exactly as after a real run.

It is `snakemake --touch` with Snakemake's touch executor taught to create what does not exist yet, so the
`sessions` checkpoint completes and the per-session part of the DAG expands. Used by the rerun tests
(tests/test_reruns.py: change one config section, dry-run, compare the job list) and the DAG-scale bench
(bench/dag_scale: an ADNI-sized session table).

    .venv/bin/python tools/fake_run.py --sessions 10340 -- --configfile tests/configs/ci.yaml \
        --config out_dir=/tmp/fake --cores 1

Everything after `--` goes to snakemake unchanged (run it from the repository root).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VISITS = [0, 6, 12, 24, 36, 48, 60, 72, 84, 96, 108, 120]
DIAGNOSES = ["CN", "MCI", "AD"]


def _unit(*parts) -> float:
    digest = hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF


def fake_cohort(n_sessions: int, per_subject: float = 4.4):
    """(sessions, splits) tables with the workflow's columns: ADNI-like, deterministic."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "src"))
    from ldae.data.tables import SESSION_COLUMNS, SPLIT_COLUMNS

    n_subjects = max(3, math.ceil(n_sessions / per_subject))
    rows = []
    for i in range(n_sessions):
        subject, visit = i % n_subjects, i // n_subjects
        sid = f"sub-ADNI{subject // 1000 + 2:03d}S{subject % 10000:04d}"
        months = VISITS[visit % len(VISITS)] + 120 * (visit // len(VISITS))
        diagnosis = DIAGNOSES[int(_unit(sid, "dx") * 3)]
        rows.append({
            "participant_id": sid, "session_id": f"ses-M{months:03d}", "months": months,
            "age": round(60 + 30 * _unit(sid, "age") + months / 12, 1), "sex": "F" if _unit(sid, "sex") < .5 else "M",
            "diagnosis": diagnosis, "t1w": f"{sid}/ses-M{months:03d}/anat/{sid}_ses-M{months:03d}_T1w.nii.gz",
        })  # fmt: skip
    sessions = pd.DataFrame(rows)[SESSION_COLUMNS]
    subjects = sessions.groupby("participant_id").agg(
        baseline_diagnosis=("diagnosis", "first"), n_sessions=("session_id", "size")
    )
    subjects = subjects.reset_index()
    draw = subjects["participant_id"].map(lambda s: _unit(s, "split"))
    subjects["split"] = ["test" if u < 0.1 else "val" if u < 0.11 else "train" for u in draw]
    probe = subjects["participant_id"].map(lambda s: _unit(s, "probe"))
    subjects["probe_split"] = [
        "none" if split != "train" else "probe_val" if u < 0.3 else "probe_train"
        for split, u in zip(subjects["split"], probe)
    ]
    return sessions, subjects[SPLIT_COLUMNS]


def patch_touch_executor(n_sessions: int) -> None:
    import snakemake.executors.touch as touch

    sessions, splits = fake_cohort(n_sessions)
    tables = {"sessions.tsv": sessions, "splits.tsv": splits}
    original = touch.Executor.run_job

    def run_job(self, job):
        for f in job.output:
            path = Path(str(f))
            if path.exists():
                continue
            if f.is_directory:
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.parent.name == "tables" and path.name in tables:
                tables[path.name].to_csv(path, sep="\t", index=False)
                if path.name == "sessions.tsv":  # the scans it lists, inside the BIDS folder (<out_dir>/bids)
                    for t1w in sessions["t1w"]:
                        scan = path.parent.parent / "bids" / t1w
                        scan.parent.mkdir(parents=True, exist_ok=True)
                        scan.touch()
            else:
                path.touch()
        for f in job.log:
            Path(str(f)).parent.mkdir(parents=True, exist_ok=True)
            Path(str(f)).touch()
        return original(self, job)

    touch.Executor.run_job = run_job
    touch.Executor.SLEEPING_TIME = 0  # jobs run one after another anyway: mtimes stay in DAG order


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, theirs = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30, help="rows of the fake session table")
    args = parser.parse_args(ours)
    patch_touch_executor(args.sessions)
    os.chdir(ROOT)
    from snakemake.cli import main as snakemake

    try:
        snakemake(["--touch", *theirs, "--quiet", "progress", "rules", "host", "reason"])
    except SystemExit as done:
        return int(done.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
