"""Preprocessing: N4, registration, skull stripping, derivative names, sidecars, QC exclusions.

Small synthetic scans (ldae.preprocess.phantom: the MNI152NLin6Asym head under a planted pose, 3 mm voxels) so
each test stays well under a minute on two shared CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from ldae.preprocess import description, n4, naming, phantom, pipeline, qc, register, scan, skullstrip, templates

ROOT = Path(__file__).resolve().parents[1]
VOXEL = 3.0
POSE = dict(rotation_deg=(8.0, -5.0, 10.0), translation_mm=(9.0, -12.0, 7.0), scale=(1.04, 0.97, 1.02))
# Fast settings for 3 mm scans (the same code paths as the paper config).
FAST = {
    "threads": 2,
    "n4": {"shrink_factor": 2},
    "registration": {
        "resolution_mm": VOXEL,
        "output_voxel_mm": VOXEL,
        "shrink_factors": [2, 1],
        "smoothing_sigmas": [1, 0],
        "iterations": [100, 50],
    },
    "skullstrip": {"device": "cpu"},
}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    pipeline.set_threads(2)  # ITK, BLAS, torch: the tests share two CPU cores


def fast(**overrides) -> dict:
    cfg = json.loads(json.dumps(FAST))
    for key, value in overrides.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("scans")


@pytest.fixture(scope="module")
def head(scan_dir):
    """A 3 mm head scan (PIR storage, like a sagittal MPRAGE) with planted pose, bias field and noise."""
    ph = phantom.make_phantom(VOXEL, seed=4, bias_strength=0.3, noise=0.02, orientation="PIR", **POSE)
    path = scan_dir / "head.nii.gz"
    ph.save(path, scan_dir / "head_mask.nii.gz")
    return ph, str(path)


@pytest.fixture(scope="module")
def nlin6_brain(scan_dir):
    """The scans' source template, skull-stripped, as a custom template (exact ground truth for the pose)."""
    head_path, mask_path = phantom.source_template_paths()
    image = nib.load(str(head_path))
    mask = np.asarray(nib.load(str(mask_path)).dataobj) > 0.5
    brain = nib.Nifti1Image((np.asarray(image.dataobj, dtype=np.float32) * mask), image.affine)
    path = scan_dir / "tpl-NLin6Brain_T1w.nii.gz"
    brain.to_filename(str(path))
    return {"template": str(path), "template_mask": str(mask_path)}


@pytest.fixture(scope="module")
def passed(head, tmp_path_factory):
    """One full default-order run (n4 -> deepbet -> affine) of the head scan (tests using it are marked slow)."""
    root = tmp_path_factory.mktemp("derivatives")
    record = pipeline.preprocess_session(
        head[1],
        "sub-ADNI011S0002",
        "ses-M000",
        str(root),
        fast(),
        threads=2,
        source="sub-ADNI011S0002/ses-M000/anat/sub-ADNI011S0002_ses-M000_T1w.nii.gz",
    )
    return record, root


