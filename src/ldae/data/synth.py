"""`ldae synth-adni`: a synthetic ADNI raw download (LONI folder layout + the ADNI study CSVs clinica reads).

Layout written under OUT (atomically: built in a hidden sibling folder, renamed at the end):

    OUT/ADNI/<PTID>/<Sequence>/<YYYY-MM-DD_HH_MM_SS.0>/S<SeriesID>/ADNI_<PTID>_MR_<Sequence>_..._S<SeriesID>_I<ImageUID>.nii
                                                       (or one .dcm per slice with --dicom)
    OUT/clinical/ADNIMERGE.csv, MPRAGEMETA.csv, MRIQUALITY.csv, MAYOADIRL_MRI_IMAGEQC_05_07_15.csv, APOERES.csv,
                 DXSUM_PDXCONV_ADNIALL.csv, CDR.csv
    OUT/truth/subjects.tsv, images.tsv, generator.json, <PTID>/I<ImageUID>_brainmask.nii.gz, _pose.json

`truth/` is for tests and benchmarks only; the workflow never reads it. Planted signal, two atrophy patterns:
aging (age load, grows with age + a per-subject brain-age gap: ventricles enlarge, sulci widen, the brain shrinks)
and AD (disease load, by diagnosis and years since baseline: the medial temporal region shrinks as the CSF around
it widens, ventricles enlarge); diagnosis also sets cognition. See synth_clinical.AGE_LOAD_* / ATROPHY_* and
synth_images.AGE_MM / AD_MM. images.tsv records both loads and the planted volumes of every visit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import synth_clinical as sc
from . import synth_images as si

log = logging.getLogger("ldae.synth")

NOISE = {1.5: (0.03, 0.05), 3.0: (0.02, 0.035)}  # Rician sigma relative to WM
BIAS = {"processed": 0.03, "original": 0.18}  # std of the log-bias polynomial coefficients


def _validate(n_subjects, min_visits, max_visits, voxel_mm, cohorts, repeat_prob) -> tuple[str, ...]:
    if int(n_subjects) < 1:
        raise ValueError(f"--subjects must be >= 1 (got {n_subjects})")
    if not 1 <= min_visits <= max_visits <= sc.MAX_VISITS:
        raise ValueError(f"need 1 <= --min-visits <= --max-visits <= {sc.MAX_VISITS} (got {min_visits}, {max_visits})")
    if not 0.5 <= voxel_mm <= 8.0:
        raise ValueError(f"--voxel-mm must be within [0.5, 8] mm (got {voxel_mm})")
    if not 0.0 <= repeat_prob <= 1.0:
        raise ValueError(f"--repeat-prob must be within [0, 1] (got {repeat_prob})")
    cohorts = tuple(c.strip().upper() for c in cohorts if c.strip())
    bad = [c for c in cohorts if c not in sc.COHORTS]
    if bad or not cohorts:
        raise ValueError(f"--cohorts: unknown or empty {bad or cohorts}; choose from {','.join(sc.COHORTS)}")
    return tuple(dict.fromkeys(cohorts))


def _image_relpath(s: sc.Subject, v: sc.Visit, scan: sc.Scan, dicom: bool) -> tuple[Path, str]:
    """(folder relative to OUT, file name; for DICOM a format string with {slice})."""
    seq = sc.loni_name(scan.sequence)
    folder = Path("ADNI") / s.ptid / seq / f"{v.scandate:%Y-%m-%d}_{scan.acq_time}.0" / f"S{scan.series_id}"
    raw_stamp = f"{v.scandate:%Y%m%d}{scan.acq_time.replace('_', '')}{scan.series_id % 1000:03d}"
    ext = "dcm" if dicom else "nii"
    if scan.proc_uids:
        part = f"Br_{scan.proc_stamp}" + ("_{slice}" if dicom else "")
    else:
        part = f"_br_raw_{raw_stamp}_" + ("{slice}" if dicom else "1")
    return folder, f"ADNI_{s.ptid}_MR_{seq}_{part}_S{scan.series_id}_I{scan.image_uid}.{ext}"


def _subject_warps(s: sc.Subject, seed: int):
    """(visit, its composite warp) for every visit of `s`; fills visit.volumes (the planted volumes, ml)."""
    ident = si.random_identity(np.random.default_rng([seed, 3, s.index]), s.head_scale)
    icv_ml = si.template_brain_ml() * float(np.prod(s.head_scale))
    for v in s.visits:
        warp = si.composite_warp(ident, v.age_load, v.disease_load)
        v.volumes = {**si.visit_volumes(warp), "icv_ml": icv_ml}
        yield v, warp


def planted_truth(
    n_subjects: int,
    *,
    min_visits: int = 2,
    max_visits: int = 5,
    seed: int = 0,
    cohorts: tuple[str, ...] | list[str] = sc.COHORTS,
    repeat_prob: float = 0.15,
) -> pd.DataFrame:
    """One row per visit of the cohort `generate` would write with these arguments - diagnosis, age, the planted
    loads and volumes, as in truth/images.tsv - without rendering a single image (about a third of the time)."""
    cohorts = _validate(n_subjects, min_visits, max_visits, 1.0, cohorts, repeat_prob)
    rows = []
    for s in sc.plan_cohort(n_subjects, seed, min_visits, max_visits, cohorts, repeat_prob):
        for v, _ in _subject_warps(s, seed):
            rows.append({"ptid": s.ptid, "viscode": v.viscode, "months": v.months, "age_at_scan": round(v.age, 3),
                         "diagnosis": v.dx, "age_load": v.age_load, "disease_load": v.disease_load,
                         **{k: round(val, 3) for k, val in v.volumes.items()}})  # fmt: skip
    return pd.DataFrame(rows)


def _render_subject(out: Path, s: sc.Subject, seed: int, voxel_mm: float, dicom: bool) -> list[dict]:
    rows = []
    for vi, (v, warp) in enumerate(_subject_warps(s, seed)):
        for k, scan in enumerate(v.scans):
            row = _truth_row(s, v, scan, voxel_mm)
            if scan.written:
                rng = np.random.default_rng([seed, 4, s.index, vi, k])
                kind = "processed" if scan.proc_uids else "original"
                params = si.draw_scan_params(rng, BIAS[kind], NOISE[s.field_strength], sc.STORAGE_ORIENTATION[s.cohort])
                if scan.repeat or not scan.selected:  # the scan QC rejected: noisier
                    params.noise_sigma *= 1.6
                params.extra = {"ptid": s.ptid, "viscode": v.viscode, "image_uid": scan.image_uid}
                r = si.render_scan(warp, s.head_scale, params, voxel_mm, rng)
                folder, name = _image_relpath(s, v, scan, dicom)
                if dicom:
                    meta = {
                        "PatientID": s.ptid, "StudyDate": f"{v.scandate:%Y%m%d}",
                        "StudyTime": scan.acq_time.replace("_", ""), "SeriesDescription": scan.sequence,
                        "SeriesNumber": 2 + k, "Manufacturer": s.vendor, "MagneticFieldStrength": s.field_strength,
                        "uid_seed": f"{seed}-{scan.series_id}-{scan.image_uid}",
                    }  # fmt: skip
                    si.write_dicom_series(out / folder, r.data, r.affine, meta, name)
                    row["raw_path"] = str(folder)
                else:
                    si.write_nifti(out / folder / name, r.data, r.affine)
                    row["raw_path"] = str(folder / name)
                truth = Path("truth") / s.ptid
                si.write_nifti(out / truth / f"I{scan.image_uid}_brainmask.nii.gz", r.mask, r.affine)
                si.write_pose_json(out / truth / f"I{scan.image_uid}_pose.json", r, params, voxel_mm)
                row["mask_path"] = str(truth / f"I{scan.image_uid}_brainmask.nii.gz")
                row["pose_path"] = str(truth / f"I{scan.image_uid}_pose.json")
                row["pose_det"] = round(float(np.prod(params.scale)), 6)
            row.update({k2: round(val, 3) for k2, val in v.volumes.items()})
            rows.append(row)
    return rows


def _render_job(job: tuple) -> tuple[list[dict], list[dict]]:
    """One subject in a worker process: its truth rows and its visits' planted volumes (the parent's Subject
    objects do not see a worker's `visit.volumes`, and the clinical tables read them)."""
    out, s, seed, voxel_mm, dicom = job
    rows = _render_subject(out, s, seed, voxel_mm, dicom)
    return rows, [v.volumes for v in s.visits]


