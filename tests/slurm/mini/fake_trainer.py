"""A stand-in for a long training run, for the SLURM time-limit / preemption tests (tests/test_slurm.py).

It follows the contract the real training rules follow (profiles/slurm/README.md, "Long training: time limits,
preemption, node failures"):
  * resumable state lives in --resume-dir (common.smk resume_dir(): outside the rule's outputs, keyed by the
    stage's config), written atomically every --save-every steps and when SLURM sends SIGTERM (time limit,
    preemption, requeue), then the process exits;
  * on start it resumes only if the saved manifest (config + the size/mtime of its inputs) matches this
    run's, otherwise it starts afresh;
  * the output is written last; it records where each attempt started, for the tests to check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path


def manifest(args) -> dict:
    inputs = {p: [os.stat(p).st_size, int(os.stat(p).st_mtime)] for p in args.inputs}
    return {"steps": args.steps, "inputs": inputs}


def save(state: dict, resume_dir: Path) -> None:
    tmp = resume_dir / "last.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, resume_dir / "last.json")  # atomic: a kill mid-write leaves the previous state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resume-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--step-seconds", type=float, default=1.0)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--inputs", nargs="*", default=[])
    args = parser.parse_args(argv)

    args.resume_dir.mkdir(parents=True, exist_ok=True)
    state_file = args.resume_dir / "last.json"
    state = {"step": 0, "attempts": [], "manifest": manifest(args)}
    if state_file.exists():
        saved = json.loads(state_file.read_text())
        if saved.get("manifest") == state["manifest"]:
            state = saved
        else:
            print("resume state is from other inputs/config: starting afresh", flush=True)
    state["attempts"].append(
        {
            "start_step": state["step"],
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT", "0"),
            "time": time.time(),
        }
    )
    save(state, args.resume_dir)
    print(f"attempt {len(state['attempts'])}: starting at step {state['step']}", flush=True)

    def on_sigterm(signum, frame):  # time limit / preemption: keep what we have, then stop
        save(state, args.resume_dir)
        print(f"SIGTERM at step {state['step']}: state saved", flush=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    while state["step"] < args.steps:
        time.sleep(args.step_seconds)
        state["step"] += 1
        if state["step"] % args.save_every == 0:
            save(state, args.resume_dir)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": state["step"], "attempts": state["attempts"]}, indent=1))
    shutil.rmtree(args.resume_dir)  # finished: nothing left to resume
    return 0


if __name__ == "__main__":
    sys.exit(main())
