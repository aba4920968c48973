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

# results/tables/<stem>.{tsv,md}, one per paper table (in the order the results README shows them)
TABLE5 = "table5_efficiency"
TABLE6 = "table6_reconstruction"
TABLE7 = "table7_linear_probes"
FIGURE8_TABLE = "figure8_interpolation"
FIGURE67_TABLE = "figure67_manipulation"
TABLES = (TABLE5, TABLE6, TABLE7, FIGURE8_TABLE, FIGURE67_TABLE)
# results/figures/<name>.png
FIGURE5 = "figure5_lda"
FIGURE6 = "figure6_manipulation_cn"
FIGURE7 = "figure7_manipulation_ad"
FIGURE8 = "figure8_interpolation"
TABLE6_EXAMPLES = "table6_examples"
FIGURES = (FIGURE5, FIGURE6, FIGURE7, FIGURE8, TABLE6_EXAMPLES)


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
