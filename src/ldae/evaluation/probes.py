"""Linear probes on frozen embeddings (paper Table 7) and the AD-vs-CN direction used for manipulation.

As in the paper: one linear layer; the AD-vs-CN classifier with BCE + Adam for 200 epochs, the age regressor with
MSE + SGD for 1000 epochs, the same learning rate (1e-3, authors' code); inputs z-scored. Done better than the
public code (paper-notes.md, "Known faults"):
  * z-scoring (inputs, and the age target) uses the probe-TRAINING statistics only;
  * model selection (the epoch kept) on the probe-validation split, which is grouped by subject (tables/splits.tsv
    ``probe_split``): no subject is in both; the test split is touched once, for the reported metrics.
Every stochastic step (initialisation, mini-batch order) is seeded.

Label convention (authors' code): AD = 0, CN = 1, so the "positive" class of Precision/Recall/F1 is CN; the
``positive_class`` option flips it. Metrics are scikit-learn's.
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


def probe_splits(table: pd.DataFrame, features: np.ndarray, task: str, positive_class: str = "CN",
                 age_diagnoses: Sequence[str] = ("CN", "MCI", "AD")) -> ProbeSplits:
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
    """A fitted probe: z-scoring (training statistics), one linear layer, and the target scaling (regression)."""

    def __init__(self, scaler: StandardScaler, layer: torch.nn.Linear, task: str,
                 y_mean: float = 0.0, y_std: float = 1.0, history: pd.DataFrame | None = None,
                 best_epoch: int = 0) -> None:
        self.scaler, self.layer, self.task = scaler, layer, task
        self.y_mean, self.y_std = y_mean, y_std
        self.history = history if history is not None else pd.DataFrame()
        self.best_epoch = best_epoch

    def decision(self, X: np.ndarray) -> np.ndarray:
        """Logit (classification) or prediction in target units (regression)."""
        with torch.no_grad():
            z = torch.from_numpy(self.scaler.transform(np.asarray(X, dtype=np.float64)).astype(np.float32))
            out = self.layer(z)[:, 0].numpy().astype(np.float64)
        return out if self.task == "classification" else out * self.y_std + self.y_mean

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision(X)))

    def direction(self) -> np.ndarray:
        """Unit weight vector in the z-scored feature space (points to the positive class / higher target)."""
        w = self.layer.weight.detach()[0].numpy().astype(np.float64)
        return w / np.linalg.norm(w)


def _loss(task: str):
    return torch.nn.BCEWithLogitsLoss() if task == "classification" else torch.nn.MSELoss()


def train_linear_probe(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                       task: str, lr: float = 1e-3, epochs: int = 200, batch_size: int = 64,
                       optimizer: str | None = None, seed: int = 0) -> LinearProbe:
    """Fit one linear layer on z-scored features; keep the epoch with the lowest probe-validation loss.

    ``task``: 'classification' (BCE, Adam by default) or 'regression' (MSE on the z-scored target, SGD by
    default). ``batch_size`` <= 0 means full batch. Returns the probe with the selected weights and the
    per-epoch history (train/val loss).
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be classification or regression, got {task!r}")
    optimizer = optimizer or ("adam" if task == "classification" else "sgd")
    scaler = StandardScaler().fit(np.asarray(X_train, dtype=np.float64))
    y_mean, y_std = 0.0, 1.0
    if task == "regression":
        y_mean = float(np.mean(y_train))
        y_std = float(np.std(y_train)) or 1.0

    def prep(X, y):
        Xz = torch.from_numpy(scaler.transform(np.asarray(X, dtype=np.float64)).astype(np.float32))
        yt = torch.from_numpy(((np.asarray(y, dtype=np.float64) - y_mean) / y_std).astype(np.float32))
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

    def val_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(layer(Xv)[:, 0], yv))

    best, best_epoch, best_state, rows = val_loss(), 0, copy.deepcopy(layer.state_dict()), []
    rows.append({"epoch": 0, "train_loss": float("nan"), "val_loss": best})
    for epoch in range(1, int(epochs) + 1):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            opt.zero_grad()
            loss = loss_fn(layer(Xt[idx])[:, 0], yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        v = val_loss()
        rows.append({"epoch": epoch, "train_loss": total / n, "val_loss": v})
        if v < best:
            best, best_epoch, best_state = v, epoch, copy.deepcopy(layer.state_dict())
    layer.load_state_dict(best_state)
    return LinearProbe(scaler, layer, task, y_mean, y_std, pd.DataFrame(rows), best_epoch)


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


def regression_metrics(y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE and RMSE in the target's units (years) (scikit-learn)."""
    return {"MAE": float(skm.mean_absolute_error(y_true, pred)),
            "RMSE": float(skm.root_mean_squared_error(y_true, pred))}


def run_probes(table: pd.DataFrame, features: dict[str, np.ndarray], rows: dict[str, dict[str, str]],
               lr: float = 1e-3, classifier_epochs: int = 200, regressor_epochs: int = 1000,
               batch_size: int = 64, seed: int = 0, positive_class: str = "CN",
               age_diagnoses: Sequence[str] = ("CN", "MCI", "AD"),
               ) -> tuple[pd.DataFrame, dict[str, LinearProbe], pd.DataFrame]:
    """Table 7. ``features[name]`` is aligned with ``table``; ``rows`` maps a table row label to the feature set
    of each task, e.g. ``{"LDAE": {"ad": "ldae", "age": "ldae"}}``. Returns (table, fitted probes keyed
    '<row>/<task>', per-epoch histories). A probe without enough data (:class:`ProbeDataError`) gives n/a and
    the reason in the ``note`` column."""
    records, probes, histories = [], {}, []
    for label, sources in rows.items():
        record: dict[str, object] = {"Model": label}
        for task, kind, epochs, columns in (("ad", "classification", classifier_epochs, CLASSIFICATION_COLUMNS),
                                            ("age", "regression", regressor_epochs, REGRESSION_COLUMNS)):
            name = sources.get(task)
            if name is None or name not in features:
                record.update({c: float("nan") for c in columns})
                continue
            try:
                data = probe_splits(table, features[name], task, positive_class, age_diagnoses)
            except ProbeDataError as error:
                record.update({c: float("nan") for c in columns})
                record["note"] = "; ".join(filter(None, [record.get("note"), f"{task}: {error}"]))
                continue
            probe = train_linear_probe(data.X["probe_train"], data.y["probe_train"], data.X["probe_val"],
                                       data.y["probe_val"], kind, lr=lr, epochs=epochs, batch_size=batch_size,
                                       seed=seed)
            if kind == "classification":
                record.update(classification_metrics(data.y["test"], probe.predict_proba(data.X["test"])))
            else:
                record.update(regression_metrics(data.y["test"], probe.decision(data.X["test"])))
            sizes = data.sizes()
            record.update({f"{task}_n_train": sizes["probe_train"], f"{task}_n_val": sizes["probe_val"],
                           f"{task}_n_test": sizes["test"], f"{task}_best_epoch": probe.best_epoch})
            probes[f"{label}/{task}"] = probe
            histories.append(probe.history.assign(model=label, task=task, features=name))
        records.append(record)
    history = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return pd.DataFrame(records), probes, history


# ------------------------------------------------------------------------------------------------------ CLI
PROBE_DEFAULTS = {"lr": 1e-3, "classifier_epochs": 200, "regressor_epochs": 1000, "batch_size": 64,
                  "positive_class": "CN", "age_diagnoses": ["CN", "MCI", "AD"], "seed": 0}
ROW_SOURCES = {"LDAE": {"ad": "ldae", "age": "ldae"}, "DAE": {"ad": "dae", "age": "dae"},
               "Supervised encoder": {"ad": "supervised_ad", "age": "supervised_age"}}


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
    args = parser.parse_args(argv)
    runtime.setup(args.threads)
    cfg = {**PROBE_DEFAULTS, **runtime.parse_json(args.config)}
    unknown = sorted(set(cfg) - set(PROBE_DEFAULTS))
    if unknown:
        raise SystemExit(f"probe: unknown config key(s) {unknown}")
    embeddings = {}
    for item in args.embeddings:
        name, _, path = item.partition("=")
        embeddings[name] = load_embeddings(path)
    table, features = embedding_table(args.sessions, args.splits, embeddings)
    rows = {label: src for label, src in ROW_SOURCES.items() if any(v in features for v in src.values())}
    result, probes, history = run_probes(
        table, features, rows, lr=float(cfg["lr"]), classifier_epochs=int(cfg["classifier_epochs"]),
        regressor_epochs=int(cfg["regressor_epochs"]), batch_size=int(cfg["batch_size"]), seed=int(cfg["seed"]),
        positive_class=str(cfg["positive_class"]), age_diagnoses=cfg["age_diagnoses"])
    paper_cols = main_cols = ["Model", *CLASSIFICATION_COLUMNS, *REGRESSION_COLUMNS]
    if "note" in result.columns:
        main_cols = [*main_cols, "note"]
    try:
        ad = probe_splits(table, next(iter(features.values())), "ad", cfg["positive_class"], cfg["age_diagnoses"])
        sizes = " / ".join(str(ad.sizes()[k]) for k in ("probe_train", "probe_val", "test"))
    except ProbeDataError as error:
        sizes = f"too few ({error})"
    notes = [
        f"AD vs CN: {sizes} sessions (probe_train / probe_val / test); positive class "
        f"{cfg['positive_class']} (authors' code: AD = 0, CN = 1); threshold 0.5 on the probability.",
        f"One linear layer on z-scored embeddings (probe_train statistics): BCE + Adam, {cfg['classifier_epochs']}"
        f" epochs; age MSE + SGD, {cfg['regressor_epochs']} epochs; lr {cfg['lr']}, batch {cfg['batch_size']}; "
        "the epoch with the lowest probe_val loss is kept; metrics on the test split (scikit-learn).",
        "Supervised encoder: the encoder trained end-to-end on the label (one per task), probed the same way.",
        "MAE / RMSE in years.",
    ]
    write_table(result, args.table, notes=notes, md_columns=main_cols, paper=pd.DataFrame(TABLE7)[paper_cols])
    args.history.parent.mkdir(parents=True, exist_ok=True)
    history.to_csv(args.history, sep="\t", index=False)
    panels = {}
    train = ((table.split == "train") & (table.probe_split == "probe_train")).to_numpy()
    test = (table.split == "test").to_numpy()
    for label, src in rows.items():
        name = src["ad"]
        if name in features:
            panels[label] = (features[name][train], table.diagnosis[train].to_numpy(), features[name][test],
                             table.diagnosis[test].to_numpy())
    figure5_lda(panels, args.figure)
    print(result[main_cols].to_string(index=False))
    return 0
