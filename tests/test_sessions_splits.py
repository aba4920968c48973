"""Session table (pybids over a clinica-shaped BIDS folder) and subject-level splits."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ldae.data import sessions as sessions_mod
from ldae.data import splits as splits_mod
from ldae.data.tables import TableError, read_splits, sessions_with_splits


def _write_nifti(path, shape=(8, 9, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), str(path))


def make_bids(root, subjects):
    """subjects: {sub: {"sex":..,"age_bl":..,"dx_sc":.., "visits": {ses: (age, dx, has_image)}}}"""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.7.0"}')
    rows = []
    for sub, info in subjects.items():
        rows.append(
            {"participant_id": sub, "sex": info["sex"], "age_bl": info["age_bl"], "diagnosis_sc": info["dx_sc"]}
        )
        visits = []
        for ses, (age, dx, has_image) in info["visits"].items():
            visits.append({"session_id": ses, "age": age, "diagnosis": dx})
            if has_image:
                _write_nifti(root / sub / ses / "anat" / f"{sub}_{ses}_T1w.nii.gz")
        (root / sub).mkdir(exist_ok=True)
        pd.DataFrame(visits).to_csv(root / sub / f"{sub}_sessions.tsv", sep="\t", index=False, na_rep="n/a")
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    return root


@pytest.fixture
def bids(tmp_path):
    return make_bids(
        tmp_path / "bids",
        {
            "sub-ADNI011S0001": {
                "sex": "F",
                "age_bl": "70.1",
                "dx_sc": "CN",
                "visits": {
                    "ses-M000": ("70.1", "CN", True),
                    "ses-M006": ("70.6", "CN", True),
                    "ses-M012": ("71.1", "CN", False),
                },
            },
            "sub-ADNI011S0002": {
                "sex": "M",
                "age_bl": "80.0",
                "dx_sc": "AD",
                "visits": {"ses-M000": ("80.0", "AD", True), "ses-M012": (None, None, True)},
            },
            "sub-ADNI011S0003": {
                "sex": "M",
                "age_bl": "65.0",
                "dx_sc": "MCI",
                "visits": {"ses-M000": ("65.0", "MCI", False)},
            },
        },
    )


def test_session_table_rows_and_exclusions(bids):
    table, excluded = sessions_mod.build_session_table(bids)
    assert list(zip(table.participant_id, table.session_id)) == [
        ("sub-ADNI011S0001", "ses-M000"),
        ("sub-ADNI011S0001", "ses-M006"),
        ("sub-ADNI011S0002", "ses-M000"),
    ]
    assert table.months.tolist() == [0, 6, 0]
    assert table.age.tolist() == pytest.approx([70.1, 70.6, 80.0])
    assert table.diagnosis.tolist() == ["CN", "CN", "AD"]
    assert table.t1w.iloc[1] == "sub-ADNI011S0001/ses-M006/anat/sub-ADNI011S0001_ses-M006_T1w.nii.gz"
    reasons = dict(zip(zip(excluded.participant_id, excluded.session_id), excluded.reason))
    assert "no diagnosis" in reasons[("sub-ADNI011S0002", "ses-M012")]
    assert "no T1w image" in reasons[("sub-ADNI011S0003", "n/a")]
    assert len(excluded) == 2  # the image-less visit M012 of subject 1 is not a session, not an exclusion


def test_nearest_diagnosis_and_age_from_baseline(bids):
    table, excluded = sessions_mod.build_session_table(bids, diagnosis_missing="nearest")
    row = table[(table.participant_id == "sub-ADNI011S0002") & (table.session_id == "ses-M012")].iloc[0]
    assert row.diagnosis == "AD"
    assert row.age == pytest.approx(81.0)  # age_bl + 12 months
    assert len(excluded) == 1


def test_diagnosis_filter_and_unreadable_and_4d(bids):
    (bids / "sub-ADNI011S0001/ses-M006/anat/sub-ADNI011S0001_ses-M006_T1w.nii.gz").write_bytes(b"not a nifti")
    _write_nifti(bids / "sub-ADNI011S0002/ses-M000/anat/sub-ADNI011S0002_ses-M000_T1w.nii.gz", (4, 4, 4, 3))
    table, excluded = sessions_mod.build_session_table(bids, diagnoses=("CN",))
    assert table.session_id.tolist() == ["ses-M000"]
    reasons = " | ".join(excluded.reason)
    assert "unreadable NIfTI" in reasons and "4-D" in reasons


def test_missing_participants_names_file(bids):
    (bids / "participants.tsv").unlink()
    with pytest.raises(TableError, match="participants.tsv"):
        sessions_mod.build_session_table(bids)


def test_missing_sessions_column_names_the_adni_table(bids):
    """clinica's sessions.tsv without diagnosis (ADNIMERGE without DX): the error names where it comes from."""
    path = bids / "sub-ADNI011S0001" / "sub-ADNI011S0001_sessions.tsv"
    pd.read_csv(path, sep="\t").drop(columns=["diagnosis"]).to_csv(path, sep="\t", index=False)
    with pytest.raises(
        TableError, match="'diagnosis' .clinica writes it from ADNIMERGE.csv DX, config data.clinical_dir"
    ):
        sessions_mod.build_session_table(bids)


