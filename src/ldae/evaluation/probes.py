"""Linear probes on frozen embeddings (paper Table 7) and the AD-vs-CN direction used for manipulation.

As in the paper: one linear layer; the AD-vs-CN classifier with BCE + Adam for 200 epochs, the age regressor with
MSE + SGD for 1000 epochs, the same learning rate (1e-3, authors' code), mini-batch 32 (authors' code); inputs
z-scored. Model selection as the authors' code: the classifier epoch with the best probe-validation MCC (ties: the
lower validation BCE, then the earlier epoch; ``classifier_selection: loss`` keeps the lowest validation BCE
instead), the regressor epoch with the best probe-validation RMSE. The age target is min-max scaled as the
authors' code (``age_target: zscore`` as the alternative). Done better than the public code (paper-notes.md,
"Known faults"):
  * every statistic (input z-scoring, the age target's min/max or mean/sd) comes from probe_train ONLY (the
    authors' age min/max included the test ages);
  * the probe-validation split is grouped by subject (tables/splits.tsv ``probe_split``): no subject is in both;
    the test split is touched once, for the reported metrics and their subject-level bootstrap intervals.
Every stochastic step (initialisation, mini-batch order, bootstrap) is seeded.

Label convention (authors' code): AD = 0, CN = 1, so the "positive" class of Precision/Recall/F1 is CN; the
``positive_class`` option flips it. Metrics are scikit-learn's. Trivial reference rows: the majority class of
probe_train (AD vs CN) and the probe_train mean age.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from sklearn.preprocessing import StandardScaler

from ldae import files

from .bootstrap import BootstrapSettings, bootstrap_settings, weighted_intervals

__all__ = [
    "ProbeDataError",
    "ProbeSplits",
    "LinearProbe",
    "probe_splits",
    "train_linear_probe",
    "classification_metrics",
    "regression_metrics",
    "run_probes",
    "CLASSIFICATION_COLUMNS",
    "REGRESSION_COLUMNS",
    "select_epoch",
    "weighted_classification_metrics",
    "weighted_regression_metrics",
    "probe_options",
    "TRIVIAL_ROW",
]

CLASSIFICATION_COLUMNS = ["Accuracy", "Precision", "Recall", "F1", "MCC", "ROC-AUC"]
REGRESSION_COLUMNS = ["MAE", "RMSE"]


class ProbeDataError(ValueError):
    """Too little data for a probe (a split without samples, or probe_train with one class): the table says n/a."""


@dataclass
class ProbeSplits:
    """Features and targets of probe_train / probe_val / test (rows of the embedding table)."""

    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    subjects: dict[str, np.ndarray] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.y.items()}

    def train_probe(self, task: str, **options) -> LinearProbe:
        """:func:`train_linear_probe` on probe_train, selected on probe_val."""
        return train_linear_probe(
            self.X["probe_train"], self.y["probe_train"], self.X["probe_val"], self.y["probe_val"], task, **options
        )


def probe_splits(
    table: pd.DataFrame,
    features: np.ndarray,
    task: str,
    positive_class: str = "CN",
    age_diagnoses: Sequence[str] = ("CN", "MCI", "AD"),
) -> ProbeSplits:
    """Select rows for ``task`` ('ad' or 'age') and split them: probe_train, probe_val (training subjects) and
    test. ``table`` (one row per row of ``features``) needs diagnosis, age, split, probe_split, participant_id."""
    if len(table) != len(features):
        raise ValueError(f"{len(table)} table rows for {len(features)} feature rows")
    table = table.reset_index(drop=True)
    if task == "ad":
        keep = table.diagnosis.isin(["AD", "CN"]).to_numpy()
        target = (table.diagnosis == positive_class).to_numpy().astype(np.float32)
    elif task == "age":
        keep = table.diagnosis.isin(list(age_diagnoses)).to_numpy() & table.age.notna().to_numpy()
        target = table.age.to_numpy(dtype=np.float32)
    else:
        raise ValueError(f"unknown probe task {task!r} (ad, age)")
    masks = {
        "probe_train": (table.split == "train") & (table.probe_split == "probe_train"),
        "probe_val": (table.split == "train") & (table.probe_split == "probe_val"),
        "test": table.split == "test",
    }
    out = ProbeSplits({}, {}, {})
    for name, mask in masks.items():
        rows = mask.to_numpy() & keep
        out.X[name] = np.asarray(features[rows], dtype=np.float32)
        out.y[name] = target[rows]
        out.subjects[name] = table.participant_id.to_numpy()[rows]
    overlap = set(out.subjects["probe_train"]) & (set(out.subjects["probe_val"]) | set(out.subjects["test"]))
    if overlap:
        raise ValueError(f"subject(s) {sorted(overlap)[:5]} in probe_train and in probe_val/test")
    for name, y in out.y.items():
        if len(y) == 0:
            raise ProbeDataError(f"no {task} sample in split {name}")
    if task == "ad" and len(np.unique(out.y["probe_train"])) < 2:
        raise ProbeDataError("probe_train holds a single diagnosis: cannot train the AD-vs-CN probe")
    return out


class LinearProbe:
    """A fitted probe: z-scoring (training statistics), one linear layer, and the target scaling (regression:
    prediction = output * ``y_scale`` + ``y_offset``)."""

    def __init__(
        self,
        scaler: StandardScaler,
        layer: torch.nn.Linear,
        task: str,
        y_offset: float = 0.0,
        y_scale: float = 1.0,
        history: pd.DataFrame | None = None,
        best_epoch: int = 0,
        selection: str = "",
    ) -> None:
        self.scaler, self.layer, self.task = scaler, layer, task
        self.y_offset, self.y_scale = y_offset, y_scale
        self.history = history if history is not None else pd.DataFrame()
        self.best_epoch, self.selection = best_epoch, selection

    def decision(self, X: np.ndarray) -> np.ndarray:
        """Logit (classification) or prediction in target units (regression)."""
        with torch.no_grad():
            z = torch.from_numpy(self.scaler.transform(np.asarray(X, dtype=np.float64)).astype(np.float32))
            out = self.layer(z)[:, 0].numpy().astype(np.float64)
        return out if self.task == "classification" else out * self.y_scale + self.y_offset

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision(X)))

    def direction(self) -> np.ndarray:
        """Unit weight vector in the z-scored feature space (points to the positive class / higher target)."""
        w = self.layer.weight.detach()[0].numpy().astype(np.float64)
        return w / np.linalg.norm(w)


def _loss(task: str):
    return torch.nn.BCEWithLogitsLoss() if task == "classification" else torch.nn.MSELoss()


SELECTIONS = {"classification": ("mcc", "loss"), "regression": ("rmse", "loss")}
TARGET_SCALINGS = ("minmax", "zscore")


def _selection_key(row: dict, criterion: str) -> tuple:
    """Smaller is better: MCC (higher), ties by the lower validation loss; loss; RMSE."""
    if criterion == "mcc":
        return (-row["val_mcc"], row["val_loss"])
    if criterion == "rmse":
        return (row["val_rmse"],)
    return (row["val_loss"],)


def select_epoch(history: pd.DataFrame, criterion: str) -> int:
    """The epoch kept: the best of ``criterion`` ('mcc': highest val MCC, ties -> lower val loss; 'loss': lowest val
    loss; 'rmse': lowest val RMSE) over the trained epochs (>= 1; epoch 0 = the initial weights only when no epoch
    was trained); remaining ties -> the earliest epoch."""
    rows = history[history.epoch >= 1] if (history.epoch >= 1).any() else history
    best_epoch, best_key = None, None
    for row in rows.to_dict("records"):
        key = _selection_key(row, criterion)
        if best_key is None or key < best_key:
            best_epoch, best_key = int(row["epoch"]), key
    return int(best_epoch)


def _target_scaling(y_train: np.ndarray, how: str) -> tuple[float, float]:
    """(offset, scale) of the regression target from the probe-TRAINING values only."""
    y_train = np.asarray(y_train, dtype=np.float64)
    if how == "minmax":
        low, high = float(np.min(y_train)), float(np.max(y_train))
        return low, (high - low) or 1.0
    if how == "zscore":
        return float(np.mean(y_train)), float(np.std(y_train)) or 1.0
    raise ValueError(f"evaluation.probe.age_target must be one of {list(TARGET_SCALINGS)}, got {how!r}")


def train_linear_probe(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    task: str,
    lr: float = 1e-3,
    epochs: int = 200,
    batch_size: int = 32,
    optimizer: str | None = None,
    seed: int = 0,
    selection: str | None = None,
    target_scaling: str = "minmax",
) -> LinearProbe:
    """Fit one linear layer on z-scored features; keep the epoch that :func:`select_epoch` picks.

    ``task``: 'classification' (BCE, Adam by default; ``selection`` 'mcc' by default or 'loss') or 'regression'
    (MSE on the scaled target, SGD by default; ``selection`` 'rmse', the same epoch as 'loss'; ``target_scaling``
    'minmax' or 'zscore', statistics of ``y_train``). ``batch_size`` <= 0 means full batch. Returns the probe
    with the selected weights and the per-epoch history (train/val loss, val MCC or val RMSE in target units).
    """
    if task not in SELECTIONS:
        raise ValueError(f"task must be classification or regression, got {task!r}")
    selection = selection or SELECTIONS[task][0]
    if selection not in SELECTIONS[task]:
        raise ValueError(f"{task} probe: selection must be one of {list(SELECTIONS[task])}, got {selection!r}")
    optimizer = optimizer or ("adam" if task == "classification" else "sgd")
    scaler = StandardScaler().fit(np.asarray(X_train, dtype=np.float64))
    y_offset, y_scale = _target_scaling(y_train, target_scaling) if task == "regression" else (0.0, 1.0)

    def prep(X, y):
        Xz = torch.from_numpy(scaler.transform(np.asarray(X, dtype=np.float64)).astype(np.float32))
        yt = torch.from_numpy(((np.asarray(y, dtype=np.float64) - y_offset) / y_scale).astype(np.float32))
        return Xz, yt

    Xt, yt = prep(X_train, y_train)
    Xv, yv = prep(X_val, y_val)
    gen = torch.Generator().manual_seed(int(seed))
    layer = torch.nn.Linear(Xt.shape[1], 1)
    with torch.no_grad():  # seeded init (nn.Linear's default draws from the global generator)
        bound = 1.0 / Xt.shape[1] ** 0.5
        layer.weight.uniform_(-bound, bound, generator=gen)
        layer.bias.uniform_(-bound, bound, generator=gen)
    if optimizer == "adam":
        opt = torch.optim.Adam(layer.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(layer.parameters(), lr=lr)
    else:
        raise ValueError(f"optimizer must be adam or sgd, got {optimizer!r}")
    loss_fn = _loss(task)
    n = len(Xt)
    bs = n if batch_size is None or batch_size <= 0 else min(int(batch_size), n)
    y_val_np, ones = np.asarray(y_val), np.ones((1, len(y_val)))

    def validate(epoch: int, train_loss: float) -> dict:
        with torch.no_grad():
            out = layer(Xv)[:, 0]
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": float(loss_fn(out, yv))}
        if task == "classification":
            # MCC at probability 0.5 (logit 0); numpy confusion counts = scikit-learn's matthews_corrcoef (tested)
            mcc = weighted_classification_metrics(y_val_np, out.numpy(), ones, threshold=0.0)["MCC"]
            row["val_mcc"] = float(mcc[0])
        else:
            row["val_rmse"] = float(np.sqrt(row["val_loss"])) * y_scale
        return row

    rows = [validate(0, float("nan"))]
    best_key, best_epoch, best_state = None, 0, copy.deepcopy(layer.state_dict())
    for epoch in range(1, int(epochs) + 1):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            opt.zero_grad()
            loss = loss_fn(layer(Xt[idx])[:, 0], yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        rows.append(validate(epoch, total / n))
        key = _selection_key(rows[-1], selection)
        if best_key is None or key < best_key:  # strict: on a full tie the earlier epoch stays
            best_key, best_epoch, best_state = key, epoch, copy.deepcopy(layer.state_dict())
    layer.load_state_dict(best_state)
    return LinearProbe(scaler, layer, task, y_offset, y_scale, pd.DataFrame(rows), best_epoch, selection)


def classification_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, Precision, Recall, F1, MCC (at ``threshold`` on the probability) and ROC-AUC (scikit-learn)."""
    y_true = np.asarray(y_true).astype(int)
    pred = (np.asarray(score) >= threshold).astype(int)
    out = {
        "Accuracy": skm.accuracy_score(y_true, pred),
        "Precision": skm.precision_score(y_true, pred, zero_division=0),
        "Recall": skm.recall_score(y_true, pred, zero_division=0),
        "F1": skm.f1_score(y_true, pred, zero_division=0),
        "MCC": skm.matthews_corrcoef(y_true, pred),
        "ROC-AUC": skm.roc_auc_score(y_true, score) if len(np.unique(y_true)) == 2 else float("nan"),
    }
    return {k: float(v) for k, v in out.items()}


