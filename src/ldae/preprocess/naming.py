"""THE one place that decides every file name of the preprocessing derivatives (BIDS derivatives).

Layout under the derivatives root (``<out_dir>/derivatives/ldae-preproc``)::

    dataset_description.json                  DatasetType derivative, GeneratedBy (+ container), SourceDatasets
    .bidsignore                               QC figures, the QC table and transforms (not BIDS yet)
    qc.tsv                                    cohort QC table: one row per session (pass / excluded + reason)
    figures/qc_montage.png                    the passed sessions least similar to the template
    sub-<s>/ses-<t>/anat/
        sub-<s>_ses-<t>_space-<S>_desc-preproc_T1w.nii.gz     N4-corrected, registered, skull-stripped
        sub-<s>_ses-<t>_space-<S>_desc-preproc_T1w.json       sidecar: every parameter + tool versions
        sub-<s>_ses-<t>_space-<S>_desc-brain_mask.nii.gz      brain mask in the same space
        sub-<s>_ses-<t>_from-T1w_to-<S>_mode-image_xfm.mat    forward transform (ANTs; .h5 composite for SyN)
    sub-<s>/figures/
        sub-<s>_ses-<t>_desc-qc_T1w.json                      per-session QC record (always written)
        sub-<s>_ses-<t>_space-<S>_desc-qc_T1w.png             three orthogonal slices + template brain outline

The functions accept labels with or without their prefix (``sub-ADNI011S0002`` or ``ADNI011S0002``), so the
Snakemake rules call them with wildcard placeholders (``"{subject}"``) and get patterns with the same names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass

PIPELINE_NAME = "ldae-preproc"
BIDS_VERSION = "1.10.0"
DERIVATIVES_SUBDIR = os.path.join("derivatives", PIPELINE_NAME)
QC_TABLE = "qc.tsv"
DESCRIPTION = "dataset_description.json"
# Transform file extension per registration type: a single affine (.mat) or an ANTs composite (.h5).
TRANSFORM_EXT = {"affine": ".mat", "syn": ".h5"}


def label(value: str, prefix: str) -> str:
    """`sub-X` or `X` -> `X` (BIDS label without its entity prefix)."""
    value = str(value)
    return value[len(prefix) + 1 :] if value.startswith(f"{prefix}-") else value


def derivatives_root(out_dir: str | os.PathLike) -> str:
    """The derivatives dataset folder under a run's output folder."""
    return os.path.join(str(out_dir), DERIVATIVES_SUBDIR)


@dataclass(frozen=True)
class PreprocPaths:
    """Every file of one session, as paths under the derivatives root."""

    image: str
    sidecar: str
    mask: str
    transform: str
    qc_json: str
    qc_png: str

    def outputs_on_pass(self) -> dict[str, str]:
        """The files that exist only for a session that passed (never left behind for an excluded one)."""
        return {k: v for k, v in asdict(self).items() if k != "qc_json"}

    def relative(self, root: str | os.PathLike) -> "PreprocPaths":
        return PreprocPaths(**{k: os.path.relpath(v, str(root)) for k, v in asdict(self).items()})


def preproc_paths(root, participant_id: str, session_id: str, space: str, registration: str = "affine") -> PreprocPaths:
    """Derivative file names of one session in `space` (`registration` picks the transform's extension)."""
    sub, ses = label(participant_id, "sub"), label(session_id, "ses")
    if registration not in TRANSFORM_EXT:
        raise ValueError(f"unknown registration type {registration!r}; expected one of {sorted(TRANSFORM_EXT)}")
    stem = f"sub-{sub}_ses-{ses}"
    anat = os.path.join(str(root), f"sub-{sub}", f"ses-{ses}", "anat")
    figures = os.path.join(str(root), f"sub-{sub}", "figures")
    return PreprocPaths(
        image=os.path.join(anat, f"{stem}_space-{space}_desc-preproc_T1w.nii.gz"),
        sidecar=os.path.join(anat, f"{stem}_space-{space}_desc-preproc_T1w.json"),
        mask=os.path.join(anat, f"{stem}_space-{space}_desc-brain_mask.nii.gz"),
        transform=os.path.join(anat, f"{stem}_from-T1w_to-{space}_mode-image_xfm{TRANSFORM_EXT[registration]}"),
        qc_json=os.path.join(figures, f"{stem}_desc-qc_T1w.json"),
        qc_png=os.path.join(figures, f"{stem}_space-{space}_desc-qc_T1w.png"),
    )


