"""`ldae preproc-description`: the derivatives' dataset_description.json (BIDS 1.10) and .bidsignore.

GeneratedBy names the pipeline, its version and the container (never a path of the machine that ran it); Name and
Description state the steps in the configured order (``preprocess.steps``); the source dataset is recorded
relative to the derivatives root.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ldae import files, verbs
from ldae.preprocess import naming

# what each preprocessing step does, long (Description) and short (Name)
STEP_TEXT = {
    "n4": ("N4 bias field correction", "N4"),
    "skullstrip": ("skull stripping", "skull strip"),
    "register": ("registration to the {space} template", "{space} registration"),
}


def tool_versions() -> dict[str, str]:
    """Versions of the tools the preprocessing uses (installed distributions; 'absent' if not installed)."""
    from importlib import metadata

    from ldae import __version__

    versions = {"ldae": __version__}  # the package runs from source (PYTHONPATH) inside envs/containers
    for name in ("antspyx", "deepbet", "torch", "nibabel", "nilearn", "numpy", "scipy", "antspynet"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def runtime_container(given: str = "") -> dict:
    """The software container these files are made in: `given` (config containers.ants), else the Apptainer
    image this process runs in (APPTAINER_CONTAINER), else Type 'none' with the Python environment. A local image
    or environment is named by its file or folder name only (no path of this machine)."""
    uri = given or os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER") or ""
    if uri:
        uri = uri if "://" in uri else os.path.basename(os.path.normpath(uri))
        return {"Type": "docker" if uri.startswith("docker://") else "apptainer", "URI": uri}
    return {
        "Type": "none",
        "Environment": os.path.basename(os.path.normpath(os.environ.get("CONDA_PREFIX") or sys.prefix)),
    }


def steps_text(parameters: dict | None) -> tuple[str, str]:
    """(long, short) wording of the configured steps in their order (``preprocess.steps``, else the defaults)."""
    from ldae.preprocess.templates import space_label

    section = verbs.section("preprocess", parameters or {})
    space = space_label(section["registration"])
    long = [STEP_TEXT[step][0].format(space=space) for step in section["steps"]]
    short = [STEP_TEXT[step][1].format(space=space) for step in section["steps"]]
    return ", then ".join(long), " -> ".join(short)


def dataset_description(source: str, container: str = "", parameters: dict | None = None) -> dict:
    """The derivatives' dataset_description.json (BIDS 1.10): GeneratedBy with version and container."""
    from ldae import __version__

    versions = tool_versions()
    long, short = steps_text(parameters)
    generated = {
        "Name": naming.PIPELINE_NAME,
        "Version": __version__,
        "Description": f"{long[0].upper()}{long[1:]} (ldae.preprocess; antspyx {versions['antspyx']}, deepbet "
        f"{versions['deepbet']})",
    }
    generated["Container"] = runtime_container(container)
    description = {
        "Name": f"LDAE preprocessed T1w ({short})",
        "BIDSVersion": naming.BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [{"URL": source}],
        "HowToAcknowledge": "Cite Lozupone et al. 2025 (Latent Diffusion Autoencoders) and the ADNI data use terms.",
    }
    if parameters is not None:
        description["PreprocessingParameters"] = parameters
    description["ToolVersions"] = versions
    return description


def write_description(root: str, source: str, container: str = "", parameters: dict | None = None) -> str:
    """Write dataset_description.json (and .bidsignore) of the derivatives under `root`."""
    os.makedirs(root, exist_ok=True)
    path = naming.description_file(root)
    files.write_json(path, dataset_description(source, container, parameters), trailing_newline=True)
    # QC pictures and table are not BIDS files; spatial transforms (fMRIPrep's from-/to-/mode- xfm convention,
    # BEP014) are not in the BIDS specification yet
    files.write_text(os.path.join(root, ".bidsignore"), "figures\n*/figures\nqc.tsv\n*_xfm.mat\n*_xfm.h5\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ldae preproc-description", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="path of dataset_description.json to write")
    parser.add_argument("--source", required=True, help="the source BIDS dataset (path or URL)")
    parser.add_argument("--container", default="", help="container image the derivatives were made with")
    parser.add_argument("--config-json", default="", help="the preprocess config section (JSON) to record")
    args = parser.parse_args(argv)
    root = os.path.dirname(os.path.abspath(args.out))
    if os.path.basename(args.out) != naming.DESCRIPTION:
        parser.error(f"--out must be a file named {naming.DESCRIPTION}")
    source = args.source
    if "://" not in source:  # a local folder: recorded relative to the derivatives root (portable)
        source = os.path.relpath(os.path.abspath(source), root)
    parameters = json.loads(args.config_json) if args.config_json else None
    write_description(root, source, args.container, parameters)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
