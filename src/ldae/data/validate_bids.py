"""`ldae validate-bids`: the official BIDS validator (bids-validator-deno) on an input dataset, warnings only.

Runs when config data.bids.validate is true (source bids). Its errors and warnings are logged as warnings and
written to a JSON report; the exit status is 0 whatever it finds (a dataset with validator errors can still
hold usable T1w images; the session table decides). Without the validator installed, the report says so.
The dataset is only read.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

log = logging.getLogger("ldae.validate_bids")
EXECUTABLES = ("bids-validator-deno", "bids-validator")


def find_validator() -> str | None:
    """The validator on PATH, else next to this Python (a venv's bin/ not on PATH)."""
    for name in EXECUTABLES:
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if found:
            return found
    return None


def summarise(report: dict) -> dict:
    """{'errors': n, 'warnings': n, 'codes': {severity: {code: count}}, 'examples': [...]} of a JSON report."""
    issues = sorted(report.get("issues", {}).get("issues", []), key=lambda i: i.get("severity") != "error")
    codes: dict[str, Counter] = {"error": Counter(), "warning": Counter()}
    examples = []
    for issue in issues:
        severity = issue.get("severity", "warning")
        codes.setdefault(severity, Counter())[issue.get("code", "?")] += 1
        if len(examples) < 20:
            examples.append({k: issue.get(k) for k in ("severity", "code", "subCode", "location")})
    return {"errors": sum(codes["error"].values()), "warnings": sum(codes["warning"].values()),
            "codes": {k: dict(v) for k, v in codes.items()}, "examples": examples}  # fmt: skip


def validate(bids_dir: Path, timeout: int = 3600) -> dict:
    """Run the validator; a summary (never raises for what it finds)."""
    exe = find_validator()
    if exe is None:
        return {
            "validator": None,
            "note": f"none of {list(EXECUTABLES)} is installed (pip install bids-validator-deno)",
        }
    result = subprocess.run([exe, "--format", "json", str(bids_dir)], capture_output=True, text=True, timeout=timeout)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        return {"validator": exe, "exit_status": result.returncode, "note": "no JSON report",
                "stderr": result.stderr[-2000:]}  # fmt: skip
    return {"validator": exe, "exit_status": result.returncode, **summarise(report)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ldae validate-bids", description=__doc__.splitlines()[0])
    parser.add_argument("--bids-dir", type=Path, required=True, help="the input BIDS dataset (config data.bids_dir)")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.bids_dir.is_dir():
        parser.error(f"--bids-dir {args.bids_dir} is not a folder (config data.bids_dir)")
    summary = {"bids_dir": str(args.bids_dir), **validate(args.bids_dir)}
    if summary["validator"] is None:
        log.warning("BIDS validator not run: %s", summary["note"])
    elif "errors" not in summary:
        log.warning("BIDS validator gave no report (exit %s): %s", summary["exit_status"], summary.get("stderr", ""))
    else:
        log.warning("BIDS validator on %s: %d error(s) %s, %d warning(s) %s (not fatal; details in %s)",
                    args.bids_dir, summary["errors"], summary["codes"].get("error", {}), summary["warnings"],
                    summary["codes"].get("warning", {}), args.out)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0
