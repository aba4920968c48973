"""Clinical side of the synthetic ADNI generator: who is scanned when, under which protocol, and the LONI/ADNI
study tables (CSV) that clinica's `adni-to-bids` reads.

Everything here is pure bookkeeping (no images). Column names follow the real ADNI tables; values are planted
(diagnosis -> cognition, age, atrophy) and seeded. The tables clinica 0.12 needs for a T1-only conversion:

- ADNIMERGE (subjects, visits, PTID/RID/SITE, ORIGPROT/COLPROT, VISCODE, EXAMDATE, DX/DX_bl, AGE, scores)
- MPRAGEMETA (one row per T1 image: Orig/Proc, Visit, Sequence, ScanDate, StudyID, SeriesID, ImageUID, MagStrength)
- MRIQUALITY (ADNI1/GO/2 series QC: LONIUID "S<series>", PASS)
- MAYOADIRL_MRI_IMAGEQC_05_07_15 (3 T image QC: loni_image "I<uid>", series_type, series_selected, series_quality)
- APOERES (participants.tsv: APGEN1/APGEN2) and DXSUM_PDXCONV_ADNIALL (ADNI3 screening diagnosis)
CDR.csv is optional for clinica (sessions.tsv cdr_global); we write it too. All other session tables are skipped
by clinica when absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

COHORTS = ("ADNI1", "ADNIGO", "ADNI2", "ADNI3")
VISIT_MONTHS = {
    "ADNI1": (0, 6, 12, 24, 36),
    "ADNIGO": (0, 6, 12, 24, 36),
    "ADNI2": (0, 6, 12, 24, 36),
    "ADNI3": (0, 12, 24, 36, 48),
}
MAX_VISITS = 5
ERA = {
    "ADNI1": (date(2005, 9, 1), date(2007, 8, 31)),
    "ADNIGO": (date(2009, 10, 1), date(2011, 1, 31)),
    "ADNI2": (date(2011, 6, 1), date(2013, 6, 30)),
    "ADNI3": (date(2016, 9, 1), date(2019, 6, 30)),
}
RID_RANGE = {"ADNI1": (2, 1436), "ADNIGO": (2002, 2400), "ADNI2": (4001, 5300), "ADNI3": (6001, 7300)}
SITES = (2, 3, 5, 6, 7, 9, 11, 12, 13, 14, 16, 18, 19, 20, 21, 22, 23, 24, 27, 29, 31, 32, 33, 35, 36, 37, 41,
         51, 52, 53, 57, 62, 67, 68, 70, 72, 73, 82, 94, 98, 99, 100, 109, 114, 116, 123, 126, 127, 128, 129,
         130, 131, 133, 135, 136, 137, 141, 153, 941)  # fmt: skip
VENDORS = ("SIEMENS", "GE MEDICAL SYSTEMS", "Philips Medical Systems")
# clinica 0.12 drops these (subject, visit) pairs on purpose; never generate these PTIDs
CLINICA_KNOWN_ERRORS = {"031_S_0830", "100_S_0995", "031_S_0867", "100_S_0892", "003_S_6264", "011_S_4105",
                        "006_S_4485", "029_S_2395", "114_S_6039", "016_S_4952"}  # fmt: skip
DX_LABEL = {"CN": "CN", "MCI": "MCI", "AD": "Dementia"}
DX_CODE = {"CN": 1, "MCI": 2, "AD": 3}
STORAGE_ORIENTATION = {"ADNI1": "PSR", "ADNIGO": "LPS", "ADNI2": "LPS", "ADNI3": "ASL"}
# planted atrophy, two loads per visit that drive different spatial patterns (synth_images.AGE_MM / AD_MM):
#   age load     (age + brain_age_gap - AGE_LOAD_FROM) / AGE_LOAD_SPAN; gap: per subject, N(0, BRAIN_AGE_GAP_SD) years
#   disease load offset[dx] + rate[dx] * years since baseline (rate x a per-subject factor); 0 for CN
AGE_LOAD_FROM, AGE_LOAD_SPAN = 55.0, 35.0
BRAIN_AGE_GAP_SD = 1.5
ATROPHY_OFFSET = {"CN": 0.0, "MCI": 0.35, "AD": 0.8}
ATROPHY_RATE = {"CN": 0.0, "MCI": 0.12, "AD": 0.35, "MCI_converter": 0.3}


@dataclass
class Scan:
    """One T1 acquisition (series) and the image of it that lands in the download (if any)."""

    series_id: int = 0
    orig_uid: int = 0  # ImageUID of the original
    proc_uids: list[int] = field(default_factory=list)  # ImageUIDs of processed derivatives (last = preferred)
    orig_sequence: str = ""
    proc_sequences: list[str] = field(default_factory=list)
    repeat: bool = False
    selected: bool = True  # the scan clinica must pick for this visit
    written: bool = True  # an image file of it is in the download
    qc_pass: bool = True
    quality: int = 2  # Mayo series_quality (1 best .. 4 unusable)
    acq_time: str = "10_00_00"
    proc_stamp: str = ""  # processing datetime stamp for the file name of processed images

    @property
    def image_uid(self) -> int:
        """UID of the image written into the download: the preferred processed one, else the original."""
        return self.proc_uids[-1] if self.proc_uids else self.orig_uid

    @property
    def sequence(self) -> str:
        return self.proc_sequences[-1] if self.proc_sequences else self.orig_sequence


@dataclass
class Visit:
    viscode: str
    months: int
    colprot: str
    visit_name: str  # MPRAGEMETA Visit string
    examdate: date
    scandate: date
    age: float  # exact age at the scan
    dx: str  # CN / MCI / AD at this visit
    age_load: float  # planted aging atrophy (0 at 55 years, 1 at 90, shifted by the subject's brain-age gap)
    disease_load: float  # planted AD atrophy (0 for CN)
    study_id: int = 0
    scans: list[Scan] = field(default_factory=list)
    volumes: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return f"ses-M{self.months:03d}"


@dataclass
class Subject:
    index: int
    ptid: str
    rid: int
    site: int
    cohort: str  # ORIGPROT
    dx: str  # baseline diagnosis CN / MCI / AD
    dx_bl: str  # ADNIMERGE DX_bl (CN, SMC, EMCI, LMCI, AD)
    sex: str  # Male / Female
    age_bl: float
    education: int
    ethnicity: str
    race: str
    marital: str
    apoe: tuple[int, int]
    atrophy_offset: float
    atrophy_rate: float  # per year, disease load (the age load grows 1/AGE_LOAD_SPAN per year)
    brain_age_gap: float  # years added to the age in the age load (subject noise of the aging pattern)
    converter_month: int | None  # MCI -> Dementia from this month on
    head_scale: np.ndarray
    vendor: str
    visits: list[Visit] = field(default_factory=list)

    @property
    def bids_id(self) -> str:
        return "sub-ADNI" + self.ptid.replace("_", "")

    @property
    def field_strength(self) -> float:
        return 1.5 if self.cohort == "ADNI1" else 3.0


# --------------------------------------------------------------------------------------------------- plan
def visit_name(cohort: str, months: int) -> str:
    """MPRAGEMETA `Visit` strings as in real downloads (clinica matches some exactly, the rest by date)."""
    if cohort == "ADNI1":
        return "ADNI Screening" if months == 0 else f"ADNI1/GO Month {months}"
    if cohort == "ADNIGO":
        return {0: "ADNIGO Screening MRI", 6: "ADNIGO Month 6", 12: "ADNI2 Initial Visit-Cont Pt"}.get(
            months, f"ADNI2 Year {(months - 12) // 12} Visit"
        )
    if cohort == "ADNI2":
        return {0: "ADNI2 Screening MRI-New Pt", 3: "ADNI2 Month 3 MRI-New Pt", 6: "ADNI2 Month 6-New Pt"}.get(
            months, f"ADNI2 Year {months // 12} Visit"
        )
    return "ADNI Screening" if months == 0 else f"ADNI3 Year {months // 12} Visit"


def colprot(cohort: str, months: int) -> str:
    return "ADNI2" if cohort == "ADNIGO" and months >= 12 else cohort


def sequences(cohort: str, vendor: str) -> tuple[str, list[str]]:
    """(original sequence, processed sequences in processing order) of a T1 for this protocol/vendor."""
    philips = vendor.startswith("Philips")
    if cohort == "ADNI1":
        base = "MPR; ; N3" if philips else "MPR; GradWarp; B1 Correction; N3"
        return "MPRAGE", [base, base + "; Scaled"]
    if cohort in ("ADNIGO", "ADNI2"):
        return "MPRAGE", ["MT1; N3m" if philips else "MT1; GradWarp; N3m"]
    return ("Accelerated Sagittal IR-FSPGR" if vendor.startswith("GE") else "Accelerated Sagittal MPRAGE"), []


def loni_name(sequence: str) -> str:
    """Folder/file form of a sequence name in LONI downloads ("MPR; GradWarp" -> "MPR__GradWarp")."""
    return re.sub(r"[^A-Za-z0-9\-]", "_", sequence)


def _balanced_pick(rng: np.random.Generator, options: list[str], counts: dict[str, int]) -> str:
    order = rng.permutation(len(options))
    return min((options[i] for i in order), key=lambda o: counts[o])


def plan_cohort(
    n_subjects: int,
    seed: int,
    min_visits: int = 2,
    max_visits: int = 5,
    cohorts: tuple[str, ...] = COHORTS,
    repeat_prob: float = 0.15,
    converter_prob: float = 0.3,
) -> list[Subject]:
    """Draw the subjects, their visits and scans (no images). Diagnoses and cohorts are balanced round-robin."""
    rng = np.random.default_rng([seed, 1])
    only_go = set(cohorts) == {"ADNIGO"}
    dx_cycle = ["MCI"] if only_go else ["CN", "MCI", "AD"]
    dxs = [dx_cycle[i % len(dx_cycle)] for i in rng.permutation(n_subjects)]
    cohort_counts = {c: 0 for c in cohorts}
    used_rids: set[int] = set()
    subjects = []
    for index, dx in enumerate(dxs):
        options = [c for c in cohorts if c != "ADNIGO" or dx == "MCI"] or list(cohorts)
        cohort = _balanced_pick(rng, options, cohort_counts)
        cohort_counts[cohort] += 1
        subjects.append(_draw_subject(rng, index, dx, cohort, used_rids, min_visits, max_visits, converter_prob, seed))
    _draw_scans(rng, subjects, repeat_prob)
    _assign_ids(rng, subjects)
    return subjects


def age_load(age: float, brain_age_gap: float = 0.0) -> float:
    """Planted aging atrophy at this age (0 at AGE_LOAD_FROM years, 1 at AGE_LOAD_FROM + AGE_LOAD_SPAN)."""
    return max((age + brain_age_gap - AGE_LOAD_FROM) / AGE_LOAD_SPAN, 0.0)


def _draw_subject(rng, index, dx, cohort, used_rids, min_visits, max_visits, converter_prob, seed=0) -> Subject:
    while True:
        rid = int(rng.integers(*RID_RANGE[cohort]))
        site = int(rng.choice(SITES))
        ptid = f"{site:03d}_S_{rid:04d}"
        if rid not in used_rids and ptid not in CLINICA_KNOWN_ERRORS:
            used_rids.add(rid)
            break
    sex = "Male" if rng.random() < 0.5 else "Female"
    age_bl = float(np.clip(rng.normal({"CN": 73.5, "MCI": 72.5, "AD": 75.0}[dx], 6.5), 55.0, 90.0))
    dx_bl = {
        "CN": "SMC" if cohort in ("ADNI2", "ADNI3") and rng.random() < 0.25 else "CN",
        "MCI": "EMCI" if cohort == "ADNIGO" or (cohort != "ADNI1" and rng.random() < 0.5) else "LMCI",
        "AD": "AD",
    }[dx]
    e4 = int(rng.choice(3, p={"CN": [0.72, 0.25, 0.03], "MCI": [0.5, 0.4, 0.1], "AD": [0.33, 0.48, 0.19]}[dx]))
    apoe = [(3, 3), (3, 4), (4, 4)][e4]
    if e4 < 2 and rng.random() < 0.15:
        apoe = (2, apoe[1])
    n_visits = int(rng.integers(min_visits, max_visits + 1))
    months = VISIT_MONTHS[cohort][:n_visits]
    converter = dx == "MCI" and rng.random() < converter_prob and len(months) > 2
    conv_month = int(rng.choice(months[2:])) if converter else None
    factor = float(rng.lognormal(0.0, 0.2))
    offset = max(0.0, ATROPHY_OFFSET[dx] + float(rng.normal(0, 0.1))) if dx != "CN" else 0.0
    rate = ATROPHY_RATE["MCI_converter" if converter else dx] * factor
    size = (1.03 if sex == "Male" else 0.97) * rng.uniform(0.96, 1.04)
    head_scale = size * rng.uniform(0.98, 1.02, 3)
    # own stream: the brain-age gap leaves every other draw (ids, dates, scans) as it was without it
    gap = float(np.random.default_rng([seed, 5, index]).normal(0.0, BRAIN_AGE_GAP_SD))
    lo, hi = ERA[cohort]
    bl_date = lo + timedelta(days=int(rng.integers(0, (hi - lo).days)))
    subject = Subject(
        index=index, ptid=ptid, rid=rid, site=site, cohort=cohort, dx=dx, dx_bl=dx_bl, sex=sex,
        age_bl=round(age_bl, 1), education=int(np.clip(round(rng.normal(16, 2.8)), 6, 20)),
        ethnicity="Hisp/Latino" if rng.random() < 0.05 else "Not Hisp/Latino",
        race=str(rng.choice(["White", "Black", "Asian", "More than one"], p=[0.9, 0.05, 0.03, 0.02])),
        marital=str(rng.choice(["Married", "Widowed", "Divorced", "Never married"], p=[0.74, 0.13, 0.09, 0.04])),
        apoe=apoe, atrophy_offset=round(offset, 4), atrophy_rate=round(rate, 4), converter_month=conv_month,
        head_scale=np.round(head_scale, 4), vendor=VENDORS[site % 3], brain_age_gap=round(gap, 3),
    )  # fmt: skip
    for m in months:
        examdate = bl_date + timedelta(days=int(round(m * 30.44)) + (int(rng.integers(-14, 15)) if m else 0))
        # the MRI of the baseline visit is taken at screening, 1-4 weeks before; follow-ups within 10 days
        scandate = examdate - timedelta(days=int(rng.integers(7, 29))) if m == 0 else (
            examdate + timedelta(days=int(rng.integers(-10, 11))))  # fmt: skip
        age = subject.age_bl + (scandate - bl_date).days / 365.25
        years = max((scandate - bl_date).days, 0) / 365.25
        dx_now = "AD" if conv_month is not None and m >= conv_month else dx
        subject.visits.append(
            Visit(
                viscode="bl" if m == 0 else f"m{m:02d}",
                months=m,
                colprot=colprot(cohort, m),
                visit_name=visit_name(cohort, m),
                examdate=examdate,
                scandate=scandate,
                age=age,
                dx=dx_now,
                age_load=round(age_load(age, subject.brain_age_gap), 4),
                disease_load=round(max(offset + rate * years, 0.0), 4),
            )  # fmt: skip
        )
    return subject


def _draw_scans(rng: np.random.Generator, subjects: list[Subject], repeat_prob: float) -> None:
    for s in subjects:
        orig_seq, proc_seqs = sequences(s.cohort, s.vendor)
        for v in s.visits:
            hh, mm, ss = int(rng.integers(7, 19)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
            main = Scan(orig_sequence=orig_seq, proc_sequences=list(proc_seqs), acq_time=f"{hh:02d}_{mm:02d}_{ss:02d}",
                        quality=int(rng.integers(1, 3)))  # fmt: skip
            v.scans = [main]
            if rng.random() < repeat_prob:
                later = f"{hh:02d}_{min(mm + 9, 59):02d}_{ss:02d}"
                if s.cohort == "ADNI3":  # a second original in the download; Mayo QC selects one of the two
                    rep = Scan(orig_sequence=orig_seq, acq_time=later, repeat=True, quality=3, selected=False)
                    if rng.random() < 0.5:  # sometimes the repeat is the better one
                        main.selected, main.quality, rep.selected, rep.quality = False, 3, True, 1
                else:  # ADNI1/GO/2: a failed repeat series, listed in the metadata only (never processed)
                    rep = Scan(orig_sequence=orig_seq + " Repeat" if s.cohort != "ADNI1" else "MPRAGE Repeat",
                               acq_time=later, repeat=True, selected=False, written=False, qc_pass=False,
                               quality=4)  # fmt: skip
                v.scans.append(rep)


def _assign_ids(rng: np.random.Generator, subjects: list[Subject]) -> None:
    """LONI-like ids: series/image UIDs increase with acquisition date, processed UIDs come later."""
    scans = [(v.scandate, sc.acq_time, s.index, v, sc) for s in subjects for v in s.visits for sc in v.scans]
    scans.sort(key=lambda t: (t[0], t[1], t[2]))
    series, image, study = 10000, 20000, 5000
    seen_visits = set()
    for _, _, _, v, sc in scans:
        if id(v) not in seen_visits:
            study += int(rng.integers(1, 40))
            v.study_id = study
            seen_visits.add(id(v))
        series += int(rng.integers(1, 60))
        image += int(rng.integers(1, 60))
        sc.series_id, sc.orig_uid = series, image
    image += 100000
    for scandate, _, _, _, sc in scans:
        if sc.proc_sequences and not sc.repeat:
            proc_date = scandate + timedelta(days=int(rng.integers(20, 400)))
            sc.proc_stamp = proc_date.strftime("%Y%m%d") + f"{int(rng.integers(0, 235959999)):09d}"
            sc.proc_uids = []
            for _ in sc.proc_sequences:
                image += int(rng.integers(1, 30))
                sc.proc_uids.append(image)
        elif sc.repeat:
            sc.proc_sequences, sc.proc_uids = [], []


# --------------------------------------------------------------------------------------------------- scores
def visit_scores(rng: np.random.Generator, s: Subject, v: Visit) -> dict:
    """Cognitive scores consistent with the diagnosis and the disease load of the atrophy."""
    d = v.disease_load  # disease burden, 0 for CN
    n = rng.normal
    mmse = int(np.clip(round(29.3 - 6.0 * d + n(0, 0.9)), 0, 30))
    adas11 = float(np.clip(round(6.0 + 14.0 * d + n(0, 2.0), 2), 0, 70))
    cdrsb = float(np.clip(round((4.5 * d + abs(n(0, 0.4))) * 2) / 2, 0, 18))
    cdglobal = 0.0 if d < 0.15 else 0.5 if d < 1.0 else 1.0 if d < 1.8 else 2.0
    later = s.cohort != "ADNI1"
    return {
        "MMSE": mmse,
        "CDRSB": cdrsb,
        "CDGLOBAL": cdglobal,
        "ADAS11": adas11,
        "ADAS13": float(np.clip(round(adas11 * 1.55 + n(0, 1.5), 2), 0, 85)),
        "ADASQ4": int(np.clip(round(2 + 5.5 * d + n(0, 1)), 0, 10)),
        "FAQ": int(np.clip(round(12 * d**1.3 + abs(n(0, 1))), 0, 30)),
        "RAVLT_immediate": int(np.clip(round(45 - 20 * d + n(0, 5)), 0, 75)),
        "MOCA": int(np.clip(round(26 - 7 * d + n(0, 1.5)), 0, 30)) if later else np.nan,
        "TRABSCOR": int(np.clip(round(75 + 100 * d + n(0, 20)), 20, 300)),
        "mPACCdigit": round(float(-12 * d + n(0, 2)), 4),
        "mPACCtrailsB": round(float(-11 * d + n(0, 2)), 4),
    }


def baseline_biomarkers(rng: np.random.Generator, s: Subject) -> dict:
    ad_like = {"CN": 0.0, "MCI": 0.5, "AD": 1.0}[s.dx]
    has_csf = rng.random() < 0.6
    return {
        "ABETA": round(float(rng.normal(210 - 70 * ad_like, 25)), 1) if has_csf else np.nan,
        "TAU": round(float(rng.normal(65 + 55 * ad_like, 15)), 1) if has_csf else np.nan,
        "PTAU": round(float(rng.normal(21 + 20 * ad_like, 6)), 1) if has_csf else np.nan,
        "FDG": round(float(rng.normal(6.5 - 1.2 * ad_like, 0.4)), 4) if s.cohort in ("ADNI1", "ADNI2") else np.nan,
        "AV45": round(float(rng.normal(1.05 + 0.35 * ad_like, 0.1)), 4) if s.cohort != "ADNI1" else np.nan,
        "PIB": np.nan,
    }


# --------------------------------------------------------------------------------------------------- tables
def _d(x: date) -> str:
    return x.strftime("%Y-%m-%d")


def adnimerge(subjects: list[Subject], seed: int) -> pd.DataFrame:
    rows = []
    for s in subjects:
        rng = np.random.default_rng([seed, 2, s.index])
        bio = baseline_biomarkers(rng, s)
        bl = s.visits[0]
        for v in s.visits:
            v.scores = visit_scores(rng, s, v)
        bls = bl.scores
        icv = round(s.visits[0].volumes.get("icv_ml", np.nan) * 1000, 0)
        for v in s.visits:
            vol = v.volumes
            main = next(sc for sc in v.scans if sc.selected)
            rows.append({
                "RID": s.rid, "COLPROT": v.colprot, "ORIGPROT": s.cohort, "PTID": s.ptid, "SITE": s.site,
                "VISCODE": v.viscode, "EXAMDATE": _d(v.examdate), "DX_bl": s.dx_bl, "AGE": s.age_bl,
                "PTGENDER": s.sex, "PTEDUCAT": s.education, "PTETHCAT": s.ethnicity, "PTRACCAT": s.race,
                "PTMARRY": s.marital, "APOE4": s.apoe.count(4),
                **({k: bio[k] for k in ("FDG", "PIB", "AV45", "ABETA", "TAU", "PTAU")} if v is bl else
                   {k: np.nan for k in ("FDG", "PIB", "AV45", "ABETA", "TAU", "PTAU")}),
                **{k: v.scores[k] for k in ("CDRSB", "ADAS11", "ADAS13", "ADASQ4", "MMSE", "RAVLT_immediate",
                                            "TRABSCOR", "FAQ", "MOCA")},
                "FLDSTRENG": f"{s.field_strength:.1f} Tesla MRI", "FSVERSION": "Cross-Sectional FreeSurfer (5.1)",
                "IMAGEUID": main.orig_uid,
                "Ventricles": round(vol["ventricle_ml"] * 1000, 0),
                "Hippocampus": round(vol["hippocampus_ml"] * 1000, 0),
                "WholeBrain": round(vol["brain_tissue_ml"] * 1000, 0),
                "Entorhinal": round(vol["hippocampus_ml"] * 1000 * 0.48 * float(rng.normal(1, 0.05)), 0),
                "Fusiform": round(vol["brain_tissue_ml"] * 1000 * 0.0155 * float(rng.normal(1, 0.03)), 0),
                "MidTemp": round(vol["brain_tissue_ml"] * 1000 * 0.0175 * float(rng.normal(1, 0.03)), 0),
                "ICV": icv, "DX": DX_LABEL[v.dx],
                "mPACCdigit": v.scores["mPACCdigit"], "mPACCtrailsB": v.scores["mPACCtrailsB"],
                "EXAMDATE_bl": _d(bl.examdate), "CDRSB_bl": bls["CDRSB"], "ADAS11_bl": bls["ADAS11"],
                "ADAS13_bl": bls["ADAS13"], "ADASQ4_bl": bls["ADASQ4"], "MMSE_bl": bls["MMSE"],
                "RAVLT_immediate_bl": bls["RAVLT_immediate"], "TRABSCOR_bl": bls["TRABSCOR"], "FAQ_bl": bls["FAQ"],
                "mPACCdigit_bl": bls["mPACCdigit"], "mPACCtrailsB_bl": bls["mPACCtrailsB"], "MOCA_bl": bls["MOCA"],
                "FLDSTRENG_bl": f"{s.field_strength:.1f} Tesla MRI", "IMAGEUID_bl": next(
                    sc for sc in bl.scans if sc.selected).orig_uid,
                "Years_bl": round((v.examdate - bl.examdate).days / 365.25, 4),
                "Month_bl": round((v.examdate - bl.examdate).days / 30.44, 4), "Month": v.months, "M": v.months,
                "update_stamp": "2023-01-20 05:56:07.0",
            })  # fmt: skip
    return pd.DataFrame(rows)


def mpragemeta(subjects: list[Subject]) -> pd.DataFrame:
    rows = []
    for s in subjects:
        for v in s.visits:
            for sc in v.scans:
                base = {"Phase": v.colprot, "RID": s.rid, "SubjectID": s.ptid, "Visit": v.visit_name,
                        "ScanDate": _d(v.scandate), "StudyID": v.study_id, "SeriesID": sc.series_id,
                        "MagStrength": s.field_strength}  # fmt: skip
                rows.append({**base, "Orig/Proc": "Original", "Sequence": sc.orig_sequence, "ImageUID": sc.orig_uid})
                for seq, uid in zip(sc.proc_sequences, sc.proc_uids):
                    rows.append({**base, "Orig/Proc": "Processed", "Sequence": seq, "ImageUID": uid})
    df = pd.DataFrame(rows)
    df.insert(1, "ID", np.arange(1, len(df) + 1) * 2)
    df["update_stamp"] = "2019-09-12 14:03:21.0"
    cols = ["Phase", "ID", "RID", "SubjectID", "Orig/Proc", "Visit", "Sequence", "ScanDate", "StudyID", "SeriesID",
            "ImageUID", "MagStrength", "update_stamp"]  # fmt: skip
    return df[cols]


def mriquality(subjects: list[Subject]) -> pd.DataFrame:
    rows = [
        {
            "Phase": v.colprot,
            "RID": s.rid,
            "VISCODE": v.viscode,
            "LONIUID": f"S{sc.series_id}",
            "LONISTUDY": f"S{v.study_id}",
            "PASS": int(sc.qc_pass),
            "COMMENTS": "" if sc.qc_pass else "motion artefact",
            "update_stamp": "2012-03-05 10:11:12.0",
        }  # fmt: skip
        for s in subjects
        if s.cohort != "ADNI3"
        for v in s.visits
        for sc in v.scans
    ]
    cols = ["Phase", "RID", "VISCODE", "LONIUID", "LONISTUDY", "PASS", "COMMENTS", "update_stamp"]
    return pd.DataFrame(rows, columns=cols)


def mayo_qc(subjects: list[Subject]) -> pd.DataFrame:
    rows = []
    for s in subjects:
        if s.field_strength != 3.0:
            continue
        for v in s.visits:
            for sc in v.scans:
                rows.append({
                    "RID": s.rid, "loni_study": f"S{v.study_id}", "loni_series": f"S{sc.series_id}",
                    "loni_image": f"I{sc.orig_uid}", "series_date": _d(v.scandate), "series_type": "T1",
                    "series_description": sc.orig_sequence, "series_selected": int(sc.selected),
                    "series_quality": sc.quality, "study_overallpass": 1, "study_comments": "",
                })  # fmt: skip
    cols = ["RID", "loni_study", "loni_series", "loni_image", "series_date", "series_type", "series_description",
            "series_selected", "series_quality", "study_overallpass", "study_comments"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def apoeres(subjects: list[Subject]) -> pd.DataFrame:
    rows = [
        {
            "Phase": s.cohort,
            "ID": 10 * (i + 1),
            "RID": s.rid,
            "SITEID": s.site,
            "VISCODE": "sc",
            "USERDATE": _d(s.visits[0].examdate),
            "APTESTDT": _d(s.visits[0].examdate),
            "APGEN1": s.apoe[0],
            "APGEN2": s.apoe[1],
            "update_stamp": "2013-04-02 11:00:00.0",
        }  # fmt: skip
        for i, s in enumerate(sorted(subjects, key=lambda s: s.rid))
    ]
    return pd.DataFrame(rows)


def dxsum(subjects: list[Subject]) -> pd.DataFrame:
    """DXSUM_PDXCONV_ADNIALL: per visit diagnosis. ADNI3 subjects get a screening ("sc") row, which clinica uses
    for their diagnosis_sc; as in the real table, a screening row can appear twice (an amended entry)."""
    rows = []
    for s in subjects:
        codes = []
        if s.cohort == "ADNI3":
            codes = [("sc", s.visits[0].examdate - timedelta(days=30), s.dx)] * 2
        codes += [(v.viscode if v.months or s.cohort != "ADNI3" else None, v.examdate, v.dx) for v in s.visits]
        prev = None
        for code, when, dx in codes:
            if code is None:
                continue
            num = DX_CODE[dx]
            change = num if prev in (None, num) else {(2, 3): 5, (1, 2): 4}.get((prev, num), num)
            rows.append({
                "Phase": colprot(s.cohort, 0 if code in ("sc", "bl") else int(code[1:])), "RID": s.rid,
                "PTID": s.ptid, "SITEID": s.site, "VISCODE": code, "VISCODE2": code, "USERDATE": _d(when),
                "EXAMDATE": _d(when), "DXCURREN": num if s.cohort == "ADNI1" else np.nan,
                "DXCHANGE": change if s.cohort in ("ADNIGO", "ADNI2") else np.nan,
                "DIAGNOSIS": num, "update_stamp": "2020-05-01 00:00:00.0",
            })  # fmt: skip
            prev = num if code != "sc" else prev
    df = pd.DataFrame(rows)
    df.insert(1, "ID", np.arange(1, len(df) + 1) * 3)
    return df


def cdr(subjects: list[Subject]) -> pd.DataFrame:
    rows = []
    for s in subjects:
        for v in s.visits:
            g, sb = v.scores["CDGLOBAL"], v.scores["CDRSB"]
            box = min(3.0, round(sb / 6 * 2) / 2)
            rows.append({
                "Phase": v.colprot, "RID": s.rid, "SITEID": s.site, "VISCODE": v.viscode, "VISCODE2": v.viscode,
                "USERDATE": _d(v.examdate), "EXAMDATE": _d(v.examdate), "CDMEMORY": max(g, box),
                "CDORIENT": box, "CDJUDGE": box, "CDCOMMUN": box, "CDHOME": box, "CDCARE": min(box, 1.0),
                "CDGLOBAL": g, "update_stamp": "2020-05-01 00:00:00.0",
            })  # fmt: skip
    return pd.DataFrame(rows)


CLINICAL_TABLES = {
    "ADNIMERGE.csv": adnimerge,
    "MPRAGEMETA.csv": mpragemeta,
    "MRIQUALITY.csv": mriquality,
    "MAYOADIRL_MRI_IMAGEQC_05_07_15.csv": mayo_qc,
    "APOERES.csv": apoeres,
    "DXSUM_PDXCONV_ADNIALL.csv": dxsum,
    "CDR.csv": cdr,
}


def write_clinical(subjects: list[Subject], clinical_dir: Path, seed: int) -> list[Path]:
    """Write every table (byte-identical for the same inputs). ADNIMERGE first: it fills the visit scores."""
    clinical_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in CLINICAL_TABLES.items():
        df = make(subjects, seed) if make is adnimerge else make(subjects)
        path = clinical_dir / name
        df.to_csv(path, index=False, lineterminator="\n")
        paths.append(path)
    return paths
