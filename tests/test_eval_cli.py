"""The evaluation verbs end to end on a tiny cohort: model folders in the training rules' formats (loaded by
ldae.models.io), both baselines trained by their verbs, then embed -> probe / reconstruct / interpolate /
manipulate / time-inference -> results README. Everything in-process, 16^3 volumes, a few DDIM steps."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ldae import cli
from ldae.data.tables import write_tsv_atomic
from ldae.evaluation.embed import load_embeddings
from ldae.evaluation.probes import TRIVIAL_ROW
from ldae.evaluation.tables import read_table
from ldae.models import GradientEstimator, build_autoencoder, build_ldm_unet
from ldae.models.semantic_encoder import SemanticEncoder

from helpers.tiny_models import TINY_AE, TINY_DAE, TINY_ENC, TINY_LDM, perturb

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*(srun|LeafSpec|many workers|Experiment logs|backbone weights).*")

SHAPE = (16, 16, 16)
ENCODER_SECTION = {**TINY_ENC}
TRAIN = {
    "max_epochs": 1,
    "max_steps": 2,
    "batch_size": 2,
    "num_workers": 0,
    "checkpoint_every_n_steps": 50,
    "log_every_n_steps": 1,
    "val_every_n_epochs": 1,
    "precision": "32-true",
}


def simple_transform(_cfg):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

    return Compose(
        [LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"), ScaleIntensityd(keys="image", minv=0.0, maxv=1.0)]
    )


def phantom(rng, diagnosis, months):
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    d = ((grid / 0.75) ** 2).sum(0)
    core = 0.25 + (0.1 if diagnosis == "AD" else 0.0) + 0.002 * months  # planted atrophy: a larger dark core
    v = (d < 1) * 0.8 - (d < core) * 0.5 + 0.05 * rng.random(SHAPE)
    return np.clip(v, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    rng = np.random.default_rng(0)
    subjects = []
    plan = [("test", "none")] * 4 + [("val", "none")] + [("train", "probe_train")] * 6 + [("train", "probe_val")] * 3
    for i, (split, probe) in enumerate(plan):
        subjects.append(
            {
                "participant_id": f"sub-ADNI{i:03d}",
                "diagnosis": ["CN", "AD", "MCI"][i % 3],
                "split": split,
                "probe_split": probe,
            }
        )
    sessions, qc = [], []
    for s in subjects:
        for v, months in enumerate((0, 6, 12)):
            sid = f"ses-M{months:02d}"
            rel = f"{s['participant_id']}/{sid}/anat/{s['participant_id']}_{sid}_desc-preproc_T1w.nii.gz"
            path = root / "derivatives" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(phantom(rng, s["diagnosis"], months), np.diag([2.0, 2.0, 2.0, 1.0])), path)
            sessions.append(
                {
                    "participant_id": s["participant_id"],
                    "session_id": sid,
                    "months": months,
                    "age": 70.0 + v * 0.5 + int(s["participant_id"][-3:]),
                    "sex": "F",
                    "diagnosis": s["diagnosis"],
                    "t1w": "x",
                }
            )
            qc.append({"participant_id": s["participant_id"], "session_id": sid, "status": "pass", "preproc": rel})
    write_tsv_atomic(pd.DataFrame(sessions), root / "sessions.tsv")
    write_tsv_atomic(
        pd.DataFrame([{**s, "baseline_diagnosis": s["diagnosis"], "n_sessions": 3} for s in subjects])[
            ["participant_id", "baseline_diagnosis", "n_sessions", "split", "probe_split"]
        ],
        root / "splits.tsv",
    )
    write_tsv_atomic(pd.DataFrame(qc), root / "derivatives" / "qc.tsv")

    # trained-model folders in the formats of the training rules (ldae.models.io reads them)
    torch.manual_seed(0)
    models = root / "models"
    ae = build_autoencoder(TINY_AE)
    ldm = perturb(build_ldm_unet(TINY_LDM))
    est = perturb(GradientEstimator(ldm, y_dim=TINY_ENC["y_dim"]), 1)
    enc = SemanticEncoder(TINY_ENC)
    for name in ("autoencoder", "latents", "ldm", "ldae"):
        (models / name).mkdir(parents=True)
    torch.save(ae.state_dict(), models / "autoencoder" / "weights.pt")
    (models / "autoencoder" / "config.yaml").write_text(
        yaml.safe_dump({"stage": "autoencoder", "config": {"network": TINY_AE}})
    )
    (models / "latents" / "scale.json").write_text(json.dumps({"scale_factor": 1.5}))
    ldm_cfg = {"network": TINY_LDM, "diffusion": {"num_train_timesteps": 1000}}
    torch.save(ldm.state_dict(), models / "ldm" / "weights.pt")
    (models / "ldm" / "config.yaml").write_text(yaml.safe_dump({"stage": "ldm", "config": ldm_cfg}))
    weights = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    weights.update({f"estimator.{k}": v for k, v in est.state_dict().items() if not k.startswith("ldm.")})
    torch.save(weights, models / "ldae" / "weights.pt")
    (models / "ldae" / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "stage": "ldae",
                "ldm": ldm_cfg,
                "config": {
                    "encoder": TINY_ENC,
                    "guidance": "score",
                    "estimator": {"share_middle_block": False, "init_branch_from_ldm": False, "dropout": 0.0},
                },
            }
        )
    )
    return root


@pytest.fixture(autouse=True)
def transforms(monkeypatch):
    import ldae.data.images as images

    monkeypatch.setattr(images, "build_transforms", simple_transform)


def run(verb, *args):
    assert cli.main([verb, *map(str, args)]) == 0


def data_args(root):
    return ["--qc", root / "derivatives/qc.tsv", "--sessions", root / "sessions.tsv", "--splits", root / "splits.tsv"]


def ldae_args(root):
    m = root / "models"
    return ["--autoencoder", m / "autoencoder", "--latents", m / "latents", "--ldm", m / "ldm", "--ldae", m / "ldae"]


def manipulate_outputs(res, table, figure_cn, figure_ad, volumes):
    """`ldae manipulate`'s output arguments, the files named in the folder ``res``."""
    names = {"--table": table, "--figure-cn": figure_cn, "--figure-ad": figure_ad, "--volumes": volumes}
    return [arg for option, name in names.items() for arg in (option, res / name)]


