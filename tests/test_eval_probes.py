"""Linear probes: planted signal found, training statistics only, subject-grouped selection, scikit-learn metrics,
seeded; the LDA figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from ldae.evaluation.figures import figure5_lda, lda_projection
from ldae.evaluation.probes import (
    classification_metrics,
    probe_splits,
    regression_metrics,
    run_probes,
    train_linear_probe,
)

torch.set_num_threads(1)


def cohort(n_subjects=60, visits=3, dim=12, seed=0, signal=2.0):
    """Sessions with a planted AD direction (dims 0) and age direction (dim 1) + noise; subject-level splits."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for s in range(n_subjects):
        diagnosis = ["CN", "MCI", "AD"][s % 3]
        split = "test" if s % 5 == 0 else "train"
        probe = "none" if split == "test" else ("probe_val" if s % 5 == 1 else "probe_train")
        age0 = rng.uniform(60, 85)
        for v in range(visits):
            age = age0 + v
            f = rng.normal(size=dim)
            f[0] += {"CN": -signal, "MCI": 0.0, "AD": signal}[diagnosis]
            f[1] += (age - 72) / 2
            feats.append(f * 10 + 100)  # far from zero mean / unit variance: z-scoring matters
            rows.append({"participant_id": f"sub-{s:03d}", "session_id": f"ses-M{6 * v:02d}", "age": age,
                         "diagnosis": diagnosis, "split": split, "probe_split": probe, "months": 6 * v})
    return pd.DataFrame(rows), np.asarray(feats, dtype=np.float32)


def test_probe_splits_are_subject_grouped_and_task_specific():
    table, feats = cohort()
    ad = probe_splits(table, feats, "ad")
    for a, b in (("probe_train", "probe_val"), ("probe_train", "test"), ("probe_val", "test")):
        assert not set(ad.subjects[a]) & set(ad.subjects[b])
    assert set(np.unique(ad.y["probe_train"])) == {0.0, 1.0}
    n_ad_cn = table[table.diagnosis.isin(["AD", "CN"])].shape[0]
    assert sum(ad.sizes().values()) == n_ad_cn  # MCI dropped, every AD/CN session used once
    # label convention: CN = 1 (authors' code), flippable
    train = table[(table.split == "train") & (table.probe_split == "probe_train") & table.diagnosis.isin(["AD", "CN"])]
    assert np.array_equal(ad.y["probe_train"], (train.diagnosis == "CN").to_numpy(float))
    assert np.array_equal(probe_splits(table, feats, "ad", positive_class="AD").y["probe_train"],
                          (train.diagnosis == "AD").to_numpy(float))
    age = probe_splits(table, feats, "age")
    assert sum(age.sizes().values()) == len(table)
    bad = table.copy()
    bad.loc[bad.participant_id == "sub-006", "probe_split"] = "probe_train"  # a CN subject in both
    bad.loc[(bad.participant_id == "sub-006") & (bad.session_id == "ses-M00"), "probe_split"] = "probe_val"
    with pytest.raises(ValueError, match="in probe_train and"):
        probe_splits(bad, feats, "ad")


def test_classifier_finds_planted_signal_with_training_statistics_only():
    table, feats = cohort()
    data = probe_splits(table, feats, "ad")
    probe = train_linear_probe(data.X["probe_train"], data.y["probe_train"], data.X["probe_val"],
                               data.y["probe_val"], "classification", lr=1e-2, epochs=200, seed=0)
    assert np.allclose(probe.scaler.mean_, data.X["probe_train"].mean(0), atol=1e-4)  # train statistics only
    m = classification_metrics(data.y["test"], probe.predict_proba(data.X["test"]))
    assert m["Accuracy"] > 0.9 and m["ROC-AUC"] > 0.95
    assert np.argmax(np.abs(probe.direction())) == 0  # the planted AD axis
    assert probe.direction()[0] < 0  # CN = 1 lies at negative dim 0
    assert 0 <= probe.best_epoch <= 200 and len(probe.history) == 201
    # model selection: the kept weights are those of the best validation epoch
    assert probe.history.val_loss[probe.best_epoch] == probe.history.val_loss.min()
    again = train_linear_probe(data.X["probe_train"], data.y["probe_train"], data.X["probe_val"],
                               data.y["probe_val"], "classification", lr=1e-2, epochs=200, seed=0)
    assert np.array_equal(again.decision(data.X["test"]), probe.decision(data.X["test"]))  # seeded


def test_regressor_sgd_predicts_age_in_years():
    table, feats = cohort(signal=0.0)
    data = probe_splits(table, feats, "age")
    probe = train_linear_probe(data.X["probe_train"], data.y["probe_train"], data.X["probe_val"],
                               data.y["probe_val"], "regression", lr=1e-2, epochs=200, batch_size=16, seed=1)
    pred = probe.decision(data.X["test"])
    m = regression_metrics(data.y["test"], pred)
    naive = regression_metrics(data.y["test"], np.full_like(data.y["test"], data.y["probe_train"].mean()))
    assert m["MAE"] < 0.5 * naive["MAE"]
    assert probe.y_mean == pytest.approx(float(data.y["probe_train"].mean()), rel=1e-6)


def test_metrics_are_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = np.clip(y * 0.6 + rng.uniform(0, 0.5, 50), 0, 1)
    m = classification_metrics(y, p)
    pred = (p >= 0.5).astype(int)
    assert m["MCC"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert m["ROC-AUC"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["F1"] == pytest.approx(skm.f1_score(y, pred))
    r = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
    assert r["MAE"] == pytest.approx(1.0) and r["RMSE"] == pytest.approx(np.sqrt(5 / 3))


def test_run_probes_table_and_lda_figure(tmp_path):
    table, feats = cohort()
    _, noise = cohort(seed=1, signal=0.0)
    rows = {"LDAE": {"ad": "good", "age": "good"}, "DAE": {"ad": "noise", "age": "noise"},
            "Supervised encoder": {"ad": "good", "age": "missing"}}
    result, probes, history = run_probes(table, {"good": feats, "noise": np.random.default_rng(2).normal(
        size=feats.shape).astype(np.float32)}, rows, lr=1e-2, classifier_epochs=200, regressor_epochs=100, seed=0)
    assert list(result.Model) == list(rows)
    good, bad = result.iloc[0], result.iloc[1]
    assert good["ROC-AUC"] > 0.95 and bad["ROC-AUC"] < 0.8
    assert np.isnan(result.iloc[2]["MAE"])  # no such feature set -> n/a, never a number
    assert {"LDAE/ad", "LDAE/age", "DAE/ad"} <= set(probes)
    assert set(history.task) == {"ad", "age"}
    test = table.split == "test"
    train = (table.probe_split == "probe_train").to_numpy()
    coords, how = lda_projection(feats[train], table.diagnosis[train].to_numpy(), feats[test.to_numpy()])
    assert coords.shape == (test.sum(), 2) and how == "LD1 / LD2"
    coords2, how2 = lda_projection(feats[train & table.diagnosis.isin(["AD", "CN"]).to_numpy()],
                                   table.diagnosis[train & table.diagnosis.isin(["AD", "CN"]).to_numpy()].to_numpy(),
                                   feats[test.to_numpy()])
    assert coords2.shape[1] == 2 and "PC1" in how2
    figure5_lda({"LDAE": (feats[train], table.diagnosis[train].to_numpy(), feats[test.to_numpy()],
                          table.diagnosis[test].to_numpy())}, tmp_path / "figure5.png")
    assert (tmp_path / "figure5.png").stat().st_size > 1000
