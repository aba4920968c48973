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

import os
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

    def relative(self, root: str | os.PathLike) -> PreprocPaths:
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


__all__ = [
    "PreprocPaths",
    "preproc_paths",
    "derivatives_root",
    "qc_table",
    "qc_montage",
    "description_file",
    "label",
]
