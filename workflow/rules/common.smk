# Paths, the `ldae` command line, per-rule resources, the session table and the final targets.
# Computation code never builds derivative paths: ldae.preprocess.naming decides those names.
import os
import sys

import pandas as pd

SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC)  # the naming module and friends, without installing the package
OUT = config["out_dir"]


# Every rule calls one verb of `python -m ldae.cli`. The package source is put on PYTHONPATH so it runs in
# any conda env or container without installing it; without conda/apptainer the interpreter running
# Snakemake (e.g. .venv/bin/python) comes first on PATH, so `python` there is the one with our packages.
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p))
if not workflow.deployment_settings.deployment_method:
    os.environ.update(PATH=os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", ""))))


def out(*parts):
    """A path under the run's output folder (config `out_dir`)."""
    return os.path.join(OUT, *parts)


def log_file(rule_name, *keys):
    return f"{out('logs', rule_name, *keys)}.log"


def bench_file(rule_name, *keys):
    return f"{out('benchmarks', rule_name, *keys)}.tsv"


def res(rule_name, key, default=None):
    """Resources from config `resources`: the entry named after the rule, else the `default` entry."""
    table = config["resources"]
    value = table.get(rule_name, {}).get(key, table["default"].get(key, default))
    return default if value is None else value


def cli_flags(section, skip=()):
    """A config section as `ldae` flags: key `min_visits: 2` -> `--min-visits 2`; lists comma-joined;
    booleans as bare flags (`--dicom`) when true. Verbs name their options after the config keys."""
    flags = []
    for key, value in section.items():
        if key in skip or isinstance(value, dict) or value is None or value is False or value == "":
            continue
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif isinstance(value, (list, tuple)):
            flags.append(f"{flag} {','.join(str(v) for v in value)}")
        else:
            flags.append(f"{flag} {value}")
    return " ".join(flags)


def env_file(name):
    return f"../../envs/{name}.yaml"


def container_for(name):
    """Image per env group from config `containers:` (a local .sif or a registry URI); None -> none."""
    return config["containers"].get(name) or None


# ---- raw inputs: a real LONI download or the synthetic one this workflow generates -------------------
SYNTHETIC = config["data"]["source"] == "synthetic"


def raw_root():
    return out("raw")


def adni_dir():
    return os.path.join(raw_root(), "ADNI") if SYNTHETIC else config["data"]["adni_dir"]


def clinical_dir():
    return os.path.join(raw_root(), "clinical") if SYNTHETIC else config["data"]["clinical_dir"]


def raw_inputs():
    """What adni_to_bids waits for: the synthetic download rule's output, or the user's folders.

    Blank ADNI paths are allowed at parse time (dry runs and --lint of the shipped config.yaml); the
    converter then stops with an error naming the config key to fill in."""
    if SYNTHETIC:
        return {"raw": raw_root()}
    given = {"dataset": adni_dir(), "clinical": clinical_dir()}
    for key, path in (("data.adni_dir", adni_dir()), ("data.clinical_dir", clinical_dir())):
        if not path:
            logger.warning(f"config {key} is empty: set it to your ADNI download before running adni_to_bids")
    return {name: path for name, path in given.items() if path}


BIDS = out("bids")
SESSIONS = out("tables", "sessions.tsv")
EXCLUDED = out("tables", "excluded_sessions.tsv")
SPLITS = out("tables", "splits.tsv")


def session_table():
    """The session table (after the `sessions` checkpoint has run): one row per usable session."""
    path = checkpoints.sessions.get().output.sessions
    return pd.read_csv(path, sep="\t", dtype=str)


# ---- targets: each rules file adds the final outputs of its stage ----------------------------------
TARGETS = []


def final_targets():
    return TARGETS
