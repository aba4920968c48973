# Paths, the `ldae` command line, per-rule resources, the session table and the final targets.
# Computation code never builds output paths: ldae.preprocess.naming names the derivatives, ldae.outputs the model
# folders, embeddings and results (imported once, here; the rule files use the constants below).
import json
import os
import sys

import pandas as pd

SRC = os.path.join(workflow.basedir, "src")  # on sys.path since the Snakefile's first lines
OUT = config["out_dir"]

import ldae.outputs as outputs
import ldae.preprocess.naming as naming

# Every rule calls one verb of `python -m ldae.cli`. The package source is put on PYTHONPATH so it runs in
# any conda env or container without installing it; without conda/apptainer the interpreter running
# Snakemake (e.g. .venv/bin/python) comes first on PATH, so `python` there is the one with our packages.
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p))
if not workflow.deployment_settings.deployment_method:
    os.environ.update(PATH=os.pathsep.join((os.path.dirname(sys.executable), os.environ.get("PATH", ""))))


# The `ddim` section (x0 clamp, grid) as every rule that samples or inverts passes it through params (train_ldae,
# train_dae, embed, reconstruct, interpolate, manipulate, time_inference): a change reruns exactly those.
DDIM_JSON = json.dumps(config["ddim"], sort_keys=True)


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


# ---- inputs: a real LONI download, an existing BIDS dataset, or the synthetic download this workflow generates ----
SYNTHETIC = config["data"]["source"] == "synthetic"
BIDS_SOURCE = config["data"]["source"] == "bids"


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
    if BIDS_SOURCE:  # adni_to_bids never runs
        return {}
    given = {"dataset": adni_dir(), "clinical": clinical_dir()}
    for key, path in (("data.adni_dir", adni_dir()), ("data.clinical_dir", clinical_dir())):
        if not path:
            logger.warning(f"config {key} is empty: set it to your ADNI download before running adni_to_bids")
    return {name: path for name, path in given.items() if path}


BIDS_CONVERTED = out("bids")  # clinica's output (sources adni and synthetic)
# The BIDS dataset read from here on: clinica's output, or config data.bids_dir (source bids; only read).
BIDS = config["data"]["bids_dir"] if BIDS_SOURCE else BIDS_CONVERTED
SESSIONS = out("tables", "sessions.tsv")
EXCLUDED = out("tables", "excluded_sessions.tsv")
SPLITS = out("tables", "splits.tsv")
BIDS_VALIDATION = out("work", "bids_validation.json")
# the preprocessing derivatives and their cohort QC table: the one way every later rule finds images
PREPROC = out(naming.DERIVATIVES_SUBDIR)
QC_TABLE = naming.qc_table(PREPROC)
# the `images` section as every rule that loads scans passes it through params
IMAGES_JSON = json.dumps(config["images"], sort_keys=True)
# model folders: the LDAE chain and the baselines (ldae.models.io names the files inside)
MODEL = {name: outputs.model_dir(OUT, name) for name in (*outputs.LDAE_CHAIN, *outputs.BASELINES)}


def bids_inputs():
    """What the sessions checkpoint waits for: clinica's output, or the user's dataset (source bids)."""
    if BIDS_SOURCE and not BIDS:
        raise ValueError("config data.source is 'bids' but data.bids_dir is empty: set it to your BIDS dataset")
    if BIDS_SOURCE and not os.path.isdir(BIDS):
        logger.warning(
            f"config data.bids_dir {BIDS!r} is not a folder: set it to your BIDS dataset (data.source: bids)"
        )
    return {"bids": BIDS}


def sessions_flags():
    """Flags of the sessions verb: config `sessions`, and for source bids `--layout-json` with config data.bids
    (other sources read clinica's layout, so their params stay as they were). data.bids.validate is left out:
    it does not change the table."""
    flags = cli_flags(config["sessions"])
    if not BIDS_SOURCE:
        return flags
    import json
    import shlex

    layout = {key: value for key, value in config["data"]["bids"].items() if key != "validate"}
    return f"{flags} --layout-json {shlex.quote(json.dumps(layout, sort_keys=True))}"


# ---- the authors' weights instead of training (config `pretrained:`, workflow/rules/pretrained.smk) ----------
def pretrained_mode():
    """True when autoencoder, encoder and decoder are all given; some but not all is a config error."""
    keys = ("autoencoder", "encoder", "decoder")
    given = [key for key in keys if config["pretrained"][key]]
    if given and len(given) < len(keys):
        missing = ", ".join(f"pretrained.{key}" for key in keys if key not in given)
        raise ValueError(f"config pretrained: set {missing} too (the authors' three files go together), or none")
    if not config["pretrained"]["probe"] and (config["pretrained"]["probe_mean"] or config["pretrained"]["probe_std"]):
        raise ValueError("config pretrained.probe_mean/probe_std given without pretrained.probe")
    if config["pretrained"]["probe"] and not (config["pretrained"]["probe_mean"] and config["pretrained"]["probe_std"]):
        raise ValueError("config pretrained.probe needs pretrained.probe_mean and pretrained.probe_std")
    return bool(given)


PRETRAINED = pretrained_mode()
# the authors' AD-vs-CN probe, imported by rule import_official; rule manipulate then moves y_sem along it
OFFICIAL_PROBE = (
    outputs.model_dir(OUT, outputs.OFFICIAL_PROBE) if PRETRAINED and config["pretrained"]["probe"] else None
)


# ---- targets: each rules file adds the final outputs of its stage ----------------------------------
TARGETS = []