def _weighted_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC (trapezoidal = Mann-Whitney with ties counted 1/2, as scikit-learn) per row of ``weights``."""
    order = np.argsort(score, kind="stable")
    sorted_score = np.asarray(score)[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])  # one block per distinct score
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))
    return np.where((pos.sum(1) > 0) & (neg.sum(1) > 0), auc, np.nan)


def weighted_classification_metrics(
    y_true: np.ndarray, score: np.ndarray, weights: np.ndarray, threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """:func:`classification_metrics` of the data set in which row i appears ``weights[r, i]`` times, for every row
    r of ``weights`` ``(R, n)`` at once (the bootstrap; equal to scikit-learn on the repeated rows, tested)."""
    positive = np.asarray(y_true).astype(bool)
    predicted = np.asarray(score) >= threshold
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    tp, fp = w @ (positive & predicted), w @ (~positive & predicted)
    fn, tn = w @ (positive & ~predicted), w @ (~positive & ~predicted)
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        out = {
            "Accuracy": (tp + tn) / (tp + fp + fn + tn),
            "Precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),  # zero_division=0, as scikit-learn here
            "Recall": np.where(tp + fn > 0, tp / (tp + fn), 0.0),
            "F1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
            "MCC": np.where(denominator > 0, (tp * tn - fp * fn) / denominator, 0.0),
        }
    out["ROC-AUC"] = _weighted_auc(positive, np.asarray(score, dtype=np.float64), w)
    return out


def weighted_regression_metrics(y_true: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """MAE and RMSE per row of ``weights`` ``(R, n)`` (see :func:`weighted_classification_metrics`)."""
    error = np.asarray(pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    total = w.sum(1)
    return {"MAE": w @ np.abs(error) / total, "RMSE": np.sqrt(w @ error**2 / total)}


def regression_metrics(y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE and RMSE in the target's units (years) (scikit-learn)."""
    return {
        "MAE": float(skm.mean_absolute_error(y_true, pred)),
        "RMSE": float(skm.root_mean_squared_error(y_true, pred)),
    }


