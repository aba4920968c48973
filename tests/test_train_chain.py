"""The four training verbs chained on a tiny synthetic cohort of NIfTI files (the real MONAI transforms and
tables): train-autoencoder -> encode-latents -> train-ldm -> train-ldae, then the published folders loaded with
ldae.models.io as evaluation does. Also: disk caching, the scale factor (authors' fixed value by default; 1/std over
TRAINING latents only with scale_factor null), the DDIM settings recorded by train-ldae, absent
pretrained weights recorded, a rerun resuming, and stage 3 refusing a missing stage-2 model."""

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
from ldae.models import io

from helpers.cohort import cohort_args, session_row
from helpers.tiny_models import TINY_AE_GAN, TINY_TRAIN, TINY_UNET

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*(srun|LeafSpec|many workers|Experiment logs|manual optimization).*")

pytestmark = pytest.mark.slow  # the training verbs chained on a cohort: make test, not make test-fast
IMAGES = {"spacing_mm": 2.0, "shape": [16, 16, 16]}
TRAIN = TINY_TRAIN
AE = {
    "network": TINY_AE_GAN,
    "cache": "disk",
    "lr": 1e-3,
    "perceptual_weights": "/nonexistent/squeezenet.pth",
    "train": TRAIN,
}
LDM = {
    "network": TINY_UNET,
    "lr": 1e-3,
    "ema_decay": 0.9,
    "train": TRAIN,
}
LDAE = {
    "encoder": {"backbone": "tiny", "tiny_dims": [8, 24], "tiny_depths": [1, 1], "y_dim": 24, "chunk_size": 8},
    "lr": 1e-3,
    "ema_decay": 0.9,
    "val_ddim_steps": 3,
    "cache": "memory",
    "train": TRAIN,
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """8 subjects x 2 sessions of 16^3 2 mm NIfTI volumes; 5 train, 1 val, 2 test subjects; one session excluded."""
    root = tmp_path_factory.mktemp("chain")
    deriv = root / "derivatives" / "ldae-preproc"
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 16)] * 3, indexing="ij"))
    sessions, qc, splits = [], [], []
    for s in range(8):
        pid = f"sub-ADNI{s:03d}"
        split = "train" if s < 5 else "val" if s == 5 else "test"
        splits.append(
            {
                "participant_id": pid,
                "baseline_diagnosis": "CN",
                "n_sessions": 2,
                "split": split,
                "probe_split": "probe_train" if s < 4 else "probe_val" if s < 5 else "n/a",
            }
        )
        for v, ses in enumerate(("ses-M000", "ses-M012")):
            radius = 0.6 + 0.1 * rng.random()
            volume = (np.linalg.norm(grid, axis=0) < radius).astype(np.float32) * (1 + 0.1 * rng.random((16,) * 3))
            rel = f"{pid}/{ses}/anat/{pid}_{ses}_desc-preproc_T1w.nii.gz"
            (deriv / rel).parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(volume.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), deriv / rel)
            sessions.append(session_row(s, v, "CN"))
            excluded = s == 0 and v == 1
            qc.append(
                {
                    "participant_id": pid,
                    "session_id": ses,
                    "status": "excluded" if excluded else "pass",
                    "reason": "test" if excluded else "",
                    "preproc": "" if excluded else rel,
                }
            )
    pd.DataFrame(sessions).to_csv(root / "sessions.tsv", sep="\t", index=False)
    pd.DataFrame(splits).to_csv(root / "splits.tsv", sep="\t", index=False)
    pd.DataFrame(qc).to_csv(deriv / "qc.tsv", sep="\t", index=False, na_rep="n/a")
    return root


def data_args(root):
    return cohort_args(root, IMAGES)


def run(*argv):
    assert cli.main([str(a) for a in argv]) == 0


def train_ldm(root, out_dir):
    """Stage 2 on the chain's latents, in the run folder every call shares (a second call resumes)."""
    latents, run_dir = root / "models" / "latents", root / "resume/ldm"
    run("train-ldm", "--latents", latents, "--config", json.dumps(LDM), "--out-dir", out_dir, "--run-dir", run_dir)


@pytest.fixture(scope="module")
def chain(cohort):
    root, models = cohort, cohort / "models"
    run(
        "train-autoencoder",
        *data_args(root),
        "--config",
        json.dumps(AE),
        "--out-dir",
        models / "autoencoder",
        "--run-dir",
        root / "resume/ae",
        "--devices",
        0,
    )
    run(
        "encode-latents",
        *data_args(root),
        "--config",
        "{}",
        "--autoencoder",
        models / "autoencoder",
        "--out-dir",
        models / "latents",
    )
    train_ldm(root, models / "ldm")
    run(
        "train-ldae",
        *data_args(root),
        "--config",
        json.dumps(LDAE),
        "--latents",
        models / "latents",
        "--ldm",
        models / "ldm",
        "--autoencoder",
        models / "autoencoder",
        "--out-dir",
        models / "ldae",
        "--run-dir",
        root / "resume/ldae",
        "--ddim",
        json.dumps(OURS_DDIM),
    )
    return root


