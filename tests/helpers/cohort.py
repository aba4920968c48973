"""A tiny cohort of preprocessed NIfTI files with its session, split and QC tables, at the CI config's image grid
(tests/configs/ci.yaml: 24 x 32 x 24 voxels of 6 mm), for tests that run the training verbs as the workflow does."""

from __future__ import annotations

from pathlib import Path

from helpers.config import ci_config


def make_cohort(root: Path, splits: dict[str, int], sessions_per_subject: int = 2, seed: int = 0) -> Path:
    """Subjects per split (e.g. {"train": 4, "val": 2, "test": 1}), ``sessions_per_subject`` sessions each, as
    preprocessed images at the CI grid (a blurred ellipsoid "brain" of varying size and texture). Writes
    ``sessions.tsv``, ``splits.tsv`` and ``derivatives/ldae-preproc/qc.tsv`` (all sessions pass) under ``root``."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    images = ci_config()["images"]
    shape, spacing = list(images["shape"]), float(images["spacing_mm"])
    deriv = root / "derivatives" / "ldae-preproc"
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    sessions, qc, split_rows = [], [], []
    s = 0
    for split, n_subjects in splits.items():
        for _ in range(n_subjects):
            pid = f"sub-ADNI{s:03d}"
            probe = "probe_train" if split == "train" and s % 2 == 0 else "probe_val" if split == "train" else "n/a"
            split_rows.append(
                {
                    "participant_id": pid,
                    "baseline_diagnosis": "CN" if s % 2 else "AD",
                    "n_sessions": sessions_per_subject,
                    "split": split,
                    "probe_split": probe,
                }
            )
            for v in range(sessions_per_subject):
                ses = f"ses-M{12 * v:03d}"
                radii = 0.55 + 0.2 * rng.random(3)
                inside = (((grid / radii[:, None, None, None]) ** 2).sum(0) < 1).astype(np.float32)
                volume = inside * (0.6 + 0.4 * rng.random(shape)).astype(np.float32)
                rel = f"{pid}/{ses}/anat/{pid}_{ses}_desc-preproc_T1w.nii.gz"
                (deriv / rel).parent.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(volume, np.diag([spacing] * 3 + [1.0])), deriv / rel)
                sessions.append(session_row(s, v, "CN" if s % 2 else "AD"))
                qc.append({"participant_id": pid, "session_id": ses, "status": "pass", "reason": "", "preproc": rel})
            s += 1
    pd.DataFrame(sessions).to_csv(root / "sessions.tsv", sep="\t", index=False)
    pd.DataFrame(split_rows).to_csv(root / "splits.tsv", sep="\t", index=False)
    pd.DataFrame(qc).to_csv(deriv / "qc.tsv", sep="\t", index=False, na_rep="n/a")
    return root


def session_row(subject: int, visit: int, diagnosis: str) -> dict:
    """The sessions.tsv row of visit ``visit`` (every 12 months) of subject ``subject`` (sub-ADNI<subject>)."""
    return {
        "participant_id": f"sub-ADNI{subject:03d}",
        "session_id": f"ses-M{12 * visit:03d}",
        "months": 12 * visit,
        "age": 70 + subject + visit,
        "sex": "F",
        "diagnosis": diagnosis,
        "t1w": "x",
    }


def cohort_args(root: Path, images: dict | None = None) -> list[str]:
    """The data arguments every image-reading training verb takes, for a :func:`make_cohort` folder (or one laid
    out like it); ``images``: the `images` section (default: the CI config's)."""
    import json

    return [
        "--qc",
        str(root / "derivatives/ldae-preproc/qc.tsv"),
        "--sessions",
        str(root / "sessions.tsv"),
        "--splits",
        str(root / "splits.tsv"),
        "--images",
        json.dumps(ci_config()["images"] if images is None else images),
    ]