def test_cli_writes_both_tables(bids, tmp_path):
    out, excl = tmp_path / "t" / "sessions.tsv", tmp_path / "t" / "excluded.tsv"
    assert sessions_mod.main(["--bids-dir", str(bids), "--out", str(out), "--excluded", str(excl)]) == 0
    assert len(pd.read_csv(out, sep="\t")) == 3 and len(pd.read_csv(excl, sep="\t")) == 2
    assert not list(out.parent.glob(".*tmp"))


# ---------------------------------------------------------------- splits
def cohort(n_subjects, seed=0, visits=(0, 6, 12)):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subjects):
        dx = ["CN", "MCI", "AD"][i % 3]
        for m in visits[: 1 + rng.integers(len(visits))]:
            rows.append(
                {
                    "participant_id": f"sub-ADNI{i:03d}S{i:04d}",
                    "session_id": f"ses-M{m:03d}",
                    "months": m,
                    "age": 70 + m / 12,
                    "sex": "F",
                    "diagnosis": dx,
                    "t1w": "x",
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_subjects", [6, 24, 300, 2906])
def test_splits_disjoint_proportions(n_subjects):
    sessions = cohort(n_subjects)
    table = splits_mod.make_splits(sessions, seed=42)
    assert table.participant_id.is_unique
    assert set(table.participant_id) == set(sessions.participant_id)
    counts = table.split.value_counts()
    assert counts["test"] == max(1, round(n_subjects * 0.1))
    assert counts["val"] >= 1
    assert abs(counts["val"] - 0.01 * (n_subjects - counts["test"])) <= 1
    train = table[table.split == "train"]
    assert set(train.probe_split) <= {"probe_train", "probe_val"}
    assert abs((train.probe_split == "probe_val").mean() - 0.3) < 0.5 / len(train) + 0.01
    assert (table[table.split != "train"].probe_split == "none").all()
    # stratified: each diagnosis appears in test roughly in proportion
    if n_subjects >= 300:
        share = table[table.split == "test"].baseline_diagnosis.value_counts(normalize=True)
        assert share.between(0.3, 0.37).all()


def test_splits_deterministic_and_seeded():
    sessions = cohort(200)
    a = splits_mod.make_splits(sessions, seed=1)
    b = splits_mod.make_splits(sessions.sample(frac=1, random_state=3), seed=1)
    c = splits_mod.make_splits(sessions, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a.split.equals(c.split)


def test_splits_stable_when_cohort_grows():
    small = splits_mod.make_splits(cohort(300), seed=5).set_index("participant_id")
    big = splits_mod.make_splits(cohort(330), seed=5).set_index("participant_id")
    same = (small.split == big.loc[small.index, "split"]).mean()
    assert same > 0.9


def test_splits_too_small_and_roundtrip(tmp_path):
    with pytest.raises(TableError, match="at least 3 subjects"):
        splits_mod.make_splits(cohort(2), seed=0)
    sessions_path, splits_path = tmp_path / "s.tsv", tmp_path / "sp.tsv"
    cohort(30).to_csv(sessions_path, sep="\t", index=False)
    assert splits_mod.main(["--sessions", str(sessions_path), "--out", str(splits_path)]) == 0
    joined = sessions_with_splits(sessions_path, splits_path)
    assert joined.split.notna().all()
    assert read_splits(splits_path).participant_id.is_unique


def test_split_bad_fraction_is_a_clear_error(tmp_path, capsys):
    cohort(10).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    with pytest.raises(SystemExit):
        splits_mod.main(
            ["--sessions", str(tmp_path / "s.tsv"), "--out", str(tmp_path / "o.tsv"), "--test-fraction", "1.5"]
        )
    assert "splits.test_fraction" in capsys.readouterr().err