def final_targets():
    return TARGETS


# ---- cluster resources, GPU routing and resumable training (profiles/slurm, profiles/slurm/README.md) ----------
# Every number comes from config `resources:` (the rule's entry, else `default`); resources never trigger
# reruns. The slurm profile turns them into sbatch flags and picks the partition (profiles/slurm/
# partitions.yaml: GPU jobs -> GPU partition, the rest -> CPU partition). A rule declares
#     threads: rule_threads("train_ldm")
#     resources: **rule_resources("train_ldm")
RULE_ONLY_RESOURCES = ("slurm_partition", "slurm_account", "constraint", "qos", "slurm_extra", "gres")


def _res_entry(rule_name):
    return config["resources"].get(rule_name) or {}


def rule_gpus(rule_name):
    """GPUs of one job of the rule (config resources.<rule>.gpus; 0 = a CPU rule)."""
    return int(res(rule_name, "gpus", 0) or 0)


def rule_threads(rule_name, default=1):
    """`threads:` of a rule: resources.<rule>.threads; for a GPU rule without one, gpus x cpus_per_gpu."""
    entry, gpus = _res_entry(rule_name), rule_gpus(rule_name)
    if entry.get("threads") is None and gpus and res(rule_name, "cpus_per_gpu"):
        return gpus * int(res(rule_name, "cpus_per_gpu"))
    return int(res(rule_name, "threads", default))


def rule_resources(rule_name, **defaults):
    """Resources from config for the named rule - mem_mb and runtime (minutes) always; a GPU job (gpus > 0)
    adds gpu (count; sbatch --gpus), gpu_model (e.g. a100 -> --gpus=a100:N) and cpus_per_gpu. Keys set
    only on the rule's own entry pass through to the slurm plugin: slurm_partition (pins the partition),
    slurm_account, constraint (-C, e.g. an 80 GB A100 feature), qos, slurm_extra, gres (instead of gpu)."""
    entry = _res_entry(rule_name)
    found = {}
    for key in ("mem_mb", "runtime"):
        value = res(rule_name, key, defaults.get(key))
        if value is not None:
            found[key] = value
    gpus = rule_gpus(rule_name)
    found["gpu"] = 0 if entry.get("gres") else gpus
    if gpus and not entry.get("gres"):
        for key in ("gpu_model", "cpus_per_gpu"):
            value = res(rule_name, key, defaults.get(key))
            if value:
                found[key] = value
    for key in RULE_ONLY_RESOURCES:
        if entry.get(key):
            found[key] = entry[key]
    return found


def resume_dir(rule_name, section):
    """Where a long-running rule keeps its resumable state (e.g. Lightning `last.ckpt`).

    Outside the rule's outputs, because Snakemake deletes outputs before it (re)runs a job and after a
    failure; keyed by a hash of the stage's config section, so a job resubmitted after a time limit,
    preemption or node failure (profile `retries`, SLURM requeue, or simply running snakemake again)
    continues, while a changed section starts afresh. Pass it through `params:` (it changes exactly when
    the section does). The command must also check that its inputs are the ones the state was built
    from (see profiles/slurm/README.md) before resuming."""
    import hashlib
    import json

    digest = hashlib.sha1(json.dumps(section, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return out("resume", rule_name, digest)


def _warn_missing_images():
    """Apptainer requested but no image for an env: those rules run in the host environment."""
    methods = {str(m).lower() for m in (workflow.deployment_settings.deployment_method or ())}
    if any("apptainer" in m or "singularity" in m for m in methods):
        empty = sorted(name for name, image in config["containers"].items() if not image)
        if empty:
            logger.warning(
                f"software deployment 'apptainer' but config containers.{{{','.join(empty)}}} empty: "
                "rules of those envs run in the host environment (build images: tools/build_containers.sh)"
            )


_warn_missing_images()


# ---- per-session jobs in bundles: a few hundred cluster jobs instead of 10,340 -----------------------
# Snakemake submits a *connected* set of jobs of one group as one cluster job. Per-session jobs are not
# connected to each other, so each bundle gets a small gather job in the same group that takes the bundle's
# per-session outputs: bundle + its sessions = one sbatch job of config preprocess.group_size sessions
# (run side by side within the job's CPUs/memory, see profiles/slurm). Locally groups do not matter.
# (Not --group-components: with a checkpoint in the DAG, Snakemake 9.27 merges those bundles again on every
# DAG update, ending with one job holding every session and submitting jobs twice.)
# preprocess.smk: the per-session job and the bundle job both carry group "preprocess"; the bundle job's
# input is the per-session outputs of session_bundles()[wildcards.bundle], its output
# work/preprocess/bundle-{bundle}.txt, and the QC table waits for every bundle file.
_BUNDLE_CACHE = {}


def session_bundles(size=None):
    """{bundle id: rows of the session table} in table order, `size` (config preprocess.group_size)
    sessions per bundle; read once per version of the table (cheap to call from input functions)."""
    size = int(size or config["preprocess"].get("group_size", 50))
    path = checkpoints.sessions.get().output.sessions
    key = (path, os.path.getmtime(path), size)
    if key not in _BUNDLE_CACHE:
        table = pd.read_csv(path, sep="\t", dtype=str)
        _BUNDLE_CACHE.clear()
        _BUNDLE_CACHE[key] = {
            f"{start // size:04d}": table.iloc[start : start + size] for start in range(0, len(table), size)
        }
    return _BUNDLE_CACHE[key]
