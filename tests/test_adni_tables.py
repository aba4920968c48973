"""The ADNI study-table check that runs before clinica (ldae.data.adni_tables), pinned against the installed clinica.

The pin runs clinica's own readers of the study tables (subject list, T1 scan selection, participants.tsv,
sessions.tsv; no image conversion) on a synthetic download: every column we list must change what they do when
it is dropped, and tables cut down to exactly our columns must give the same result as the full tables.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd
import pytest

from ldae.data import adni_tables, convert, synth

clinica = pytest.importorskip("clinica")
pytestmark = pytest.mark.slow
LISTED = [(stem, column) for stem, columns in adni_tables.REQUIRED_COLUMNS.items() for column in columns]


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    """A small synthetic download (8 mm scans: only the tables matter) with every protocol clinica treats apart.
    Its MAYO QC table selects no series, so clinica also reads the series_quality branch."""
    root = tmp_path_factory.mktemp("adni-tables")
    dl = synth.generate(root / "download", 5, min_visits=2, max_visits=3, voxel_mm=8.0, seed=11, repeat_prob=0.5,
                        cohorts=("ADNI1", "ADNI2", "ADNI3"))  # fmt: skip
    assert {"ADNI1", "ADNI2", "ADNI3"} <= set(pd.read_csv(dl / "truth/subjects.tsv", sep="\t").cohort)
    mayo = dl / "clinical" / "MAYOADIRL_MRI_IMAGEQC_05_07_15.csv"
    pd.read_csv(mayo).assign(series_selected=0).to_csv(mayo, index=False)
    return dl


def tables(download: Path, dest: Path, edit=None) -> Path:
    """A copy of the study tables; `edit(name, frame)` returns the frame to write (None: leave the file out)."""
    dest.mkdir(parents=True)
    for path in sorted((download / "clinical").iterdir()):
        frame = pd.read_csv(path, low_memory=False)
        frame = edit(path.name, frame) if edit else frame
        if frame is not None:
            frame.to_csv(dest / path.name, index=False)
    return dest


def drop(name, column):
    return lambda file, frame: frame.drop(columns=[column]) if file == f"{name}.csv" else frame


def clinica_reads(download: Path, clinical: Path, work: Path):
    """What installed clinica's adni-to-bids derives from the tables: (T1 choices, participants, sessions)."""
    import clinica.converters.adni_to_bids as adni
    from clinica.converters._utils import create_participants_df
    from clinica.converters.adni_to_bids._utils import (
        correct_diagnosis_sc_adni3,
        create_adni_sessions_dict,
        get_subjects_list,
    )
    from clinica.converters.adni_to_bids.modality_converters._t1 import _compute_t1_paths
    from clinica.converters.study_models import StudyName, bids_id_factory

    specifications = Path(adni.__file__).parent / "specifications"
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        subjects = get_subjects_list(download / "ADNI", clinical)
        images = _compute_t1_paths(download / "ADNI", clinical, subjects, work)
        ids = [bids_id_factory(StudyName.ADNI).from_original_study_id(s) for s in subjects]
        participants = correct_diagnosis_sc_adni3(clinical, create_participants_df(StudyName.ADNI, specifications,
                                                                                   clinical, ids))  # fmt: skip
        create_adni_sessions_dict(ids, specifications, clinical, [work / i for i in ids])
    sessions = pd.concat([pd.read_csv(work / i / f"{i}_sessions.tsv", sep="\t", dtype=str) for i in ids])
    chosen = images[["Subject_ID", "VISCODE", "Image_ID"]].astype(str).reset_index(drop=True)
    return chosen, participants.astype(str).reset_index(drop=True), sessions.reset_index(drop=True)