def _render_all(out: Path, subjects: list, seed: int, voxel_mm: float, dicom: bool, workers: int, t0: float):
    """Every subject's images (`workers` processes; each subject draws from its own seeded generators, so the
    download is the same for any number of workers); returns the truth rows in subject order."""
    jobs = [(out, s, seed, voxel_mm, dicom) for s in subjects]
    pool = None
    if workers > 1 and len(subjects) > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=min(workers, len(subjects)))
    try:
        results = pool.map(_render_job, jobs) if pool else map(_render_job, jobs)
        rows = []
        for s, (subject_rows, volumes) in zip(subjects, results):
            for v, vol in zip(s.visits, volumes):
                v.volumes = vol
            rows += subject_rows
            log.info("  %s %-6s %-3s %d visits (%.0f s)", s.ptid, s.cohort, s.dx, len(s.visits), time.time() - t0)
        return rows
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)


def _truth_row(s: sc.Subject, v: sc.Visit, scan: sc.Scan, voxel_mm: float) -> dict:
    bl = s.visits[0]
    return {
        "ptid": s.ptid, "participant_id": s.bids_id, "viscode": v.viscode, "session_id": v.session_id,
        "months": v.months, "examdate": f"{v.examdate:%Y-%m-%d}", "scandate": f"{v.scandate:%Y-%m-%d}",
        # `age` is what clinica writes in sessions.tsv (AGE + years between EXAMDATEs, 1 decimal)
        "age": round(s.age_bl + (v.examdate - bl.examdate).days / 365.25, 1) if v.months else s.age_bl,
        "age_at_scan": round(v.age, 3), "diagnosis": v.dx, "dx_label": sc.DX_LABEL[v.dx],
        "cohort": s.cohort, "colprot": v.colprot, "field_strength": s.field_strength,
        "sequence": scan.sequence, "series_id": scan.series_id, "image_uid": scan.image_uid,
        "repeat": scan.repeat, "selected": scan.selected, "written": scan.written,
        "expected_in_bids": scan.selected and scan.written, "age_load": v.age_load,
        "disease_load": v.disease_load, "voxel_mm": voxel_mm,
        "raw_path": "", "mask_path": "", "pose_path": "", "pose_det": np.nan,
    }  # fmt: skip


