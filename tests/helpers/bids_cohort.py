"""A small BIDS cohort in a non-ADNI layout (OASIS-3 style) for the `data.source: bids` tests.

ses-01/ses-02 labels, the age at each session in sessions.tsv (`age_at_visit`), the diagnosis as free text
(`clinical_dx`: "Cognitively normal", "CDR 0.5", "Dementia"), sex in participants.tsv `gender`, acq_time per
session; one subject with two runs in a session, one session without a diagnosis. Images either tiny arrays
(session-table tests) or scans of the synthetic generator (end-to-end).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

DX_TEXT = {"CN": "Cognitively normal", "MCI": "CDR 0.5", "AD": "Dementia"}
# config data.bids for this layout
LAYOUT = {
    "sex": "gender",
    "diagnosis": {"column": "clinical_dx", "values": {"Cognitively normal": "CN", "CDR 0.5": "MCI", "Dementia": "AD"}},
    "age": {"column": "age_at_visit", "baseline_column": ""},
    "time": {"source": "age"},
}
# (subject, diagnosis, sex, [(session, age at visit, acq_time, diagnosis shown)], runs in ses-01)
SUBJECTS = [
    ("OAS30001", "CN", "F", [("01", 70.0, "2010-03-01T09:00:00"), ("02", 71.5, "2011-09-02T10:00:00")], 1),
    ("OAS30002", "AD", "M", [("01", 75.2, "2012-01-10T08:30:00"), ("02", 76.2, "2013-01-12T08:30:00")], 2),
    ("OAS30003", "MCI", "F", [("01", 68.0, "2014-05-05T11:00:00"), ("02", 70.0, "2016-05-06T11:00:00")], 1),
    ("OAS30004", "CN", "M", [("01", 72.4, "2015-06-01T12:00:00"), ("02", 73.4, "2016-06-03T12:00:00")], 1),
    ("OAS30005", "AD", "F", [("01", 80.1, "2011-02-02T09:15:00"), ("02", 81.0, "2011-12-30T09:15:00")], 1),
]
NO_DIAGNOSIS = ("sub-OAS30004", "ses-02")
TWO_RUNS = "sub-OAS30002"


def tiny_image(seed: int) -> nib.Nifti1Image:
    data = np.random.default_rng(seed).random((8, 9, 10)).astype(np.float32)
    return nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))


def write_cohort(root: Path, image_for=None) -> Path:
    """The cohort under `root`; `image_for(subject index, session index, run)` gives each image (default tiny)."""
    image_for = image_for or (lambda i, j, run: tiny_image(100 * i + 10 * j + run))
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "OASIS-style test cohort", "BIDSVersion": "1.10.0", "DatasetType": "raw"})
    )
    (root / "README").write_text("A small OASIS-3 style cohort made by the LDAE tests.\n")
    participants = []
    for i, (label, dx, sex, visits, runs) in enumerate(SUBJECTS):
        sub = f"sub-{label}"
        participants.append({"participant_id": sub, "gender": sex, "site": "test"})
        rows = []
        for j, (ses_label, age, acq_time) in enumerate(visits):
            ses = f"ses-{ses_label}"
            shown = "n/a" if (sub, ses) == NO_DIAGNOSIS else DX_TEXT[dx]
            rows.append({"session_id": ses, "age_at_visit": age, "clinical_dx": shown, "acq_time": acq_time})
            anat = root / sub / ses / "anat"
            anat.mkdir(parents=True)
            for run in range(1, (runs if j == 0 else 1) + 1):
                run_part = f"_run-{run}" if runs > 1 and j == 0 else ""
                nib.save(image_for(i, j, run), str(anat / f"{sub}_{ses}{run_part}_T1w.nii.gz"))
        pd.DataFrame(rows).to_csv(root / sub / f"{sub}_sessions.tsv", sep="\t", index=False)
    pd.DataFrame(participants).to_csv(root / "participants.tsv", sep="\t", index=False)
    (root / "participants.json").write_text(
        json.dumps({"gender": {"Description": "sex", "Levels": {"F": "female", "M": "male"}}})
    )
    return root


def synthetic_images(download: Path):
    """`image_for` from a synthetic download (ldae.data.synth): subject i's j-th selected scan; run 2 = its repeat
    or, without one, the same scan again."""
    truth = pd.read_csv(download / "truth" / "images.tsv", sep="\t")
    truth = truth[truth.written.astype(str) == "True"]
    subjects = list(dict.fromkeys(truth.participant_id))
    if len(subjects) < len(SUBJECTS):
        raise ValueError(f"{download} has {len(subjects)} subjects, the cohort needs {len(SUBJECTS)}")

    def image_for(i, j, run):
        scans = truth[truth.participant_id == subjects[i]]
        visit = scans[scans.session_id == sorted(scans.session_id.unique())[j]]
        chosen = visit[visit.selected.astype(str) == "True"]
        others = visit[visit.selected.astype(str) != "True"]
        path = chosen.raw_path.iloc[0] if run == 1 or others.empty else others.raw_path.iloc[0]
        return nib.load(str(download / path))

    return image_for


def tree_state(root: Path) -> dict[str, tuple]:
    """{relative path: (size, mtime_ns, sha1)} of every file and folder under root (to show nothing changed)."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.stat()
            digest = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else ""
            state[str(path.relative_to(root))] = (info.st_size if path.is_file() else 0, info.st_mtime_ns, digest)
    return state


def make_read_only(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            os.chmod(Path(folder) / name, 0o444)
        os.chmod(folder, 0o555)


def make_writable(root: Path) -> None:
    """So pytest can remove the temporary folder afterwards."""
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o644)


def copy(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest)
    return dest