def ldae_embeddings(root):
    """The LDAE's embeddings of the trained cohort (2 DDIM steps), computed unless an earlier test did."""
    emb = root / "embeddings" / "ldae.npz"
    if not emb.is_file():
        run(
            "embed",
            "--model",
            "ldae",
            *data_args(root),
            *ldae_args(root),
            "--out",
            emb,
            "--config",
            json.dumps({"ddim_steps": 2}),
        )
    return emb


@pytest.fixture(scope="module")
def trained(cohort):
    root = cohort
    import ldae.data.images as images

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "build_transforms", simple_transform)
        dae_cfg = {
            "network": {k: v for k, v in TINY_DAE.items() if k != "y_dim"},
            "shape": [8, 8, 8],
            "val_ddim_steps": 2,
            "cache": "none",
            "train": TRAIN,
        }
        run(
            "train-dae",
            "--out-dir",
            root / "models/dae",
            *data_args(root),
            "--config",
            json.dumps(dae_cfg),
            "--encoder",
            json.dumps(ENCODER_SECTION),
            "--ddim",
            json.dumps({"grid": "exact"}),
        )
        for task in ("ad", "age"):
            run(
                "train-supervised",
                "--task",
                task,
                "--out-dir",
                root / f"models/supervised_{task}",
                *data_args(root),
                "--config",
                json.dumps({"cache": "none", "lr": 1e-3, "train": TRAIN}),
                "--encoder",
                json.dumps(ENCODER_SECTION),
            )
    return root


def test_baselines_trained_and_loadable(trained):
    from ldae.models.io import load_dae, load_supervised

    m = trained / "models"
    for name in ("dae", "supervised_ad", "supervised_age"):
        assert {"weights.pt", "config.yaml", "summary.json", "metrics.csv"} <= {p.name for p in (m / name).iterdir()}
    dae = load_dae(m / "dae")
    assert dae.shape == (8, 8, 8) and not any(p.requires_grad for p in dae.dae.parameters())
    # the validation sampler's settings (--ddim) are recorded and reused; an evaluation rule passes its own
    assert yaml.safe_load((m / "dae/config.yaml").read_text())["ddim"] == {"clip_x0": [-1.0, 1.0], "grid": "exact"}
    assert dae.ddim.grid == "exact" and load_dae(m / "dae", ddim={"clip_x0": None}).ddim.clip_x0 is None
    sup = load_supervised(m / "supervised_age")
    summary = json.loads((m / "supervised_age/summary.json").read_text())
    assert summary["target"]["mean"] > 60  # age z-scored with probe_train statistics, recorded
    cfg = yaml.safe_load((m / "supervised_age/config.yaml").read_text())
    assert cfg["encoder"]["y_dim"] == TINY_ENC["y_dim"] and cfg["task"] == "age"
    assert sup(torch.rand(1, 1, *SHAPE)).shape == (1, 1)