def _subjects_table(subjects: list[sc.Subject]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "ptid": s.ptid,
                "participant_id": s.bids_id,
                "rid": s.rid,
                "site": s.site,
                "cohort": s.cohort,
                "diagnosis": s.dx,
                "dx_bl": s.dx_bl,
                "converter_month": s.converter_month if s.converter_month else "",
                "sex": s.sex[0],
                "age_bl": s.age_bl,
                "education": s.education,
                "apoe4": s.apoe.count(4),
                "atrophy_offset": s.atrophy_offset,
                "atrophy_rate": s.atrophy_rate,
                "brain_age_gap": s.brain_age_gap,
                "head_scale_x": s.head_scale[0],
                "head_scale_y": s.head_scale[1],
                "head_scale_z": s.head_scale[2],
                "vendor": s.vendor,
                "n_visits": len(s.visits),
            }  # fmt: skip
            for s in subjects
        ]
    )


def generate(
    out_root: str | Path,
    n_subjects: int,
    *,
    min_visits: int = 2,
    max_visits: int = 5,
    voxel_mm: float = 1.0,
    seed: int = 0,
    dicom: bool = False,
    cohorts: tuple[str, ...] | list[str] = sc.COHORTS,
    repeat_prob: float = 0.15,
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Write a synthetic ADNI download to `out_root` (see the module docstring); returns `out_root`.

    Same arguments -> byte-identical CSVs/TSVs and identical image arrays. Nothing appears at `out_root` unless
    the whole download was written."""
    cohorts = _validate(n_subjects, min_visits, max_visits, voxel_mm, cohorts, repeat_prob)
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")
    out_root = Path(out_root).absolute()
    if out_root.exists() and any(out_root.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_root} exists and is not empty (pass --overwrite to replace it)")
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_root.parent / f".{out_root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        t0 = time.time()
        subjects = sc.plan_cohort(n_subjects, seed, min_visits, max_visits, cohorts, repeat_prob)
        counts = pd.Series([s.cohort for s in subjects]).value_counts().to_dict()
        log.info("synth-adni: %d subjects %s, voxel %.2g mm, seed %d -> %s", n_subjects, counts, voxel_mm, seed,
                 out_root)  # fmt: skip
        si.load_template()
        rows = _render_all(tmp, subjects, seed, voxel_mm, dicom, workers, t0)
        sc.write_clinical(subjects, tmp / "clinical", seed)
        truth = tmp / "truth"
        truth.mkdir(exist_ok=True)
        _subjects_table(subjects).to_csv(truth / "subjects.tsv", sep="\t", index=False, lineterminator="\n")
        pd.DataFrame(rows).to_csv(truth / "images.tsv", sep="\t", index=False, lineterminator="\n")
        params = {"n_subjects": n_subjects, "min_visits": min_visits, "max_visits": max_visits,
                  "voxel_mm": voxel_mm, "seed": seed, "dicom": dicom, "cohorts": list(cohorts),
                  "repeat_prob": repeat_prob, "template": si.HEAD_T1.name,
                  "atrophy_fields": list(si.FIELD_NAMES), "age_mm": si.AGE_MM.tolist(), "ad_mm": si.AD_MM.tolist(),
                  "flow_steps": si.FLOW_STEPS}  # fmt: skip
        (truth / "generator.json").write_text(json.dumps(params, indent=1) + "\n")
        if out_root.exists():
            shutil.rmtree(out_root)
        tmp.rename(out_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_img = sum(1 for r in rows if r["written"])
    log.info("synth-adni: wrote %d images of %d subjects in %.0f s", n_img, n_subjects, time.time() - t0)
    return out_root


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ldae synth-adni",
        description="Generate a synthetic ADNI raw download (LONI layout + study CSVs) that clinica converts.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (gets ADNI/, clinical/, truth/)")
    p.add_argument("--subjects", type=int, default=12, help="number of subjects (default 12)")
    p.add_argument("--min-visits", type=int, default=2, help="fewest MRI visits per subject (default 2)")
    p.add_argument("--max-visits", type=int, default=5, help=f"most MRI visits per subject (<= {sc.MAX_VISITS})")
    p.add_argument("--voxel-mm", type=float, default=1.0, help="isotropic voxel size of the scans (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--dicom", action="store_true", help="write DICOM series instead of NIfTI files")
    p.add_argument("--cohorts", default=",".join(sc.COHORTS), help="comma list of ADNI1,ADNIGO,ADNI2,ADNI3")
    p.add_argument("--repeat-prob", type=float, default=0.15, help="chance of a repeated T1 series in a visit")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--workers", type=int, default=1, help="subjects rendered in parallel processes (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        generate(
            args.out, args.subjects, min_visits=args.min_visits, max_visits=args.max_visits,
            voxel_mm=args.voxel_mm, seed=args.seed, dicom=args.dicom, cohorts=args.cohorts.split(","),
            repeat_prob=args.repeat_prob, overwrite=args.overwrite, workers=args.workers,
        )  # fmt: skip
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
