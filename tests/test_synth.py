"""Synthetic ADNI download generator (`ldae synth-adni`): layout, tables, planted signal, determinism, DICOM."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ldae.data import synth, synth_clinical, synth_images

ARGS = dict(min_visits=2, max_visits=3, voxel_mm=4.0, seed=7, repeat_prob=0.5)


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("synth") / "dl", 4, **ARGS)


@pytest.fixture(scope="module")
def images(download) -> pd.DataFrame:
    return pd.read_csv(download / "truth" / "images.tsv", sep="\t")


def _csv(download: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(download / "clinical" / name)


@pytest.mark.slow
def test_same_seed_same_bytes_and_arrays(download, tmp_path):
    """Same arguments -> the same download, also when 2 worker processes render the subjects (`download`: 1)."""
    again = synth.generate(tmp_path / "again", 4, **ARGS, workers=2)
    for rel in ["truth/subjects.tsv", "truth/images.tsv"] + [f"clinical/{n}" for n in synth_clinical.CLINICAL_TABLES]:
        assert (download / rel).read_bytes() == (again / rel).read_bytes(), rel
    files = sorted(p.relative_to(download) for p in (download / "ADNI").rglob("*.nii"))
    assert files == sorted(p.relative_to(again) for p in (again / "ADNI").rglob("*.nii"))
    for rel in files:
        a, b = nib.load(download / rel), nib.load(again / rel)
        assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)), rel
        assert np.allclose(a.affine, b.affine)


@pytest.mark.slow
def test_other_seed_differs(download, tmp_path):
    other = synth.generate(tmp_path / "other", 1, **{**ARGS, "seed": 8, "max_visits": 2})
    assert (other / "clinical/ADNIMERGE.csv").read_bytes() != (download / "clinical/ADNIMERGE.csv").read_bytes()


def test_layout_matches_clinica_path_finder(download, images):
    adni = download / "ADNI"
    assert all(re.fullmatch(r"\d{3}_S_\d{4}", p.name) for p in adni.iterdir())
    written = images[images.written]
    assert len(written) > 0
    for row in written.itertuples():
        # clinica: (ADNI/<PTID>).rglob("*_I<ImageUID>.*") must find exactly this one file
        hits = [f for f in (adni / row.ptid).rglob(f"*_I{row.image_uid}.*") if f.is_file()]
        assert [h.relative_to(download) for h in hits] == [Path(row.raw_path)]
        rel = Path(row.raw_path).relative_to(Path("ADNI") / row.ptid)
        seq_dir, visit_dir, series_dir, name = rel.parts
        assert seq_dir == synth_clinical.loni_name(row.sequence)
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{2}_\d{2}_\d{2}\.0", visit_dir) and visit_dir.startswith(row.scandate)
        assert series_dir == f"S{row.series_id}"
        assert re.fullmatch(rf"ADNI_{row.ptid}_MR_{seq_dir}_.*_S{row.series_id}_I{row.image_uid}\.nii", name)
    meta = _csv(download, "MPRAGEMETA.csv")
    assert set(written.image_uid) <= set(meta.ImageUID)
    assert meta.ImageUID.is_unique
    truth_files = list((download / "truth").rglob("*"))
    assert not any(re.search(r"_I\d+\.", f.name) for f in truth_files)  # truth never matches clinica's glob


def _clinica_spec_columns(spec: str, table: str) -> set[str]:
    import clinica.converters.adni_to_bids as a2b

    df = pd.read_csv(Path(a2b.__file__).parent / "specifications" / spec, sep="\t")
    loc = df["ADNI location"].fillna("").str.split("/").str[0]
    return set(df.loc[loc == table, "ADNI"].dropna())


def test_tables_have_the_columns_clinica_reads(download):
    needed = {
        "ADNIMERGE.csv": {"PTID", "RID", "SITE", "VISCODE", "EXAMDATE", "EXAMDATE_bl", "COLPROT", "ORIGPROT", "AGE",
                          "DX", "DX_bl", "PTGENDER", "MMSE"},
        "MPRAGEMETA.csv": {"SubjectID", "Visit", "Orig/Proc", "Sequence", "ScanDate", "StudyID", "SeriesID",
                           "ImageUID", "MagStrength"},
        "MRIQUALITY.csv": {"RID", "LONIUID", "PASS"},
        "MAYOADIRL_MRI_IMAGEQC_05_07_15.csv": {"RID", "loni_image", "series_type", "series_selected",
                                               "series_quality"},
        "APOERES.csv": {"RID", "APGEN1", "APGEN2"},
        "DXSUM_PDXCONV_ADNIALL.csv": {"PTID", "RID", "VISCODE2", "DIAGNOSIS"},
        "CDR.csv": {"RID", "VISCODE2", "CDGLOBAL"},
    }  # fmt: skip
    pytest.importorskip("clinica")
    needed["ADNIMERGE.csv"] |= _clinica_spec_columns("participant.tsv", "ADNIMERGE.csv")
    needed["ADNIMERGE.csv"] |= _clinica_spec_columns("sessions.tsv", "ADNIMERGE.csv")
    needed["APOERES.csv"] |= _clinica_spec_columns("participant.tsv", "APOERES.csv")
    needed["CDR.csv"] |= _clinica_spec_columns("sessions.tsv", "CDR.csv")
    for table, cols in needed.items():
        missing = cols - set(_csv(download, table).columns)
        assert not missing, f"{table} lacks {sorted(missing)}"
    merge = _csv(download, "ADNIMERGE.csv")
    assert (
        set(merge.ORIGPROT) <= {"ADNI1", "ADNIGO", "ADNI2", "ADNI3"}
        and merge.RID.groupby(merge.PTID).nunique().eq(1).all()
    )
    assert merge.drop_duplicates("PTID").RID.is_unique
    assert (merge.groupby("PTID").AGE.nunique() == 1).all()  # AGE is the baseline age on every row
    assert merge.DX.isin(["CN", "MCI", "Dementia"]).all()


def test_cohorts_are_mixed(download, tmp_path):
    subjects = pd.read_csv(download / "truth" / "subjects.tsv", sep="\t")
    assert subjects.cohort.nunique() >= 3 and subjects.diagnosis.nunique() == 3
    plan = synth_clinical.plan_cohort(12, seed=1, cohorts=("ADNI1", "ADNI2", "ADNI3"))
    assert {s.cohort for s in plan} == {"ADNI1", "ADNI2", "ADNI3"}
    assert {s.dx for s in plan} == {"CN", "MCI", "AD"}
    for s in plan:
        assert 55 <= s.age_bl <= 90 and 2 <= len(s.visits) <= 5
        assert [v.months for v in s.visits] == list(synth_clinical.VISIT_MONTHS[s.cohort][: len(s.visits)])
        assert all(a.examdate < b.examdate for a, b in zip(s.visits, s.visits[1:]))


def _slope(df: pd.DataFrame, col: str) -> pd.Series:
    def one(g):
        rel = g[col] / g[col].iloc[0]
        return np.polyfit(g.months / 12.0, rel, 1)[0]

    return df.groupby("ptid").apply(one, include_groups=False)


def test_planted_atrophy_and_age(download, images):
    visits = images[images.selected].sort_values(["ptid", "months"])
    subj = pd.read_csv(download / "truth" / "subjects.tsv", sep="\t").set_index("ptid")
    dx = subj.diagnosis
    brain, vent, hip = (_slope(visits, c) for c in ("brain_tissue_ml", "ventricle_ml", "hippocampus_ml"))
    ad, cn = dx.index[dx == "AD"], dx.index[dx == "CN"]
    assert len(ad) and len(cn)
    assert brain[ad].max() < brain[cn].min() <= 0.001  # AD loses brain faster than CN (relative, per year)
    assert vent[ad].min() > vent[cn].max() >= -0.001  # ventricles grow, faster in AD
    assert hip[ad].max() < hip[cn].min()
    assert (visits.groupby("ptid").ventricle_ml.apply(lambda v: v.is_monotonic_increasing)).all()
    # the aging load follows the age (up to the subject's brain-age gap); the disease load is AD's alone
    assert np.corrcoef(visits.age_at_scan, visits.age_load)[0, 1] > 0.9
    assert (visits.disease_load[visits.diagnosis == "CN"] == 0).all()
    assert (visits.disease_load[visits.ptid.isin(ad)] > 0.3).all()
    merge = _csv(download, "ADNIMERGE.csv")
    mmse_bl = merge[merge.VISCODE == "bl"].set_index("PTID").MMSE
    assert mmse_bl[ad].max() < mmse_bl[cn].min()
    # the truth masks agree with the tabulated brain volume (pose scaling removed)
    for row in visits[visits.written].itertuples():
        m = nib.load(download / row.mask_path)
        ml = np.asanyarray(m.dataobj).sum() * np.prod(m.header.get_zooms()) / 1000 / row.pose_det
        assert abs(ml / row.brain_mask_ml - 1) < 0.05, (row.ptid, ml, row.brain_mask_ml)


@pytest.mark.slow
def test_planted_truth_is_what_the_download_records(download, images):
    """planted_truth (no images) gives the visits, loads and volumes that generate writes to truth/images.tsv."""
    args = {k: v for k, v in ARGS.items() if k != "voxel_mm"}
    truth = synth.planted_truth(4, **args)
    written = images.drop_duplicates(["ptid", "viscode"])[truth.columns.tolist()].reset_index(drop=True)
    pd.testing.assert_frame_equal(truth, written, check_dtype=False)
    assert {"sulcal_csf_ml", "gm_ml", "age_load", "disease_load"} <= set(images.columns)


def _demo_section(*keys: str) -> dict:
    """A config section of the demo profile (profiles/demo/demo.yaml over config.yaml, key by key), as `make demo`
    runs it: `_demo_section("data", "synthetic")`."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((root / "config.yaml").read_text())
    demo = yaml.safe_load((root / "profiles/demo/demo.yaml").read_text())
    for key in keys:
        base, demo = base[key], demo.get(key, {})
    return {**base, **demo}


