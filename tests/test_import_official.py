"""`ldae import-official`: the authors' three files (written here from our own random networks in their layout, at a
tiny size) -> model folders that ldae.models.io and the evaluation load unchanged, computing exactly what the
networks they came from computed; strict errors; the workflow's `pretrained:` mode replaces the training rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

torch.set_num_threads(1)

from ldae import import_official  # noqa: E402
from ldae.models import GradientEstimator, build_autoencoder, build_ldm_unet, io  # noqa: E402
from ldae.models.official import (  # noqa: E402
    autoencoder_state_dict_to_official,
    estimator_state_dict_to_official,
)
from ldae.models.official_encoder import encoder_to_official  # noqa: E402
from ldae.models.semantic_encoder import build_semantic_encoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# the paper's structure at a tiny width (what `--config` sizes the networks with)
TINY_CONFIG = {
    "images": {"spacing_mm": 3.0, "shape": [16, 24, 16]},
    "autoencoder": {
        "network": {
            "channels": [8, 16],
            "num_res_blocks": 1,
            "attention_levels": [False, False],
            "norm_num_groups": 8,
            "latent_channels": 3,
        }
    },
    "ldm": {
        "network": {
            "channels": [16, 32, 32],
            "num_res_blocks": 1,
            "attention_levels": [False, True, True],
            "norm_num_groups": 8,
        }
    },
    "ldae": {
        "encoder": {"backbone": "tiny", "tiny_dims": [8, 16], "tiny_depths": [1, 1], "num_heads": 4, "chunk_size": 8}
    },
    "latents": {"scale_factor": 0.873},
}


def _perturb_all_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Noise on EVERY parameter, so no zero-initialised layer hides a wrong mapping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module.eval()


@pytest.fixture(scope="module")
def authors_files(tmp_path_factory):
    """Random networks of ours + the same weights saved in the authors' released layouts."""
    sections = import_official.resolved_sections(TINY_CONFIG)
    ae = _perturb_all_(build_autoencoder(sections["autoencoder"]["network"]), 1)
    ldm_network = sections["ldm"]["network"]
    enc_cfg = {**sections["ldae"]["encoder"], "pretrained_path": None}
    encoder = _perturb_all_(build_semantic_encoder(enc_cfg), 2)
    estimator = _perturb_all_(GradientEstimator(build_ldm_unet(ldm_network), y_dim=encoder.y_dim), 3)
    folder = tmp_path_factory.mktemp("authors")
    files = {
        "autoencoder": folder / "autoencoderkl.pth",
        "encoder": folder / "encoder.pth",
        "decoder": folder / "decoder.pth",
    }
    torch.save(
        autoencoder_state_dict_to_official(ae.state_dict(), sections["autoencoder"]["network"]), files["autoencoder"]
    )
    torch.save(
        encoder_to_official(encoder.state_dict(), num_slices=TINY_CONFIG["images"]["shape"][2]), files["encoder"]
    )
    torch.save(estimator_state_dict_to_official(estimator.state_dict(), ldm_network, encoder.y_dim), files["decoder"])
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    return {"files": files, "config": config, "ae": ae, "encoder": encoder, "estimator": estimator}