def root_of_qc_json(path: str) -> str:
    """The derivatives root a session's QC record lies under (<root>/sub-*/figures/<record>)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(str(path))))


def qc_table(root) -> str:
    return os.path.join(str(root), QC_TABLE)


def qc_montage(root) -> str:
    """The cohort QC picture: the passed sessions least similar to the template (report item)."""
    return os.path.join(str(root), "figures", "qc_montage.png")


def description_file(root) -> str:
    return os.path.join(str(root), DESCRIPTION)


def temp_name(path: str) -> str:
    """Where a file is written before it is renamed into place (same folder, so the rename is atomic).

    The extension is kept (`x.nii.gz` -> `.x.tmp-<pid>.nii.gz`) because writers pick the format from it."""
    folder, name = os.path.split(path)
    for ext in (".nii.gz", ".nii", ".json", ".png", ".mat", ".h5", ".tsv"):
        if name.endswith(ext):
            return os.path.join(folder, f".{name[: -len(ext)]}.tmp-{os.getpid()}{ext}")
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}")


# ---- dataset_description.json ------------------------------------------------------------------------
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
    image this process runs in (APPTAINER_CONTAINER), else Type 'none' with the Python environment."""
    uri = given or os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER") or ""
    if uri:
        return {"Type": "docker" if uri.startswith("docker://") else "apptainer", "URI": uri}
    return {"Type": "none", "Environment": os.environ.get("CONDA_PREFIX") or sys.prefix}


def dataset_description(source: str, container: str = "", parameters: dict | None = None) -> dict:
    """The derivatives' dataset_description.json (BIDS 1.10): GeneratedBy with version and container."""
    from ldae import __version__

    versions = tool_versions()
    generated = {
        "Name": PIPELINE_NAME,
        "Version": __version__,
        "Description": "N4 bias field correction, registration to an MNI152 template and skull stripping "
        "(ldae.preprocess; antspyx " + versions["antspyx"] + ", deepbet " + versions["deepbet"] + ")",
    }
    generated["Container"] = runtime_container(container)
    description = {
        "Name": "LDAE preprocessed T1w (N4 -> MNI152 registration -> skull strip)",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [{"URL": source}],
        "HowToAcknowledge": "Cite Lozupone et al. 2025 (Latent Diffusion Autoencoders) and the ADNI data use terms.",
    }
    if parameters is not None:
        description["PreprocessingParameters"] = parameters
    description["ToolVersions"] = versions
    return description


def write_json_atomic(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = temp_name(path)
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")
    os.replace(tmp, path)


def write_description(root: str, source: str, container: str = "", parameters: dict | None = None) -> str:
    """Write dataset_description.json (and .bidsignore) of the derivatives under `root`."""
    os.makedirs(root, exist_ok=True)
    path = description_file(root)
    write_json_atomic(path, dataset_description(source, container, parameters))
    with open(os.path.join(root, ".bidsignore"), "w") as handle:
        # QC pictures and table are not BIDS files; spatial transforms (fMRIPrep's from-/to-/mode- xfm
        # convention, BEP014) are not in the BIDS specification yet
        handle.write("figures\n*/figures\nqc.tsv\n*_xfm.mat\n*_xfm.h5\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ldae preproc-description", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="path of dataset_description.json to write")
    parser.add_argument("--source", required=True, help="the source BIDS dataset (path or URL)")
    parser.add_argument("--container", default="", help="container image the derivatives were made with")
    parser.add_argument("--config-json", default="", help="the preprocess config section (JSON) to record")
    args = parser.parse_args(argv)
    root = os.path.dirname(os.path.abspath(args.out))
    if os.path.basename(args.out) != DESCRIPTION:
        parser.error(f"--out must be a file named {DESCRIPTION}")
    source = args.source
    if "://" not in source:  # a local folder: recorded relative to the derivatives root (portable)
        source = os.path.relpath(os.path.abspath(source), root)
    parameters = json.loads(args.config_json) if args.config_json else None
    write_description(root, source, args.container, parameters)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


__all__ = [
    "PreprocPaths",
    "preproc_paths",
    "derivatives_root",
    "qc_table",
    "qc_montage",
    "description_file",
    "dataset_description",
    "write_description",
    "temp_name",
    "label",
]