@pytest.fixture(scope="module")
def baseline(download, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baseline")
    return clinica_reads(download, tables(download, tmp / "clinical"), tmp / "work")


def test_installed_clinica_is_the_version_the_lists_come_from():
    from importlib.metadata import version

    assert version("clinica") == adni_tables.CLINICA_VERSION


def test_lists_cover_clinicas_specifications():
    """Every column clinica's participants.tsv specification reads is listed; the optional tables are exactly
    the files of its sessions.tsv specification, with the visit column clinica derives the session from."""
    import clinica.converters.adni_to_bids as adni
    from clinica.converters.adni_to_bids._utils import _get_visit_code_column_name

    folder = Path(adni.__file__).parent / "specifications"
    participants = pd.read_csv(folder / "participant.tsv", sep="\t").dropna(subset=["ADNI"])
    for column, location in zip(participants["ADNI"], participants["ADNI location"]):
        assert column in adni_tables.REQUIRED_COLUMNS[location.split(".")[0]], (location, column)
    sessions = pd.read_csv(folder / "sessions.tsv", sep="\t").dropna(subset=["ADNI location"])
    locations = {raw.split("/")[0] for raw in sessions["ADNI location"]}
    optional = {loc.split(".")[0]: _get_visit_code_column_name(loc) for loc in locations if loc != "ADNIMERGE.csv"}
    assert optional == adni_tables.OPTIONAL_TABLES


@pytest.mark.parametrize("stem, column", LISTED, ids=[f"{s}.{c}" for s, c in LISTED])
def test_clinica_reads_every_listed_column(download, baseline, tmp_path, stem, column):
    """Without the column clinica's readers fail or write something else: it is not listed for nothing."""
    clinical = tables(download, tmp_path / "clinical", drop(stem, column))
    try:
        result = clinica_reads(download, clinical, tmp_path / "work")
    except Exception:  # clinica's KeyError / AttributeError / ValueError deep inside
        return
    assert not all(a.equals(b) for a, b in zip(baseline, result)), f"clinica does not need {stem}.{column}"


def test_tables_cut_to_the_listed_columns_convert_alike(download, baseline, tmp_path):
    """Nothing clinica needs is missing from the lists: cut-down tables give the same scans, participants and
    sessions.tsv columns our session table reads."""

    def cut(name, frame):
        stem = name[: -len(".csv")]
        if stem in adni_tables.REQUIRED_COLUMNS:
            return frame[list(adni_tables.REQUIRED_COLUMNS[stem])]
        if stem in adni_tables.OPTIONAL_TABLES:
            return frame[["RID", adni_tables.OPTIONAL_TABLES[stem]]]
        return None

    clinical = tables(download, tmp_path / "clinical", cut)
    assert adni_tables.table_problems(clinical) == []
    chosen, participants, sessions = clinica_reads(download, clinical, tmp_path / "work")
    pd.testing.assert_frame_equal(chosen, baseline[0])
    pd.testing.assert_frame_equal(participants, baseline[1])
    keep = ["session_id", "age", "diagnosis"]
    pd.testing.assert_frame_equal(sessions[keep], baseline[2][keep])


@pytest.mark.parametrize("stem, column", LISTED, ids=[f"{s}.{c}" for s, c in LISTED])
def test_each_missing_column_is_named_before_clinica_runs(download, tmp_path, stem, column):
    clinical = tables(download, tmp_path / "clinical", drop(stem, column))
    problems = adni_tables.table_problems(clinical)
    assert len(problems) == 1 and problems[0].startswith(f"{stem}.csv: missing column(s) {column} ("), problems
    with pytest.raises(convert.ConversionError) as error:
        convert.check_inputs(download / "ADNI", clinical)
    assert f"{stem}.csv: missing column(s) {column}" in str(error.value) and "data.clinical_dir" in str(error.value)


def test_every_problem_in_one_message_and_clinica_never_starts(download, tmp_path, capsys):
    def damage(name, frame):
        if name == "ADNIMERGE.csv":
            return frame.drop(columns=["AGE", "DX"])
        if name == "MPRAGEMETA.csv":
            return frame.drop(columns=["MagStrength"])
        if name == "CDR.csv":
            return frame.drop(columns=["VISCODE2"])
        return None if name == "MRIQUALITY.csv" else frame

    clinical = tables(download, tmp_path / "clinical", damage)
    rc = convert.main(["--dataset-dir", str(download / "ADNI"), "--clinical-dir", str(clinical),
                       "--bids-dir", str(tmp_path / "bids"), "--log", str(tmp_path / "c.log")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("ldae adni-to-bids: error:") == 1 and "Traceback" not in err
    for expected in (
        "ADNIMERGE.csv: missing column(s) AGE (",
        ", DX (",
        "MPRAGEMETA.csv: missing column(s) MagStrength",
        "MRIQUALITY.csv missing",
        "CDR.csv: missing column(s) VISCODE2",
        "config data.clinical_dir",
    ):
        assert expected in err, (expected, err)
    assert not (tmp_path / "bids").exists() and not (tmp_path / "c.log").exists()  # clinica never started


def test_unknown_dx_value_is_caught(download, baseline, tmp_path):
    """clinica does not stop on a DX value it does not know: it leaves the whole column unconverted."""

    def relabel(name, frame):
        if name != "ADNIMERGE.csv":
            return frame
        first = frame.DX.first_valid_index()
        return frame.assign(DX=frame.DX.where(frame.index != first, "Alzheimer"))

    clinical = tables(download, tmp_path / "clinical", relabel)
    assert any("DX value(s) ['Alzheimer']" in p for p in adni_tables.table_problems(clinical))
    _, _, sessions = clinica_reads(download, clinical, tmp_path / "work")
    assert "AD" in set(baseline[2].diagnosis)
    assert {"Alzheimer", "Dementia"} <= set(sessions.diagnosis) and "AD" not in set(sessions.diagnosis)


def test_genotype_column_replaces_apgen(download, baseline, tmp_path):
    def genotype(name, frame):
        if name != "APOERES.csv":
            return frame
        frame = frame.assign(GENOTYPE=frame.APGEN1.astype(str) + "/" + frame.APGEN2.astype(str))
        return frame.drop(columns=["APGEN1", "APGEN2"])

    clinical = tables(download, tmp_path / "clinical", genotype)
    assert adni_tables.table_problems(clinical) == []
    chosen, participants, _ = clinica_reads(download, clinical, tmp_path / "work")
    pd.testing.assert_frame_equal(chosen, baseline[0])
    numbers = lambda column: pd.to_numeric(column, errors="coerce")  # noqa: E731
    assert numbers(participants.apoe_gen1).equals(numbers(baseline[1].apoe_gen1))