def _run(files: dict, config: Path, out: Path, *extra: str) -> int:
    return import_official.main(
        [
            "--autoencoder",
            str(files["autoencoder"]),
            "--encoder",
            str(files["encoder"]),
            "--decoder",
            str(files["decoder"]),
            "--config",
            str(config),
            "--out-dir",
            str(out),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def imported(authors_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    assert _run(authors_files["files"], authors_files["config"], out) == 0
    return out


def test_folders_have_the_training_rules_layout(imported):
    for name in ("autoencoder", "ldm", "ldae"):
        assert {p.name for p in (imported / name).iterdir()} == {"weights.pt", "config.yaml", "summary.json"}
        summary = json.loads((imported / name / "summary.json").read_text())
        assert summary["imported"] is True and len(summary["sources"]["decoder"]["sha256"]) == 64
    assert yaml.safe_load((imported / "ldm" / "config.yaml").read_text())["stage"] == "ldm"
    ldae_cfg = yaml.safe_load((imported / "ldae" / "config.yaml").read_text())
    assert ldae_cfg["ldm"]["network"]["resample_axes"] == "last_two"
    assert ldae_cfg["latents"]["shape"] == [8, 12, 8]  # 16x24x16 over one AE downsampling
    assert not any(
        k.startswith("estimator.ldm.") for k in torch.load(imported / "ldae" / "weights.pt", weights_only=True)
    )
    assert io.load_scale_factor(imported / "latents") == pytest.approx(0.873)


def test_imported_models_compute_what_the_authors_networks_compute(authors_files, imported):
    ae = io.load_autoencoder(imported / "autoencoder")
    ldm = io.load_ldm(imported / "ldm")
    encoder, estimator = io.load_ldae(imported / "ldae", imported / "ldm")
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, 16, 24, 16, generator=g)
    z = torch.randn(2, 3, 8, 12, 8, generator=g)
    t = torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(ae.decode(z), authors_files["ae"].decode(z))
        # the loaded modules are frozen; a module with trainable parameters may take another CPU kernel path
        # (last-bit differences on some CPUs), so the reference is compared frozen too
        assert torch.equal(encoder(image), authors_files["encoder"].requires_grad_(False)(image))
        y = encoder(image)
        G, eps = estimator(z, t, y, return_eps=True)
        G_ref, eps_ref = authors_files["estimator"](z, t, y, return_eps=True)
        assert torch.equal(G, G_ref) and torch.equal(eps, eps_ref)
        assert torch.equal(ldm(z, timesteps=t), eps_ref)
    assert G.abs().max() > 0  # the perturbed zero-initialised output layer really carries weights


def test_readme_python_api_on_the_imported_folder(imported):
    """README "Python API": the same calls, on the imported models folder."""
    from ldae.models.pipelines import LDAEPipeline

    pipe = io.load_pipeline(imported)
    assert isinstance(pipe, LDAEPipeline) and io.LDAEPipeline is LDAEPipeline
    assert pipe.ddim.as_config() == {"clip_x0": [-1.0, 1.0], "grid": "authors"}  # recorded by the import
    image = torch.rand(1, 1, 16, 24, 16, generator=torch.Generator().manual_seed(1))
    y = pipe.semantic(image)
    z = pipe.latent(image)
    x_T = pipe.invert(z, y, 2)
    rec = pipe.decode(pipe.sample(x_T, y, 2))
    assert y.shape == (1, 16) and z.shape == (1, 3, 8, 12, 8) and rec.shape == image.shape
    assert pipe.sample(x_T, None, 2).shape == z.shape
    G, eps = pipe.estimator(z, torch.full((1,), 500), y, return_eps=True)
    assert G.shape == eps.shape == z.shape
    assert torch.equal(pipe.reconstruct(image, 2), rec)


def test_missing_tensor_is_an_error_naming_key_and_file(authors_files, tmp_path, capsys):
    files = dict(authors_files["files"])
    decoder = torch.load(files["decoder"], weights_only=True)
    dropped = next(k for k in decoder if k.startswith("shift_out."))
    del decoder[dropped]
    files["decoder"] = tmp_path / "decoder_broken.pth"
    torch.save(decoder, files["decoder"])
    assert _run(files, authors_files["config"], tmp_path / "models") == 1
    err = capsys.readouterr().err
    assert "decoder_broken.pth" in err and "shift_out" in err
    assert not (tmp_path / "models" / "ldae").exists()  # nothing half-written


def test_wrong_network_size_is_an_error(authors_files, tmp_path, capsys):
    wrong = {**TINY_CONFIG, "ldm": {"network": {**TINY_CONFIG["ldm"]["network"], "channels": [16, 32, 48]}}}
    config = tmp_path / "wrong.yaml"
    config.write_text(yaml.safe_dump(wrong))
    assert _run(authors_files["files"], config, tmp_path / "models") == 1
    assert "decoder.pth" in capsys.readouterr().err


def test_unreadable_file_names_it(authors_files, tmp_path):
    files = dict(authors_files["files"])
    files["encoder"] = tmp_path / "encoder.pth"
    files["encoder"].write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="encoder.pth"):
        _run(files, authors_files["config"], tmp_path / "models")


def _dry_run(tmp_path: Path, pretrained: dict) -> str:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"out_dir": str(tmp_path / "out"), "pretrained": pretrained}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--configfile",
            str(config),
            "--directory",
            str(ROOT),
            str(tmp_path / "out" / "models" / "ldae"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return result.stdout + result.stderr


@pytest.mark.slow
def test_workflow_imports_instead_of_training(authors_files, tmp_path):
    files = authors_files["files"]
    out = _dry_run(tmp_path, {k: str(v) for k, v in files.items()})
    assert "import_official" in out
    for rule in ("train_autoencoder", "train_ldm", "train_ldae"):
        assert f"rule {rule}:" not in out and f"\n{rule} " not in out


@pytest.mark.slow
def test_workflow_rejects_a_partial_pretrained_section(authors_files, tmp_path):
    out = _dry_run(tmp_path, {"decoder": str(authors_files["files"]["decoder"])})
    assert "pretrained.autoencoder" in out and "pretrained.encoder" in out