@pytest.mark.slow
def test_evaluation_verbs_end_to_end(trained):
    root = trained
    emb, res = root / "embeddings", root / "results"
    run(
        "embed",
        "--model",
        "ldae",
        *data_args(root),
        *ldae_args(root),
        "--out",
        emb / "ldae.npz",
        "--config",
        json.dumps({"ddim_steps": 3, "batch_size": 4}),
        "--ddim",
        json.dumps({"clip_x0": None}),
    )
    for name in ("dae", "supervised_ad", "supervised_age"):
        run(
            "embed",
            "--model",
            name,
            "--model-dir",
            root / "models" / name,
            *data_args(root),
            "--out",
            emb / f"{name}.npz",
        )
    ldae = load_embeddings(emb / "ldae.npz")
    assert len(ldae.ids) == 14 * 3 and len(ldae.extra["rows"]) == 4 * 3 and int(ldae.extra["steps"]) == 3
    assert json.loads(str(ldae.extra["ddim"])) == {"clip_x0": None, "grid": "authors"}  # the inversion's settings

    run(
        "probe",
        "--sessions",
        root / "sessions.tsv",
        "--splits",
        root / "splits.tsv",
        "--embeddings",
        *(f"{n}={emb / n}.npz" for n in ("ldae", "dae", "supervised_ad", "supervised_age")),
        "--config",
        json.dumps({"classifier_epochs": 5, "regressor_epochs": 5}),
        "--table",
        res / "tables/table7_linear_probes.tsv",
        "--history",
        res / "probes/history.tsv",
        "--figure",
        res / "figures/figure5_lda.png",
    )
    t7 = read_table(res / "tables/table7_linear_probes.tsv")
    assert list(t7.Model) == ["LDAE", "DAE", "Supervised encoder", TRIVIAL_ROW]
    assert t7[["Accuracy", "ROC-AUC", "MAE"]].notna().all().all()
    assert (t7.MAE_ci_low <= t7.MAE_ci_high).all() and t7.Accuracy_ci_high.notna().all()
    md7 = (res / "tables/table7_linear_probes.md").read_text()
    assert "Paper (Lozupone et al. 2025)" in md7 and "subject-level bootstrap interval" in md7
    first = t7.iloc[0]
    assert f"{first.MAE:.4f} [{first.MAE_ci_low:.4f}, {first.MAE_ci_high:.4f}]" in md7

    run(
        "reconstruct",
        *data_args(root),
        *ldae_args(root),
        "--dae",
        root / "models/dae",
        "--config",
        json.dumps({"steps": [2, 3], "max_sessions": 2}),
        "--table",
        res / "tables/table6_reconstruction.tsv",
        "--per-session",
        res / "reconstruction/per_session.tsv",
        "--figure",
        res / "figures/table6_examples.png",
    )
    t6 = read_table(res / "tables/table6_reconstruction.tsv")
    assert len(t6) == 1 + 5 * 2 and t6.LPIPS.isna().all() and t6.n.eq(2).all()
    assert (t6.SSIM_ci_low <= t6.SSIM_ci_high).all() and t6.MSE_ci_low.notna().all()
    assert "n/a" in (res / "tables/table6_reconstruction.md").read_text()

    run(
        "interpolate",
        "--sessions",
        root / "sessions.tsv",
        "--splits",
        root / "splits.tsv",
        *ldae_args(root),
        "--embeddings",
        emb / "ldae.npz",
        "--table",
        res / "tables/figure8_interpolation.tsv",
        "--triplets",
        res / "interpolation/triplets.tsv",
        "--figure",
        res / "figures/figure8_interpolation.png",
    )
    trip = pd.read_csv(res / "interpolation/triplets.tsv", sep="\t")
    assert len(trip) == 4 and trip.alpha.eq(0.5).all()  # 4 test subjects x one (0, 6, 12) triplet
    f8 = read_table(res / "tables/figure8_interpolation.tsv")
    assert {"ssim_ci_low", "ssim_ci_high", "nearest_mse_ci_low", "ssim_gain"} <= set(f8.columns)

    run(
        "manipulate",
        *data_args(root),
        *ldae_args(root),
        "--embeddings",
        emb / "ldae.npz",
        "--config",
        json.dumps({"scales": [0, 2], "ddim_steps": 2}),
        "--probe-config",
        json.dumps({"classifier_epochs": 5}),
        "--table",
        res / "tables/figure67_manipulation.tsv",
        "--figure-cn",
        res / "figures/figure6_manipulation_cn.png",
        "--figure-ad",
        res / "figures/figure7_manipulation_ad.png",
        "--volumes",
        res / "manipulation",
    )
    man = read_table(res / "tables/figure67_manipulation.tsv")
    assert set(man.diagnosis) == {"AD", "CN"} and set(man.towards) == {"AD", "CN"}
    vols = sorted((res / "manipulation").glob("*.nii.gz"))
    assert len(vols) == 2
    img = nib.load(vols[0])
    assert img.shape == (*SHAPE, 2) and np.allclose(np.diag(img.affine)[:3], 2.0)  # template-space affine kept

    bench = root / "bench.tsv"
    bench.write_text("s\th:m:s\n7200\t2:00:00\n")
    run(
        "time-inference",
        *data_args(root),
        *ldae_args(root),
        "--dae",
        root / "models/dae",
        "--reconstruction",
        res / "tables/table6_reconstruction.tsv",
        "--config",
        json.dumps({"steps": 3, "repeats": 1, "warmup": 0}),
        "--benchmarks-ldae",
        bench,
        "--benchmarks-dae",
        "--table",
        res / "tables/table5_efficiency.tsv",
    )
    t5 = read_table(res / "tables/table5_efficiency.tsv")
    assert list(t5.Model) == ["LDAE", "DAE"] and t5["Training (h)"][0] == pytest.approx(2.0)
    assert set(t5.Precision) == {"fp32 (CPU)"}
    assert t5.Parameters[0] < t5.Parameters[0] + t5["AE parameters (not counted)"][0]  # the AE is apart
    assert (t5["Seconds per reconstruction"] > 0).all() and t5["speed-up vs DAE"][1] == pytest.approx(1.0)
    assert not np.isnan(t5.SSIM[0])  # from Table 6 at T = 3

    tables = [
        res / f"tables/{s}.md"
        for s in (
            "table5_efficiency",
            "table6_reconstruction",
            "table7_linear_probes",
            "figure8_interpolation",
            "figure67_manipulation",
        )
    ]
    run("results-readme", "--tables", *tables, "--figures", res / "figures/figure5_lda.png", "--out", res / "README.md")
    readme = (res / "README.md").read_text()
    assert readme.count("Paper (Lozupone et al. 2025)") >= 4 and "](figures/figure5_lda.png)" in readme
    assert "## The paper's claims in this run" in readme and "- LDAE ROC-AUC = 0.8948: " in readme


