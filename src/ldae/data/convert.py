"""`ldae adni-to-bids`: run the real `clinica convert adni-to-bids ... -m T1` with checked inputs and a kept log.

The conversion goes into a hidden folder beside --bids-dir that is renamed on success, so a failed or interrupted
run never leaves a partial BIDS dataset. On failure the exit status is non-zero and clinica's own last output
lines (its error) are printed.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ldae.data import adni_tables

log = logging.getLogger("ldae.convert")

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ConversionError(RuntimeError):
    pass


def check_inputs(dataset_dir: Path, clinical_dir: Path, subjects_list: Path | None = None) -> None:
    """Raise ConversionError naming the missing path and the config key to fix."""
    if not dataset_dir.is_dir():
        raise ConversionError(f"ADNI image download folder not found: {dataset_dir} (set data.adni_dir in config.yaml)")
    if not any(re.fullmatch(r"\d{3}_S_\d{4}", p.name) for p in dataset_dir.iterdir()):
        raise ConversionError(
            f"no subject folder (like 011_S_0002) in {dataset_dir}: data.adni_dir must be the folder that holds the "
            "<PTID> folders of the LONI download (usually .../ADNI)"
        )
    if not clinical_dir.is_dir():
        raise ConversionError(
            f"ADNI clinical CSV folder not found: {clinical_dir} (set data.clinical_dir in config.yaml)"
        )
    problems = adni_tables.table_problems(clinical_dir)
    if problems:
        raise ConversionError(
            f"the ADNI study tables in {clinical_dir} (config data.clinical_dir) lack what clinica "
            f"{adni_tables.CLINICA_VERSION} adni-to-bids or the session table reads:\n"
            + "\n".join(f"  - {problem}" for problem in problems)
            + "\nDownload the complete tables from LONI IDA (Study Files) into that folder; nothing was converted."
        )
    if subjects_list is not None and not subjects_list.is_file():
        raise ConversionError(f"subjects list not found: {subjects_list}")


def clinica_command(
    dataset_dir: Path, clinical_dir: Path, bids_dir: Path, subjects_list: Path | None, n_procs: int
) -> list[str]:
    exe = shutil.which("clinica")
    if exe is None:
        raise ConversionError("the `clinica` executable is not on PATH (activate the clinica environment, envs/)")
    if shutil.which("dcm2niix") is None:
        raise ConversionError("the `dcm2niix` executable is not on PATH (clinica needs it; pip install dcm2niix)")
    cmd = [exe, "convert", "adni-to-bids", str(dataset_dir), str(clinical_dir), str(bids_dir), "-m", "T1"]
    if subjects_list is not None:
        cmd += ["--subjects_list", str(subjects_list)]
    return cmd + ["--n_procs", str(n_procs)]


def run_clinica(cmd: list[str], log_file: Path | None, echo: bool) -> tuple[int, list[str]]:
    """Run clinica, stream its output (colour codes removed) into `log_file`; return (status, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=60)
    logdir = tempfile.mkdtemp(prefix="clinica-logs-")  # nipype's pypeline.log goes here, not into cwd
    env = {**os.environ, "CLINICA_LOGGING_DIR": logdir, "PYTHONUNBUFFERED": "1"}
    fh = open(log_file, "a", encoding="utf-8") if log_file else None
    try:
        if fh:
            fh.write("$ " + " ".join(cmd) + "\n")
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace"
        ) as proc:
            for raw in proc.stdout:
                line = ANSI.sub("", raw.rstrip("\n"))
                tail.append(line)
                if fh:
                    fh.write(line + "\n")
                    fh.flush()
                if echo or re.search(r"WARNING|ERROR|Traceback", line):
                    print(line, file=sys.stderr)
            status = proc.wait()
    finally:
        if fh:
            fh.close()
        shutil.rmtree(logdir, ignore_errors=True)
    return status, list(tail)


def _error_excerpt(lines: list[str], n: int = 15) -> str:
    """The last lines of clinica's output, starting at its traceback/error if one is in view."""
    start = max(0, len(lines) - n)
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback"):
            start = max(i, len(lines) - 40)
            break
    excerpt = [line for line in lines[start:] if line.strip()]
    return "\n".join("    " + line for line in excerpt)


def summarize(bids_dir: Path) -> tuple[int, int]:
    """Check the converted dataset; return (subjects, sessions with a T1w)."""
    if not (bids_dir / "participants.tsv").is_file():
        raise ConversionError(f"clinica finished but wrote no participants.tsv in {bids_dir}")
    t1 = sorted(bids_dir.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))
    if not t1:
        raise ConversionError("clinica finished but converted no T1w image (no sub-*/ses-*/anat/*_T1w.nii.gz)")
    return len({p.parts[-4] for p in t1}), len(t1)


def convert(
    dataset_dir: Path,
    clinical_dir: Path,
    bids_dir: Path,
    subjects_list: Path | None = None,
    n_procs: int = 1,
    log_file: Path | None = None,
    echo: bool = False,
) -> tuple[int, int]:
    """Convert; return (subjects, sessions). Raises ConversionError (message includes clinica's error)."""
    dataset_dir, clinical_dir, bids_dir = (Path(p).absolute() for p in (dataset_dir, clinical_dir, bids_dir))
    subjects_list = Path(subjects_list).absolute() if subjects_list else None
    check_inputs(dataset_dir, clinical_dir, subjects_list)
    n_cpu = os.cpu_count() or 1
    if not 1 <= n_procs <= n_cpu:
        log.warning("--n-procs %d clamped to [1, %d] (clinica refuses more than the CPU count)", n_procs, n_cpu)
        n_procs = min(max(n_procs, 1), n_cpu)
    if log_file:
        log_file = Path(log_file).absolute()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("")
    bids_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = bids_dir.parent / f".{bids_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = clinica_command(dataset_dir, clinical_dir, tmp, subjects_list, n_procs)
    log.info("running: %s", " ".join(cmd))
    try:
        status, tail = run_clinica(cmd, log_file, echo)
        if status != 0:
            raise ConversionError(
                f"clinica adni-to-bids failed (exit status {status}); its last output:\n{_error_excerpt(tail)}"
                + (f"\nfull log: {log_file}" if log_file else "")
            )
        try:
            counts = summarize(tmp)
        except ConversionError as exc:
            raise ConversionError(f"{exc}; clinica's last output:\n{_error_excerpt(tail)}") from None
        if bids_dir.exists():
            shutil.rmtree(bids_dir)
        tmp.rename(bids_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ldae adni-to-bids",
        description="Convert a raw ADNI download to BIDS (T1w only) with clinica's adni-to-bids converter.",
    )
    p.add_argument("--dataset-dir", required=True, type=Path, help="LONI download folder with <PTID>/ folders")
    p.add_argument("--clinical-dir", required=True, type=Path, help="folder with the ADNI study CSVs")
    p.add_argument("--bids-dir", required=True, type=Path, help="output BIDS folder (replaced on success)")
    p.add_argument("--subjects-list", type=Path, help="optional text file, one PTID per line")
    p.add_argument("--n-procs", type=int, default=1, help="clinica worker processes (default 1)")
    p.add_argument("--log", type=Path, help="file that receives clinica's full output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        n_sub, n_ses = convert(
            args.dataset_dir, args.clinical_dir, args.bids_dir, args.subjects_list, args.n_procs, args.log,
            echo=args.log is None,
        )  # fmt: skip
    except ConversionError as exc:
        print(f"ldae adni-to-bids: error: {exc}", file=sys.stderr)
        return 1
    print(f"adni-to-bids: {n_sub} subjects, {n_ses} sessions with a T1w -> {args.bids_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