def _leave_subject_out_age_fit(table: pd.DataFrame, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Linear least squares of age on `features`, each subject predicted by a fit on the others; also the
    baseline that predicts the other subjects' mean age."""
    fit, mean = np.zeros(len(table)), np.zeros(len(table))
    for ptid in table.ptid.unique():
        test = (table.ptid == ptid).to_numpy()
        design = np.c_[np.ones(len(table)), table[features].to_numpy()]
        coef = np.linalg.lstsq(design[~test], table.age_at_scan[~test], rcond=None)[0]
        fit[test] = design[test] @ coef
        mean[test] = table.age_at_scan[~test].mean()
    return fit, mean


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (ROC AUC)."""
    diff = np.asarray(positive)[:, None] - np.asarray(negative)[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


@pytest.mark.slow
def test_demo_cohort_age_and_ad_are_measurable():
    """On the demo profile's cohort (every visit), the planted volumes carry the age: a leave-one-subject-out linear
    fit of age on them reaches r >= 0.8 and beats the mean-age baseline by far; AD vs CN stays separable; and
    the aging effects are many voxels at the demo's working resolution (images.spacing_mm)."""
    cfg = _demo_section("data", "synthetic")
    truth = synth.planted_truth(int(cfg["subjects"]), min_visits=int(cfg["min_visits"]),
                                max_visits=int(cfg["max_visits"]), seed=int(cfg["seed"]),
                                cohorts=list(cfg["cohorts"]))  # fmt: skip
    volumes = [c for c in truth.columns if c.endswith("_ml") and c != "icv_ml"]
    per_icv = truth[volumes].div(truth.icv_ml, axis=0).add_suffix("_per_icv")
    table = pd.concat([truth, per_icv], axis=1)
    fit, mean = _leave_subject_out_age_fit(table, list(per_icv.columns))
    r = np.corrcoef(fit, table.age_at_scan)[0, 1]
    mae, mae_mean = np.abs(fit - table.age_at_scan).mean(), np.abs(mean - table.age_at_scan).mean()
    print(f"demo cohort ({len(table)} visits): leave-subject-out r = {r:.3f}, MAE {mae:.2f} y vs {mae_mean:.2f} y")
    assert r >= 0.8 and mae < 0.6 * mae_mean
    ad, cn = table[table.diagnosis == "AD"], table[table.diagnosis == "CN"]
    assert len(ad) >= 5 and len(cn) >= 5
    assert _auc(-ad.hippocampus_ml_per_icv, -cn.hippocampus_ml_per_icv) >= 0.95  # AD: smaller hippocampal region
    assert _auc(ad.ventricle_ml_per_icv, cn.ventricle_ml_per_icv) >= 0.7  # AD: larger ventricles (age, too)
    # aging alone (CN): ventricles and sulcal CSF grow, grey matter thins; slopes per year of age in voxels of the
    # demo's image spacing, for a head of the cohort's mean size (the affine registration to MNI removes head size)
    voxel_ul = float(_demo_section("images")["spacing_mm"]) ** 3
    voxels = {
        c: cn[f"{c}_per_icv"] * truth.icv_ml.mean() * 1000 / voxel_ul
        for c in ("ventricle_ml", "sulcal_csf_ml", "gm_ml")
    }
    slope = {c: np.polyfit(cn.age_at_scan, v, 1)[0] for c, v in voxels.items()}
    print(f"per-year change in {voxel_ul:.0f} ul voxels (CN):", {c: round(v, 1) for c, v in slope.items()})
    assert slope["ventricle_ml"] > 10 and slope["sulcal_csf_ml"] > 50 and slope["gm_ml"] < -50, slope


def test_pose_differs_and_truth_pose_maps_to_template(download, images):
    t = synth_images.load_template()
    written = images[images.written]
    rots = []
    for row in written.itertuples():
        pose = json.loads((download / row.pose_path).read_text())
        rots.append(np.abs(pose["rotation_deg"]).max())
        img = nib.load(download / row.raw_path)
        assert not np.allclose(img.affine, t.affine)
        # vox2template sends the truth mask onto the template brain (up to the smooth identity warp)
        mask = np.asanyarray(nib.load(download / row.mask_path).dataobj) > 0
        vox = np.argwhere(mask).T
        v2t = np.array(pose["vox2template_mm"])
        mm = v2t[:3, :3] @ vox + v2t[:3, 3:4]
        tv = np.linalg.inv(t.affine)
        ijk = np.round(tv[:3, :3] @ mm + tv[:3, 3:4]).astype(int)
        inside = np.all((ijk >= 0) & (ijk < np.array(t.mask.shape)[:, None]), axis=0)
        hit = t.mask[tuple(ijk[:, inside])].mean() * inside.mean()
        assert hit > 0.85, (row.image_uid, hit)
    assert max(rots) > 2.0  # scans are posed, not template-aligned
    assert len({round(r, 3) for r in rots}) == len(rots)  # every scan has its own pose


def test_dicom_series_converts_with_dcm2niix(tmp_path):
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix not on PATH")
    kw = dict(min_visits=1, max_visits=1, voxel_mm=4.0, seed=3, cohorts=["ADNI3"], repeat_prob=0.0)
    d = synth.generate(tmp_path / "dcm", 1, dicom=True, **kw)
    n = synth.generate(tmp_path / "nii", 1, **kw)
    row = pd.read_csv(d / "truth" / "images.tsv", sep="\t").iloc[0]
    series = d / row.raw_path
    slices = sorted(series.glob(f"*_I{row.image_uid}.dcm"))
    assert len(slices) == len(list(series.iterdir())) > 10
    out = tmp_path / "conv"
    out.mkdir()
    subprocess.run(["dcm2niix", "-z", "y", "-b", "n", "-o", str(out), "-f", "x", str(series)], check=True,
                   capture_output=True)  # fmt: skip
    conv = nib.as_closest_canonical(nib.load(out / "x.nii.gz"))
    ref = nib.as_closest_canonical(nib.load(n / pd.read_csv(n / "truth/images.tsv", sep="\t").raw_path[0]))
    assert conv.shape == ref.shape
    assert np.allclose(conv.affine, ref.affine, atol=1e-3)
    assert np.array_equal(conv.get_fdata(), ref.get_fdata())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--subjects", "0"], "--subjects"),
        (["--min-visits", "3", "--max-visits", "2"], "--min-visits"),
        (["--max-visits", "9"], "--max-visits"),
        (["--voxel-mm", "0.1"], "--voxel-mm"),
        (["--cohorts", "ADNI1,ADNI4"], "ADNI4"),
        (["--subjects", "two"], "invalid int"),
    ],
)
def test_bad_arguments_are_explained(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        synth.main(["--out", str(tmp_path / "x"), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite_and_is_atomic(tmp_path, capsys, monkeypatch):
    out = tmp_path / "dl"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SystemExit):
        synth.main(["--out", str(out), "--subjects", "1", "--voxel-mm", "4"])
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()

    calls = []

    def crash(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*a, **k)

    real = synth_images.render_scan
    monkeypatch.setattr(synth_images, "render_scan", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        synth.generate(tmp_path / "new", 2, min_visits=2, max_visits=2, voxel_mm=4.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl"]  # no partial download, no temp folder left


def test_cli_dispatches_the_verb(capsys):
    from ldae import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["synth-adni", "--help"])
    assert exc.value.code == 0 and "--voxel-mm" in capsys.readouterr().out