def test_tiny_cohort_degrades_to_na(trained, tmp_path):
    """A cohort too small for a probe or a triplet: the tables say n/a with the reason, figures say why; no crash."""
    root, res = trained, tmp_path / "results"
    emb = ldae_embeddings(root)
    sessions = pd.read_csv(root / "sessions.tsv", sep="\t")
    splits = pd.read_csv(root / "splits.tsv", sep="\t")
    test_ids = set(splits.participant_id[splits.split == "test"])
    sessions = sessions[~(sessions.participant_id.isin(test_ids) & (sessions.months == 12))]  # 2 visits only
    sessions.loc[sessions.diagnosis == "AD", "diagnosis"] = "MCI"  # no AD anywhere: no AD-vs-CN probe
    write_tsv_atomic(sessions, tmp_path / "sessions.tsv")
    small = ["--sessions", tmp_path / "sessions.tsv", "--splits", root / "splits.tsv"]
    run(
        "probe",
        *small,
        "--embeddings",
        f"ldae={emb}",
        "--config",
        json.dumps({"regressor_epochs": 3}),
        "--table",
        res / "t7.tsv",
        "--history",
        res / "h.tsv",
        "--figure",
        res / "f5.png",
    )
    t7 = read_table(res / "t7.tsv")
    assert np.isnan(t7.Accuracy[0]) and not np.isnan(t7.MAE[0]) and "single diagnosis" in t7.note[0]
    run(
        "interpolate",
        *small,
        *ldae_args(root),
        "--embeddings",
        emb,
        "--table",
        res / "f8.tsv",
        "--triplets",
        res / "trip.tsv",
        "--figure",
        res / "f8.png",
    )
    assert read_table(res / "f8.tsv").n[0] == 0 and (res / "f8.png").is_file()
    run(
        "manipulate",
        "--qc",
        root / "derivatives/qc.tsv",
        *small,
        *ldae_args(root),
        "--embeddings",
        emb,
        *manipulate_outputs(res, "m.tsv", "f6.png", "f7.png", "vol"),
    )
    assert "no AD-vs-CN probe direction" in (res / "m.md").read_text() and (res / "f6.png").is_file()
    # a supervised AD model without both classes in probe_train: published untrained, never a crash
    import ldae.data.images as images

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "build_transforms", simple_transform)
        run(
            "train-supervised",
            "--task",
            "ad",
            "--out-dir",
            tmp_path / "sup",
            "--qc",
            root / "derivatives/qc.tsv",
            *small,
            "--config",
            json.dumps({"cache": "none", "train": TRAIN}),
            "--encoder",
            json.dumps(ENCODER_SECTION),
        )
    summary = json.loads((tmp_path / "sup/summary.json").read_text())
    assert summary["trained"] is False and "single diagnosis" in summary["reason"]