# ---- names -----------------------------------------------------------------------------------------------
def test_derivative_names_are_bids():
    p = naming.preproc_paths("/d", "sub-ADNI011S0002", "ses-M006", "MNI152NLin2009aSym")
    assert p.image == (
        "/d/sub-ADNI011S0002/ses-M006/anat/sub-ADNI011S0002_ses-M006_space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz"
    )
    assert p.mask.endswith("anat/sub-ADNI011S0002_ses-M006_space-MNI152NLin2009aSym_desc-brain_mask.nii.gz")
    assert p.sidecar == p.image.replace(".nii.gz", ".json")
    assert p.transform.endswith("anat/sub-ADNI011S0002_ses-M006_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat")
    assert p.qc_json == "/d/sub-ADNI011S0002/figures/sub-ADNI011S0002_ses-M006_desc-qc_T1w.json"
    assert p.qc_png.endswith("figures/sub-ADNI011S0002_ses-M006_space-MNI152NLin2009aSym_desc-qc_T1w.png")
    # same names from bare labels; wildcard placeholders give the Snakemake patterns
    assert naming.preproc_paths("/d", "ADNI011S0002", "M006", "MNI152NLin2009aSym") == p
    pattern = naming.preproc_paths("/d", "{subject}", "{session}", "X", "syn")
    assert pattern.qc_json == "/d/sub-{subject}/figures/sub-{subject}_ses-{session}_desc-qc_T1w.json"
    assert pattern.transform.endswith("_from-T1w_to-X_mode-image_xfm.h5")
    assert naming.root_of_qc_json(p.qc_json) == "/d"
    assert p.relative("/d").image.startswith("sub-ADNI011S0002/ses-M006/anat/")
    assert naming.qc_table(naming.derivatives_root("out")) == "out/derivatives/ldae-preproc/qc.tsv"
    entity = re.compile(
        r"^sub-[A-Za-z0-9]+_ses-[A-Za-z0-9]+(_(space|from|to|mode|desc)-[A-Za-z0-9]+)*_(T1w|mask|xfm)\."
    )
    for path in (p.image, p.mask, p.sidecar, p.transform, p.qc_json, p.qc_png):
        assert entity.match(os.path.basename(path)), path


def test_space_label_follows_template():
    assert templates.space_label({}) == "MNI152NLin2009aSym"
    assert templates.space_label({"space": "MNI152NLin2009cSym", "template": "/x.nii.gz"}) == "MNI152NLin2009cSym"
    assert templates.space_label({"template": "/t/tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz"}) == "MNI152NLin2009cAsym"
    with pytest.raises(templates.TemplateError, match="registration.space"):
        templates.space_label({"template": "/t/my_template.nii.gz"})


def test_dataset_description(tmp_path):
    out = tmp_path / "derivatives" / "ldae-preproc" / "dataset_description.json"
    code = description.main(
        [
            "--out",
            str(out),
            "--source",
            str(tmp_path / "bids"),
            "--container",
            "oras://x/ants:1",
            "--config-json",
            json.dumps({"steps": ["n4", "skullstrip", "register"]}),
        ]
    )
    assert code == 0
    d = json.loads(out.read_text())
    assert d["DatasetType"] == "derivative" and d["BIDSVersion"]
    generated = d["GeneratedBy"][0]
    assert generated["Name"] == "ldae-preproc" and generated["Version"]
    assert generated["Container"] == {"Type": "apptainer", "URI": "oras://x/ants:1"}
    assert d["SourceDatasets"] == [{"URL": "../../bids"}]
    assert d["ToolVersions"]["antspyx"] != "absent"
    assert (out.parent / ".bidsignore").read_text().split() == [
        "figures",
        "*/figures",
        "qc.tsv",
        "*_xfm.mat",
        "*_xfm.h5",
    ]
    # the steps in the configured order (not a fixed sentence)
    assert d["Name"] == f"LDAE preprocessed T1w (N4 -> skull strip -> {templates.DEFAULT_SPACE} registration)"
    assert generated["Description"].startswith("N4 bias field correction, then skull stripping, then registration")


def test_dataset_description_follows_the_step_order_and_names_no_machine_path(tmp_path, monkeypatch):
    monkeypatch.setenv("APPTAINER_CONTAINER", str(tmp_path / "images" / "ants.sif"))
    d = description.dataset_description("../../bids", parameters={"steps": ["n4", "register", "skullstrip"]})
    assert d["Name"] == f"LDAE preprocessed T1w (N4 -> {templates.DEFAULT_SPACE} registration -> skull strip)"
    assert d["GeneratedBy"][0]["Description"].startswith(
        f"N4 bias field correction, then registration to the {templates.DEFAULT_SPACE} template, then skull"
    )
    assert d["GeneratedBy"][0]["Container"] == {"Type": "apptainer", "URI": "ants.sif"}
    monkeypatch.delenv("APPTAINER_CONTAINER")
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    assert not os.path.isabs(description.runtime_container()["Environment"])
    assert str(tmp_path) not in json.dumps(d)


