"""THE one place that names the workflow's outputs after preprocessing (:mod:`ldae.preprocess.naming` names the
derivatives): model folders, embeddings and results, each relative to the run's ``out_dir``. The rule files and
the end-to-end test use these names; inside a model folder :mod:`ldae.models.io` names the files.

Only names: nothing here reads or writes a file.
"""

from __future__ import annotations

import os

# model folders under <out_dir>/models/: the LDAE chain (rules train_autoencoder, encode_latents, train_ldm,
# train_ldae or import_official), the baselines (train_dae, train_supervised) and the authors' imported probe
LDAE_CHAIN = ("autoencoder", "latents", "ldm", "ldae")
BASELINES = ("dae", "supervised_ad", "supervised_age")
OFFICIAL_PROBE = "official_probe"

# results/tables/<stem>.{tsv,md}, one per paper table (in the order the results README shows them), and
# results/figures/<name>.png
TABLES = TABLE5, TABLE6, TABLE7, FIGURE8_TABLE, FIGURE67_TABLE = (
    "table5_efficiency",
    "table6_reconstruction",
    "table7_linear_probes",
    "figure8_interpolation",
    "figure67_manipulation",
)
FIGURES = FIGURE5, FIGURE6, FIGURE7, FIGURE8, TABLE6_EXAMPLES = (
    "figure5_lda",
    "figure6_manipulation_cn",
    "figure7_manipulation_ad",
    "figure8_interpolation",
    "table6_examples",
)


def model_dir(root: str, name: str) -> str:
    """A model folder (``name``: one of :data:`LDAE_CHAIN`, :data:`BASELINES`, ``official_probe``)."""
    return os.path.join(str(root), "models", name)


def embeddings(root: str, model: str) -> str:
    """y_sem (+ the LDAE's latents and x_T) of every session for one model (rule embed)."""
    return os.path.join(str(root), "embeddings", f"{model}.npz")


def results(root: str, *parts: str) -> str:
    """A path under ``results/`` (per-session records, interpolation triplets, manipulation volumes)."""
    return os.path.join(str(root), "results", *parts)


def table(root: str, stem: str, ext: str = "tsv") -> str:
    """A result table: ``tsv`` (full precision, what the README and the claims read) or ``md``."""
    return results(root, "tables", f"{stem}.{ext}")


def figure(root: str, name: str) -> str:
    return results(root, "figures", f"{name}.png")


def results_readme(root: str) -> str:
    return results(root, "README.md")