TRIVIAL_ROW = "Trivial: probe_train majority class / mean age"


def probe_options(cfg: dict, kind: str) -> dict:
    """``train_linear_probe`` keyword arguments from the ``evaluation.probe`` section (+ seed) for 'classification'
    or 'regression'."""
    if cfg["classifier_selection"] not in SELECTIONS["classification"]:
        raise ValueError(
            f"evaluation.probe.classifier_selection must be one of {list(SELECTIONS['classification'])}"
            f" (mcc: the authors' code), got {cfg['classifier_selection']!r}"
        )
    if cfg["age_target"] not in TARGET_SCALINGS:
        raise ValueError(
            f"evaluation.probe.age_target must be one of {list(TARGET_SCALINGS)} (minmax: the authors' "
            f"code), got {cfg['age_target']!r}"
        )
    common = {"lr": float(cfg["lr"]), "batch_size": int(cfg["batch_size"]), "seed": int(cfg["seed"])}
    if kind == "classification":
        return {**common, "epochs": int(cfg["classifier_epochs"]), "selection": str(cfg["classifier_selection"])}
    return {**common, "epochs": int(cfg["regressor_epochs"]), "target_scaling": str(cfg["age_target"])}


def trivial_scores(data: ProbeSplits, kind: str) -> np.ndarray:
    """The do-nothing reference on the test rows: a constant from probe_train - the positive-class frequency as
    the probability (threshold 0.5 -> the majority class; a 50/50 tie -> the positive class; ROC-AUC 0.5) or the
    mean target (age)."""
    return np.full(len(data.y["test"]), float(np.mean(data.y["probe_train"])))