def test_manipulate_with_the_authors_probe(trained, tmp_path):
    """The authors' AD-vs-CN probe (Linear checkpoint + z-score mean/std), imported into our probe file, drives
    `ldae manipulate --probe-file` instead of a probe trained here; the table's codes are scored by that probe."""
    from ldae.evaluation.probe_file import write_official_probe

    root, res = trained, tmp_path / "results"
    emb = ldae_embeddings(root)
    y = load_embeddings(emb).y.astype(np.float64)
    gen = torch.Generator().manual_seed(3)
    dim = y.shape[1]
    torch.save(
        {"state_dict": {"model.weight": torch.randn(1, dim, generator=gen), "model.bias": torch.zeros(1)}, "epoch": 3},
        tmp_path / "disease_classifier.ckpt",
    )
    torch.save(torch.from_numpy(y.mean(0)), tmp_path / "semantic_mean.pt")
    torch.save(torch.from_numpy(y.std(0) + 1e-3), tmp_path / "semantic_std.pt")
    write_official_probe(
        tmp_path / "disease_classifier.ckpt",
        tmp_path / "semantic_mean.pt",
        tmp_path / "semantic_std.pt",
        tmp_path / "probe.pt",
    )
    run(
        "manipulate",
        *data_args(root),
        *ldae_args(root),
        "--embeddings",
        emb,
        "--probe-file",
        tmp_path / "probe.pt",
        "--config",
        json.dumps({"scales": [0, 3], "ddim_steps": 2}),
        *manipulate_outputs(res, "m.tsv", "f6.png", "f7.png", "vol"),
    )
    man = read_table(res / "m.tsv")
    assert set(man.diagnosis) == {"AD", "CN"} and f"Probe: {tmp_path / 'probe.pt'}" in (res / "m.md").read_text()
    cn = man[man.diagnosis == "CN"].sort_values("scale").p_positive_code.to_numpy()
    ad = man[man.diagnosis == "AD"].sort_values("scale").p_positive_code.to_numpy()
    assert cn[1] < cn[0] and ad[1] > ad[0]  # moved towards AD (= 0) and towards CN (= 1) along the imported w
    torch.save({"weight": torch.zeros(1, dim + 1), "bias": torch.zeros(1)}, tmp_path / "wide.ckpt")
    torch.save(torch.zeros(dim + 1), tmp_path / "m.pt")
    torch.save(torch.ones(dim + 1), tmp_path / "s.pt")
    write_official_probe(tmp_path / "wide.ckpt", tmp_path / "m.pt", tmp_path / "s.pt", tmp_path / "wide.pt")
    with pytest.raises(SystemExit, match=f"{dim + 1} inputs.*{dim}-d"):
        cli.main(
            [
                "manipulate",
                *map(
                    str,
                    [
                        *data_args(root),
                        *ldae_args(root),
                        "--embeddings",
                        emb,
                        "--probe-file",
                        tmp_path / "wide.pt",
                        *manipulate_outputs(res, "w.tsv", "w6.png", "w7.png", "wv"),
                    ],
                ),
            ]
        )