# ---- config ------------------------------------------------------------------------------------------------
def _schema_defaults(node):
    if node.get("type") == "object" and "properties" in node:
        return {k: _schema_defaults(v) for k, v in node["properties"].items()}
    return node.get("default")


def test_schema_config_and_defaults_agree():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    section = schema["properties"]["preprocess"]
    assert _schema_defaults(section) == pipeline.resolve_config({})

    def described(node, where):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub and "default" in sub, f"{where}.{key}"
            if sub.get("type") == "object":
                assert sub.get("additionalProperties") is False, f"{where}.{key}"
                described(sub, f"{where}.{key}")

    described(section, "preprocess")
    described(schema["properties"]["images"], "images")
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())["preprocess"]
    assert pipeline.resolve_config(shipped) == pipeline.resolve_config({})


def test_config_errors():
    with pytest.raises(pipeline.ConfigError, match="register"):
        pipeline.resolve_config({"steps": ["n4", "skullstrip"]})
    with pytest.raises(pipeline.ConfigError, match="register.*before"):
        pipeline.resolve_config({"skullstrip": {"method": "template"}})
    assert pipeline.resolve_config({"steps": ["register", "skullstrip"], "skullstrip": {"method": "template"}})
    params = json.loads(pipeline.rule_params(pipeline.resolve_config({"threads": 16, "group_size": 3})))
    assert "threads" not in params and "group_size" not in params  # runtime-only keys rerun nothing


# ---- steps on a small synthetic scan ---------------------------------------------------------------------
@pytest.mark.slow
def test_n4_removes_the_planted_bias(scan_dir):
    ph = phantom.make_phantom(4.0, seed=5, bias_strength=0.35, noise=0.0, **POSE)
    image = scan.nib_to_ants(ph.image)
    corrected, params = n4.n4_correct(image, None, FAST["n4"])
    truth = np.asarray(ph.brain_mask.dataobj) > 0
    clean = np.asarray(ph.image.dataobj) / ph.bias_field
    inside = truth & (clean > 0.05 * clean.max())

    def spread(array):  # sd of the log ratio to the bias-free scan inside the brain (0 = perfect up to scale)
        return float(np.std(np.log(array[inside] / clean[inside])))

    before, after = spread(np.asarray(ph.image.dataobj)), spread(corrected.numpy())
    assert after < 0.5 * before, (before, after)
    assert params["mask"] == "head" and params["fit_voxel_mm"] == 8.0


@pytest.mark.slow
def test_registration_recovers_the_planted_pose(head, nlin6_brain):
    ph, _ = head
    template, template_mask = templates.load_template(nlin6_brain, VOXEL)
    image, truth = scan.nib_to_ants(ph.image), scan.nib_to_ants(ph.brain_mask)
    reg = register.register(image, template, template_mask, fast()["registration"], _scratch(), moving_mask=truth)
    error = phantom.pose_error_mm(register.affine_matrix(reg.transform_file), ph.pose, phantom.brain_points_ras(8))
    assert error < 1.5, f"mean error {error:.2f} mm at {VOXEL} mm voxels"


@pytest.mark.slow
def test_registration_is_reproducible_with_its_seed(head, nlin6_brain, scan_dir):
    """The seed reaches ANTs (antspyx 0.6 drops a random_seed= keyword silently): on one ITK thread (what
    `ldae preprocess --threads 1` sets before ITK starts) the same scan twice -> the same transform, and the global
    seed is restored afterwards. ITK reads its thread count once per process, hence the subprocess."""
    _, path = head
    code = f"""
import json, numpy as np, ants
from ldae.preprocess import register, scan, templates
import nibabel as nib
tpl = json.loads({json.dumps(nlin6_brain)!r})
template, template_mask = templates.load_template(tpl, {VOXEL})
image = scan.nib_to_ants(nib.load({path!r}))
truth = scan.nib_to_ants(nib.load({str(scan_dir / "head_mask.nii.gz")!r}))
cfg = {{**json.loads({json.dumps(fast()["registration"])!r}), "sampling_rate": 0.1}}
mats = [register.affine_matrix(register.register(image, template, template_mask, cfg, {str(scan_dir)!r} + f"/seed{{i}}",
        moving_mask=truth, seed=7).transform_file) for i in range(2)]
print(json.dumps({{"diff": float(np.abs(mats[0] - mats[1]).max()), "seed_after": ants.config._random_seed}}))
"""
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"diff": 0.0, "seed_after": None}, result


