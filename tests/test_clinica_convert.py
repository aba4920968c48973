"""End to end: synthetic ADNI download -> the REAL `clinica convert adni-to-bids` (via `ldae adni-to-bids`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ldae.data import convert, synth, synth_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("clinica") is None, reason="clinica executable not on PATH"),
]
DX_SC = {"CN": "CN", "SMC": "CN", "EMCI": "MCI", "LMCI": "MCI", "MCI": "MCI", "AD": "AD"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("clinica")
    dl = synth.generate(root / "download", 5, min_visits=2, max_visits=3, voxel_mm=4.0, seed=11, repeat_prob=0.5)
    bids = root / "bids"
    rc = convert.main(["--dataset-dir", str(dl / "ADNI"), "--clinical-dir", str(dl / "clinical"),
                       "--bids-dir", str(bids), "--log", str(root / "clinica.log"), "--n-procs", "1"])  # fmt: skip
    assert rc == 0, (root / "clinica.log").read_text()[-3000:]
    return dl, bids


def test_every_expected_session_is_converted(converted, capsys):
    dl, bids = converted
    truth = pd.read_csv(dl / "truth" / "images.tsv", sep="\t")
    assert set(pd.read_csv(dl / "truth" / "subjects.tsv", sep="\t").cohort) >= {"ADNI1", "ADNI2", "ADNI3"}
    expected = truth[truth.expected_in_bids]
    assert expected.groupby(["participant_id", "session_id"]).size().eq(1).all()  # one scan chosen per visit
    want = {f"{r.participant_id}/{r.session_id}/anat/{r.participant_id}_{r.session_id}_T1w.nii.gz"
            for r in expected.itertuples()}  # fmt: skip
    got = {str(p.relative_to(bids)) for p in bids.glob("sub-*/ses-*/anat/*_T1w.nii.gz")}
    assert got == want
    # clinica picked the scan the generator marked as selected (QC tables, repeats, processed vs original)
    for r in expected.itertuples():
        scans = pd.read_csv(bids / r.participant_id / r.session_id / f"{r.participant_id}_{r.session_id}_scans.tsv",
                            sep="\t")  # fmt: skip
        assert scans.scan_id.tolist() == [r.image_uid]
        assert scans.mri_field.tolist() == [r.field_strength]


def test_participants_and_sessions_carry_the_planted_labels(converted):
    dl, bids = converted
    subjects = pd.read_csv(dl / "truth" / "subjects.tsv", sep="\t").set_index("participant_id")
    truth = pd.read_csv(dl / "truth" / "images.tsv", sep="\t")
    participants = pd.read_csv(bids / "participants.tsv", sep="\t").set_index("participant_id")
    assert set(participants.index) == set(subjects.index)
    for pid, p in participants.iterrows():
        assert DX_SC[p.diagnosis_sc] == subjects.loc[pid, "diagnosis"], pid
        assert p.sex == subjects.loc[pid, "sex"] and p.age_bl == pytest.approx(subjects.loc[pid, "age_bl"])
        assert p.original_study == subjects.loc[pid, "cohort"]
    for pid in subjects.index:
        sessions = pd.read_csv(bids / pid / f"{pid}_sessions.tsv", sep="\t").set_index("session_id")
        exp = truth[(truth.participant_id == pid) & truth.selected].set_index("session_id")
        assert set(exp.index) <= set(sessions.index)
        for sid, row in exp.iterrows():
            assert sessions.loc[sid, "diagnosis"] == row.diagnosis
            assert sessions.loc[sid, "age"] == pytest.approx(row.age, abs=0.051)


def test_bids_images_are_the_raw_scans_and_truth_masks_align(converted):
    dl, bids = converted
    truth = pd.read_csv(dl / "truth" / "images.tsv", sep="\t")
    for r in truth[truth.expected_in_bids].itertuples():
        out = nib.load(
            bids / r.participant_id / r.session_id / "anat" / f"{r.participant_id}_{r.session_id}_T1w.nii.gz"
        )
        raw = synth_images.clinica_space(nib.load(dl / r.raw_path))
        mask = synth_images.clinica_space(nib.load(dl / r.mask_path))
        assert out.shape == raw.shape == mask.shape
        assert np.allclose(out.affine, raw.affine) and np.allclose(mask.affine, out.affine)
        assert np.allclose(out.get_fdata(), np.asanyarray(raw.dataobj), atol=0.1)


def _copy_clinical(dl: Path, dest: Path, drop: str | None = None) -> Path:
    dest.mkdir()
    for f in (dl / "clinical").iterdir():
        if f.name != drop:
            shutil.copy(f, dest / f.name)
    return dest


def test_missing_csv_is_named_with_the_config_key(converted, tmp_path, capsys):
    dl, _ = converted
    clinical = _copy_clinical(dl, tmp_path / "clinical", drop="MAYOADIRL_MRI_IMAGEQC_05_07_15.csv")
    rc = convert.main(["--dataset-dir", str(dl / "ADNI"), "--clinical-dir", str(clinical),
                       "--bids-dir", str(tmp_path / "bids")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert "MAYOADIRL_MRI_IMAGEQC_05_07_15.csv missing" in err and "data.clinical_dir" in err
    rc = convert.main(["--dataset-dir", str(tmp_path / "nowhere"), "--clinical-dir", str(clinical),
                       "--bids-dir", str(tmp_path / "bids")])  # fmt: skip
    assert rc == 1 and "data.adni_dir" in capsys.readouterr().err
    assert not (tmp_path / "bids").exists()


def test_clinica_failure_shows_clinicas_own_error(converted, tmp_path, capsys):
    dl, _ = converted
    clinical = _copy_clinical(dl, tmp_path / "clinical")
    merge = pd.read_csv(clinical / "ADNIMERGE.csv")  # every column there (checked before), but a date clinica
    merge.assign(EXAMDATE_bl="31/12/2099").to_csv(clinical / "ADNIMERGE.csv", index=False)  # cannot parse
    rc = convert.main(["--dataset-dir", str(dl / "ADNI"), "--clinical-dir", str(clinical),
                       "--bids-dir", str(tmp_path / "bids"), "--log", str(tmp_path / "c.log")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert "clinica adni-to-bids failed" in err and "31/12/2099" in err  # clinica's traceback, not a generic message
    assert "31/12/2099" in (tmp_path / "c.log").read_text()
    assert sorted(os.listdir(tmp_path)) == ["c.log", "clinical"]  # no partial BIDS, no temp folder


def test_subjects_list_restricts_the_conversion(converted, tmp_path, capsys):
    dl, _ = converted
    truth = pd.read_csv(dl / "truth" / "subjects.tsv", sep="\t")
    keep = truth[truth.cohort == "ADNI3"].ptid.iloc[0] if (truth.cohort == "ADNI3").any() else truth.ptid.iloc[0]
    (tmp_path / "subjects.txt").write_text(keep + "\n")
    rc = convert.main(["--dataset-dir", str(dl / "ADNI"), "--clinical-dir", str(dl / "clinical"),
                       "--bids-dir", str(tmp_path / "bids"), "--subjects-list", str(tmp_path / "subjects.txt"),
                       "--log", str(tmp_path / "c.log")])  # fmt: skip
    assert rc == 0
    assert "adni-to-bids: 1 subjects" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "bids").glob("sub-*")] == ["sub-ADNI" + keep.replace("_", "")]