def reported_metrics(
    kind: str, y_true: np.ndarray, score: np.ndarray, subjects: np.ndarray, bootstrap: BootstrapSettings | None = None
) -> dict[str, float]:
    """Test-split metrics and, with ``bootstrap``, their subject-level intervals (``<metric>_ci_low/_ci_high``)."""
    y_true, score = np.asarray(y_true), np.asarray(score)
    if kind == "classification":
        values, weighted = classification_metrics(y_true, score), weighted_classification_metrics
    else:
        values, weighted = regression_metrics(y_true, score), weighted_regression_metrics
    if bootstrap is not None:
        intervals = weighted_intervals(subjects, lambda w: weighted(y_true, score, w), bootstrap)
        for name, (low, high) in intervals.items():
            values[f"{name}_ci_low"], values[f"{name}_ci_high"] = low, high
    return values


def run_probes(
    table: pd.DataFrame,
    features: dict[str, np.ndarray],
    rows: dict[str, dict[str, str]],
    lr: float = 1e-3,
    classifier_epochs: int = 200,
    regressor_epochs: int = 1000,
    batch_size: int = 32,
    seed: int = 0,
    positive_class: str = "CN",
    age_diagnoses: Sequence[str] = ("CN", "MCI", "AD"),
    classifier_selection: str = "mcc",
    age_target: str = "minmax",
    bootstrap: BootstrapSettings | None = None,
    trivial: bool = True,
) -> tuple[pd.DataFrame, dict[str, LinearProbe], pd.DataFrame]:
    """Table 7. ``features[name]`` is aligned with ``table``; ``rows`` maps a table row label to the feature set
    of each task, e.g. ``{"LDAE": {"ad": "ldae", "age": "ldae"}}``. ``trivial`` adds :data:`TRIVIAL_ROW`;
    ``bootstrap`` adds subject-level intervals of every metric. Returns (table, fitted probes keyed
    '<row>/<task>', per-epoch histories). A probe without enough data (:class:`ProbeDataError`) gives n/a and
    the reason in the ``note`` column."""
    cfg = {
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "classifier_epochs": classifier_epochs,
        "classifier_selection": classifier_selection,
        "regressor_epochs": regressor_epochs,
        "age_target": age_target,
    }
    sources = dict(rows)
    if trivial:
        sources[TRIVIAL_ROW] = {"ad": "__trivial__", "age": "__trivial__"}
    records, probes, histories = [], {}, []
    for label, source in sources.items():
        record: dict[str, object] = {"Model": label}
        for task, kind, columns in (
            ("ad", "classification", CLASSIFICATION_COLUMNS),
            ("age", "regression", REGRESSION_COLUMNS),
        ):
            name = source.get(task)
            if name != "__trivial__" and (name is None or name not in features):
                record.update({c: float("nan") for c in columns})
                continue
            matrix = np.zeros((len(table), 1), np.float32) if name == "__trivial__" else features[name]
            try:
                data = probe_splits(table, matrix, task, positive_class, age_diagnoses)
            except ProbeDataError as error:
                record.update({c: float("nan") for c in columns})
                record["note"] = "; ".join(filter(None, [record.get("note"), f"{task}: {error}"]))
                continue
            if name == "__trivial__":
                score = trivial_scores(data, kind)
            else:
                probe = data.train_probe(kind, **probe_options(cfg, kind))
                score = (
                    probe.predict_proba(data.X["test"]) if kind == "classification" else probe.decision(data.X["test"])
                )
                record[f"{task}_best_epoch"] = probe.best_epoch
                probes[f"{label}/{task}"] = probe
                histories.append(probe.history.assign(model=label, task=task, features=name))
            record.update(reported_metrics(kind, data.y["test"], score, data.subjects["test"], bootstrap))
            sizes = data.sizes()
            record.update(
                {
                    f"{task}_n_train": sizes["probe_train"],
                    f"{task}_n_val": sizes["probe_val"],
                    f"{task}_n_test": sizes["test"],
                    f"{task}_n_test_subjects": len(set(data.subjects["test"])),
                }
            )
        records.append(record)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return pd.DataFrame(records), probes, history