def _scratch():
    import tempfile

    return tempfile.mkdtemp(prefix="ldae-test-reg-")


@pytest.mark.slow
def test_deepbet_skull_strip_dice(head):
    ph, _ = head
    mask, params = skullstrip.brain_mask(scan.nib_to_ants(ph.image), {"method": "deepbet", "device": "cpu"})
    assert qc.dice(mask, scan.nib_to_ants(ph.brain_mask)) >= 0.9
    assert params["tool"].startswith("deepbet") and params["device"] == "cpu"


@pytest.mark.slow
def test_template_skull_strip_dice(head, nlin6_brain, tmp_path):
    """Method 'template' (register first): the template mask carried back to the scan matches the truth."""
    ph, path = head
    cfg = fast(
        steps=["n4", "register", "skullstrip"],
        skullstrip={"method": "template"},
        registration={**FAST["registration"], **nlin6_brain, "space": "NLin6Brain"},
    )
    record = pipeline.preprocess_session(path, "sub-01", "ses-M000", str(tmp_path), cfg, threads=2)
    assert record["status"] == "pass", record["reason"]
    paths = naming.preproc_paths(tmp_path, "sub-01", "ses-M000", "NLin6Brain")
    template, template_mask = templates.load_template(cfg["registration"], VOXEL)
    reg = register.Registration([paths.transform], [paths.transform], [True], paths.transform)
    native = register.mask_to_scan(template_mask, reg, scan.nib_to_ants(ph.image))
    assert qc.dice(native, scan.nib_to_ants(ph.brain_mask)) >= 0.9
    # brain volume is measured in the scan's own space (planted scale: volume / det)
    truth_ml = float(np.asarray(ph.brain_mask.dataobj).sum()) * VOXEL**3 / 1000
    assert abs(record["metrics"]["brain_volume_ml"] - truth_ml) / truth_ml < 0.1