OURS_DDIM = {"clip_x0": None, "grid": "exact"}


def test_autoencoder_outputs_and_recorded_warning(chain):
    out = chain / "models/autoencoder"
    for name in ("weights.pt", "config.yaml", "metrics.csv", "summary.json", "best.ckpt", "last.ckpt"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["perceptual_enabled"] is False and summary["selected_checkpoint"] == "best.ckpt"
    assert any("perceptual" in w for w in summary["warnings"]) and summary["n_train"] == 9
    metrics = pd.read_csv(out / "metrics.csv")
    assert (metrics["perceptual_enabled"].dropna() == 0).all() and metrics["val/ssim"].notna().any()
    assert any((chain / "resume/ae/cache").iterdir())  # PersistentDataset cache in the run folder
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["stage"] == "autoencoder" and config["images"] == IMAGES


def test_latents_cover_every_passed_session_and_scale_uses_training_latents(chain):
    store = chain / "models/latents"  # the defaults: the authors' posterior samples and fixed scale 0.873
    latents = np.load(store / "latents.npy")
    index = pd.read_csv(store / "index.tsv", sep="\t")
    assert latents.shape == (15, 3, 8, 8, 8) and len(index) == 15  # 16 sessions, 1 excluded by QC
    assert io.load_scale_factor(store) == 0.873
    meta = json.loads((store / "scale.json").read_text())
    assert meta["source"] == "posterior sample" and meta["n_train"] == 9 and "0.873" in meta["scale_source"]
    train = latents[(index.split == "train").to_numpy()]
    assert meta["scaled_train_std"] == pytest.approx(0.873 * train.std(dtype=np.float64), rel=1e-6)
    # ours: posterior means, 1/std over the TRAINING latents
    other = chain / "latents_ours"
    run(
        "encode-latents",
        *data_args(chain),
        "--config",
        json.dumps({"scale_factor": None, "sample": False}),
        "--autoencoder",
        chain / "models/autoencoder",
        "--out-dir",
        other,
    )
    means = np.load(other / "latents.npy")
    train_means = means[(index.split == "train").to_numpy()]
    assert io.load_scale_factor(other) == pytest.approx(1 / train_means.std(ddof=1), rel=1e-5)
    meta = json.loads((other / "scale.json").read_text())
    assert meta["source"] == "posterior mean" and "1/std" in meta["scale_source"]
    assert meta["scaled_train_std"] == pytest.approx(1.0, rel=1e-3)
    assert not np.allclose(means, latents, atol=1e-4)  # samples are not the means


def test_models_load_as_evaluation_loads_them(chain):
    models = chain / "models"
    pipe = io.load_pipeline(models)
    assert pipe.ddim.as_config() == OURS_DDIM  # what train-ldae was given (--ddim) and recorded
    assert yaml.safe_load((models / "ldae/config.yaml").read_text())["ddim"] == OURS_DDIM
    assert io.load_pipeline(models, ddim={"grid": "authors"}).ddim.as_config() == {
        "clip_x0": [-1.0, 1.0],
        "grid": "authors",
    }
    image = torch.rand(1, 1, 16, 16, 16)
    z = pipe.latent(image)
    y = pipe.semantic(image)
    assert z.shape == (1, 3, 8, 8, 8) and y.shape == (1, 24)
    x_T = pipe.invert(z, y, steps=4)
    assert pipe.decode(pipe.sample(x_T, y, steps=4)).shape == image.shape
    assert pipe.sample(torch.randn_like(z), None, steps=2).shape == z.shape  # plain LDM
    summary = json.loads((models / "ldae/summary.json").read_text())
    assert (
        summary["parameters"]["frozen_ldm"]
        == json.loads((models / "ldm/summary.json").read_text())["parameters"]["unet"]
    )
    weights = torch.load(models / "ldae/weights.pt", weights_only=True)
    assert not any(k.startswith("estimator.ldm.") for k in weights)
    assert "val/ssim" in pd.read_csv(models / "ldae/metrics.csv").columns


def test_rerun_resumes_and_stage3_refuses_a_missing_stage2(chain):
    root, models = chain, chain / "models"
    train_ldm(root, root / "ldm_again")
    assert json.loads((root / "ldm_again/summary.json").read_text())["resumed"] is True
    with pytest.raises(FileNotFoundError, match="stage-2 LDM weights not found"):
        cli.main(
            [
                "train-ldae",
                *data_args(root),
                "--config",
                json.dumps(LDAE),
                "--latents",
                str(models / "latents"),
                "--ldm",
                str(root / "nowhere"),
                "--autoencoder",
                str(models / "autoencoder"),
                "--out-dir",
                str(root / "ldae_bad"),
            ]
        )