# ------------------------------------------------------------------------------------------------------ CLI
ROW_SOURCES = {
    "LDAE": {"ad": "ldae", "age": "ldae"},
    "DAE": {"ad": "dae", "age": "dae"},
    "Supervised encoder": {"ad": "supervised_ad", "age": "supervised_age"},
}


def embedding_table(sessions, splits, embeddings: dict) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Sessions (with splits) that every given embedding file covers, and the aligned feature matrices."""
    from ldae.data.tables import sessions_with_splits

    table = sessions_with_splits(sessions, splits)
    for emb in embeddings.values():
        table = table.merge(emb.ids, on=["participant_id", "session_id"], how="inner")
    table = table.reset_index(drop=True)
    return table, {name: emb.aligned(table) for name, emb in embeddings.items()}


def main(argv: list[str] | None = None) -> int:
    """``ldae probe``: Table 7 and Figure 5."""
    from pathlib import Path

    from . import runtime
    from .embed import load_embeddings
    from .figures import figure5_lda
    from .paper import TABLE7
    from .tables import write_table

    parser = runtime.base_parser("probe", "Table 7 linear probes on frozen embeddings; Figure 5 LDA")
    parser.add_argument("--embeddings", nargs="+", required=True, help="name=path.npz (ldae, dae, supervised_*)")
    parser.add_argument("--table", required=True, type=Path, help="results/tables/table7_linear_probes.tsv")
    parser.add_argument("--history", required=True, type=Path, help="per-epoch probe losses (TSV)")
    parser.add_argument("--figure", required=True, type=Path, help="results/figures/figure5_lda.png")
    args, cfg = runtime.parse(parser, argv, "evaluation.probe", shared=("seed", "bootstrap"))
    embeddings = {}
    for item in args.embeddings:
        name, _, path = item.partition("=")
        embeddings[name] = load_embeddings(path)
    table, features = embedding_table(args.sessions, args.splits, embeddings)
    rows = {label: src for label, src in ROW_SOURCES.items() if any(v in features for v in src.values())}
    boot = bootstrap_settings(cfg["bootstrap"], int(cfg["seed"]))
    result, probes, history = run_probes(
        table,
        features,
        rows,
        lr=float(cfg["lr"]),
        classifier_epochs=int(cfg["classifier_epochs"]),
        regressor_epochs=int(cfg["regressor_epochs"]),
        batch_size=int(cfg["batch_size"]),
        seed=int(cfg["seed"]),
        positive_class=str(cfg["positive_class"]),
        age_diagnoses=cfg["age_diagnoses"],
        classifier_selection=str(cfg["classifier_selection"]),
        age_target=str(cfg["age_target"]),
        bootstrap=boot,
    )
    metric_cols = [*CLASSIFICATION_COLUMNS, *REGRESSION_COLUMNS]
    paper_cols = main_cols = ["Model", *metric_cols]
    if "note" in result.columns:
        main_cols = [*main_cols, "note"]
    try:
        ad = probe_splits(table, next(iter(features.values())), "ad", cfg["positive_class"], cfg["age_diagnoses"])
        sizes = " / ".join(str(ad.sizes()[k]) for k in ("probe_train", "probe_val", "test"))
        sizes += f" ({len(set(ad.subjects['test']))} test subjects)"
    except ProbeDataError as error:
        sizes = f"too few ({error})"
    selection = (
        "the epoch with the best probe_val MCC (ties: lower probe_val BCE, then the earlier epoch)"
        if cfg["classifier_selection"] == "mcc"
        else "the epoch with the lowest probe_val BCE"
    )
    target = (
        "min-max scaled with the probe_train min/max"
        if cfg["age_target"] == "minmax"
        else "z-scored with the probe_train mean/sd"
    )
    notes = [
        f"AD vs CN: {sizes} sessions (probe_train / probe_val / test); positive class "
        f"{cfg['positive_class']} (authors' code: AD = 0, CN = 1); threshold 0.5 on the probability.",
        f"One linear layer on z-scored embeddings (probe_train statistics): BCE + Adam, {cfg['classifier_epochs']}"
        f" epochs, {selection}; age: MSE + SGD, {cfg['regressor_epochs']} epochs, target {target}, the epoch with "
        f"the lowest probe_val RMSE; lr {cfg['lr']}, batch {cfg['batch_size']}; metrics on the test split "
        "(scikit-learn).",
        f"[low, high]: {boot.describe()}; the probes are trained once (the interval is the test-sampling uncertainty).",
        f"{TRIVIAL_ROW}: a constant from probe_train (the majority class: MCC 0, ROC-AUC 0.5; the mean age) - what "
        "an embedding has to beat.",
        "Supervised encoder: the encoder trained end-to-end on the label (one per task), probed the same way.",
        "MAE / RMSE in years.",
    ]
    write_table(
        result,
        args.table,
        notes=notes,
        md_columns=main_cols,
        paper=pd.DataFrame(TABLE7)[paper_cols],
        intervals=metric_cols,
    )
    files.write_tsv(history, args.history, na_rep="")
    panels = {}
    train = ((table.split == "train") & (table.probe_split == "probe_train")).to_numpy()
    test = (table.split == "test").to_numpy()
    for label, src in rows.items():
        name = src["ad"]
        if name in features:
            panels[label] = (
                features[name][train],
                table.diagnosis[train].to_numpy(),
                features[name][test],
                table.diagnosis[test].to_numpy(),
            )
    figure5_lda(panels, args.figure)
    print(result[main_cols].to_string(index=False))
    return 0