# ---- the per-session command --------------------------------------------------------------------------------
@pytest.mark.slow
def test_pass_writes_every_derivative(passed):
    record, root = passed
    assert record["status"] == "pass", record["reason"]
    paths = naming.preproc_paths(root, "sub-ADNI011S0002", "ses-M000", "MNI152NLin2009aSym")
    for path in (paths.image, paths.mask, paths.transform, paths.sidecar, paths.qc_png, paths.qc_json):
        assert os.path.getsize(path) > 0, path
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
    image, mask = nib.load(paths.image), nib.load(paths.mask)
    template, _ = templates.load_template({}, VOXEL)
    assert image.shape == template.shape and mask.shape == template.shape
    assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}
    assert float(np.asarray(image.dataobj)[np.asarray(mask.dataobj) == 0].max()) == 0.0  # skull stripped
    assert record["metrics"]["similarity"] > 0.7
    assert 1500 < record["metrics"]["brain_volume_ml"] < 2300
    sidecar = json.loads(Path(paths.sidecar).read_text())
    assert sidecar["SkullStripped"] is True
    assert sidecar["Sources"] == ["bids::sub-ADNI011S0002/ses-M000/anat/sub-ADNI011S0002_ses-M000_T1w.nii.gz"]
    assert sidecar["Steps"] == ["n4", "skullstrip", "register"]
    assert set(sidecar["StepParameters"]) == {"n4", "skullstrip", "registration"}
    assert sidecar["StepParameters"]["registration"]["type"] == "affine"
    assert sidecar["Configuration"]["registration"]["min_similarity"] == 0.5
    assert {"antspyx", "deepbet", "ldae"} <= set(sidecar["ToolVersions"])
    assert sidecar["SpatialReference"] == templates.DEFAULT_TEMPLATE_URI  # BIDS: one string (URI)
    assert sidecar["Template"]["space"] == "MNI152NLin2009aSym"
    qc_record = json.loads(Path(paths.qc_json).read_text())
    assert qc_record["outputs"]["image"] == os.path.relpath(paths.image, root)
    png = Path(paths.qc_png).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_derivatives_pass_the_bids_validator(passed, tmp_path):
    """The official BIDS validator (bids-validator-deno, offline) finds no error in the derivatives dataset."""
    record, passed_root = passed
    root = tmp_path / "ldae-preproc"  # a copy: other tests list what the shared run left
    shutil.copytree(passed_root, root)
    description.write_description(str(root), "../../bids")
    validator = Path(sys.executable).with_name("bids-validator-deno")
    result = subprocess.run(
        [str(validator), "--format", "json", str(root)], capture_output=True, text=True, timeout=300
    )
    report = json.loads(result.stdout)
    errors = [
        (i["code"], i.get("subCode"), i.get("location")) for i in report["issues"]["issues"] if i["severity"] == "error"
    ]
    assert errors == [], errors
    assert result.returncode == 0, result.stderr[-2000:]
    # and it does see our files (a dataset it ignored wholesale would pass too)
    bogus = Path(root) / "sub-ADNI011S0002" / "ses-M000" / "anat" / "sub-ADNI011S0002_ses-M000_bogus-x_T1w.nii.gz"
    shutil.copyfile(naming.preproc_paths(root, "sub-ADNI011S0002", "ses-M000", "MNI152NLin2009aSym").image, bogus)
    try:
        report = json.loads(
            subprocess.run(
                [str(validator), "--format", "json", str(root)], capture_output=True, text=True, timeout=300
            ).stdout
        )
    finally:
        bogus.unlink()
    assert any(i["severity"] == "error" and "bogus" in str(i.get("location")) for i in report["issues"]["issues"])


def _bad_inputs(folder: Path, head_path: str) -> dict[str, tuple[str, str]]:
    """{case: (path, expected reason pattern)} — each a cheap file that must be excluded."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    cases = {}
    corrupt = folder / "corrupt.nii.gz"
    corrupt.write_bytes(b"this is not a NIfTI file" * 10)
    cases["corrupt"] = (str(corrupt), "unreadable|corrupt")
    truncated = folder / "truncated.nii.gz"
    truncated.write_bytes(Path(head_path).read_bytes()[:5000])
    cases["truncated"] = (str(truncated), "unreadable|corrupt")
    four_d = folder / "fourd.nii.gz"
    nib.Nifti1Image(np.ones((20, 20, 20, 3), np.float32), affine).to_filename(str(four_d))
    cases["4-D"] = (str(four_d), "not a 3-D image")
    zeros = folder / "zeros.nii.gz"
    nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), affine).to_filename(str(zeros))
    cases["all-zero"] = (str(zeros), "empty image")
    nan = folder / "nan.nii.gz"
    data = np.asarray(nib.load(head_path).dataobj, dtype=np.float32).copy()
    data[10:12, 10:12, 10:12] = np.nan
    nib.Nifti1Image(data, nib.load(head_path).affine).to_filename(str(nan))
    cases["NaN"] = (str(nan), "non-finite")
    absurd = folder / "absurd.nii.gz"
    nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.diag([40.0, 40.0, 40.0, 1.0])).to_filename(str(absurd))
    cases["absurd voxel"] = (str(absurd), "absurd voxel size")
    tiny = folder / "tiny_voxels.nii.gz"
    nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.diag([0.01, 0.01, 0.01, 1.0])).to_filename(str(tiny))
    cases["tiny voxel"] = (str(tiny), "absurd voxel size")
    cases["missing"] = (str(folder / "missing.nii.gz"), "missing")
    return cases


def test_bad_inputs_are_excluded_and_leave_nothing(head, scan_dir, tmp_path):
    for case, (path, reason) in _bad_inputs(scan_dir, head[1]).items():
        root = tmp_path / case.replace(" ", "_")
        record = pipeline.preprocess_session(path, "sub-01", "ses-M000", str(root), fast(), threads=1)
        assert record["status"] == "excluded", case
        assert re.search(reason, record["reason"]), (case, record["reason"])
        files = sorted(p.name for p in root.rglob("*") if p.is_file())
        assert files == ["sub-01_ses-M000_desc-qc_T1w.json"], (case, files)


@pytest.mark.slow
def test_registration_failure_is_excluded_and_rerun_cleans(passed, head):
    """A pass, then a rerun that fails QC (similarity threshold unreachable): nothing of the pass survives."""
    record, root = passed
    paths = naming.preproc_paths(root, "sub-ADNI011S0002", "ses-M000", "MNI152NLin2009aSym")
    import shutil

    copy = root.parent / (root.name + "-rerun")
    shutil.copytree(root, copy)
    cfg = fast(
        steps=["n4", "register", "skullstrip"],
        skullstrip={"method": "template"},
        registration={**FAST["registration"], "min_similarity": 0.999},
    )
    again = pipeline.preprocess_session(head[1], "sub-ADNI011S0002", "ses-M000", str(copy), cfg, threads=2)
    assert again["status"] == "excluded"
    assert again["reason"].startswith("registration failed: similarity to template")
    assert again["metrics"]["similarity"] < 0.999
    left = sorted(p.name for p in copy.rglob("*") if p.is_file())
    assert left == [os.path.basename(paths.qc_json)], left


def test_a_tool_crash_excludes_with_the_step(head, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("Registration failed with error code 1")

    monkeypatch.setattr(register, "register", boom)
    cfg = fast(steps=["register", "skullstrip"], skullstrip={"method": "template"})
    record = pipeline.preprocess_session(head[1], "sub-01", "ses-M000", str(tmp_path), cfg, threads=1)
    assert record["status"] == "excluded"
    assert record["reason"].startswith("register failed (RuntimeError: Registration failed")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["sub-01_ses-M000_desc-qc_T1w.json"]


def test_antspynet_needs_its_cache_and_package(tmp_path, head):
    with pytest.raises(skullstrip.SkullStripConfigError, match="antspynet_cache"):
        skullstrip.check_method({"method": "antspynet", "antspynet_cache": ""})
    with pytest.raises(skullstrip.SkullStripConfigError, match="missing or empty"):
        skullstrip.check_method({"method": "antspynet", "antspynet_cache": str(tmp_path / "nowhere")})
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "brainExtractionRobustT1.h5").write_bytes(b"0")
    with pytest.raises(skullstrip.SkullStripConfigError, match="antspynet package, which is not installed"):
        skullstrip.check_method({"method": "antspynet", "antspynet_cache": str(cache)})
    # through the command: a setup error fails the job (exit 2) instead of excluding the session
    cfg = json.dumps(fast(skullstrip={"method": "antspynet", "antspynet_cache": str(cache)}))
    root = tmp_path / "d"
    code = pipeline.main(
        [
            "--t1w",
            head[1],
            "--participant-id",
            "sub-01",
            "--session-id",
            "ses-M000",
            "--derivatives",
            str(root),
            "--config-json",
            cfg,
        ]
    )
    assert code == 2
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


# ---- the cohort table ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cohort_qc_table_and_summary(passed, head, scan_dir, capsys):
    record, root = passed
    bad = _bad_inputs(scan_dir, head[1])
    for session, case in (("M006", "NaN"), ("M012", "4-D")):
        pipeline.preprocess_session(bad[case][0], "sub-ADNI011S0002", f"ses-{session}", str(root), fast(), threads=1)
    sessions = root / "sessions.tsv"
    sessions.write_text(
        "participant_id\tsession_id\tt1w\n"
        + "".join(f"sub-ADNI011S0002\tses-{s}\tx\n" for s in ("M000", "M006", "M012"))
    )
    out = root / "qc.tsv"
    montage = root / "figures" / "qc_montage.png"
    code = qc.main(
        [
            "--sessions",
            str(sessions),
            "--derivatives",
            str(root),
            "--out",
            str(out),
            "--montage",
            str(montage),
            "--config-json",
            pipeline.rule_params(pipeline.resolve_config(fast())),
        ]
    )
    assert code == 0
    import pandas as pd

    table = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    head = "participant_id session_id status reason similarity brain_volume_ml"
    assert list(table.columns[:6]) == head.split()
    assert "preproc" in table.columns and len(table) == 3
    ok = table[table.status == "pass"].iloc[0]
    assert (root / ok.preproc).is_file() and not os.path.isabs(ok.preproc)
    excluded = table[table.status == "excluded"]
    assert set(excluded.session_id) == {"ses-M006", "ses-M012"} and (excluded.preproc == "").all()
    assert excluded.reason.str.len().min() > 5
    stdout = capsys.readouterr().out
    assert "preprocess QC: 1 of 3 sessions passed, 2 excluded" in stdout
    assert montage.read_bytes()[:4] == b"\x89PNG"


def test_cli_verbs_dispatch(tmp_path, scan_dir, head):
    from ldae import cli

    path = _bad_inputs(scan_dir, head[1])["all-zero"][0]
    code = cli.main(
        [
            "preprocess",
            "--t1w",
            path,
            "--participant-id",
            "sub-02",
            "--session-id",
            "ses-M000",
            "--derivatives",
            str(tmp_path),
            "--config-json",
            json.dumps(fast()),
        ]
    )
    assert code == 0
    record = json.loads(Path(naming.preproc_paths(tmp_path, "02", "M000", "MNI152NLin2009aSym").qc_json).read_text())
    assert record["status"] == "excluded"


@pytest.mark.slow
def test_syn_registration_writes_a_composite_transform(head, tmp_path):
    """type 'syn' (the authors' choice): affine + SyN, one composite .h5 forward transform."""
    cfg = fast(
        steps=["register", "skullstrip"],
        skullstrip={"method": "template"},
        registration={**FAST["registration"], "type": "syn", "syn_iterations": [20, 0]},
    )
    record = pipeline.preprocess_session(head[1], "sub-01", "ses-M000", str(tmp_path), cfg, threads=2)
    assert record["status"] == "pass", record["reason"]
    paths = naming.preproc_paths(tmp_path, "sub-01", "ses-M000", "MNI152NLin2009aSym", "syn")
    assert paths.transform.endswith("_xfm.h5") and os.path.getsize(paths.transform) > 0
    assert record["outputs"]["transform"].endswith(".h5")
    sidecar = json.loads(Path(paths.sidecar).read_text())
    assert sidecar["StepParameters"]["registration"]["ants_type_of_transform"] == "SyN"
    # the mask carried back through the inverse composite lands on the head's brain
    truth_ml = float(np.asarray(head[0].brain_mask.dataobj).sum()) * VOXEL**3 / 1000
    assert abs(record["metrics"]["brain_volume_ml"] - truth_ml) / truth_ml < 0.15


@pytest.mark.slow
def test_a_write_failure_fails_the_job_and_leaves_nothing(head, tmp_path, monkeypatch):
    """Disk trouble is not the scan's fault: the job fails (Snakemake reruns it), no session is excluded."""

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(qc, "qc_picture", full_disk)
    cfg = fast(steps=["register", "skullstrip"], skullstrip={"method": "template"})
    with pytest.raises(OSError, match="No space left"):
        pipeline.preprocess_session(head[1], "sub-01", "ses-M000", str(tmp_path), cfg, threads=2)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
