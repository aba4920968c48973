"""Linear probes: planted signal found, training statistics only, subject-grouped selection, scikit-learn metrics,
seeded; the LDA figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from ldae.evaluation.bootstrap import BootstrapSettings
from ldae.evaluation.figures import figure5_lda, lda_projection
from ldae.evaluation.probes import (
    TRIVIAL_ROW,
    classification_metrics,
    probe_splits,
    regression_metrics,
    run_probes,
    select_epoch,
    weighted_classification_metrics,
    weighted_regression_metrics,
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
            rows.append(
                {
                    "participant_id": f"sub-{s:03d}",
                    "session_id": f"ses-M{6 * v:02d}",
                    "age": age,
                    "diagnosis": diagnosis,
                    "split": split,
                    "probe_split": probe,
                    "months": 6 * v,
                }
            )
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
    assert np.array_equal(
        probe_splits(table, feats, "ad", positive_class="AD").y["probe_train"],
        (train.diagnosis == "AD").to_numpy(float),
    )
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
    probe = data.train_probe("classification", lr=1e-2, epochs=200, seed=0)
    assert np.allclose(probe.scaler.mean_, data.X["probe_train"].mean(0), atol=1e-4)  # train statistics only
    m = classification_metrics(data.y["test"], probe.predict_proba(data.X["test"]))
    assert m["Accuracy"] > 0.9 and m["ROC-AUC"] > 0.95
    assert np.argmax(np.abs(probe.direction())) == 0  # the planted AD axis
    assert probe.direction()[0] < 0  # CN = 1 lies at negative dim 0
    assert 1 <= probe.best_epoch <= 200 and len(probe.history) == 201
    # model selection (authors): the kept weights are those of the best validation-MCC epoch
    assert probe.selection == "mcc" and probe.best_epoch == select_epoch(probe.history, "mcc")
    assert probe.history.val_mcc[probe.best_epoch] == probe.history.val_mcc[1:].max()
    kept = skm.matthews_corrcoef(data.y["probe_val"].astype(int), (probe.decision(data.X["probe_val"]) >= 0))
    assert kept == pytest.approx(probe.history.val_mcc[probe.best_epoch])
    by_loss = data.train_probe("classification", lr=1e-2, epochs=200, seed=0, selection="loss")
    assert by_loss.history.val_loss[by_loss.best_epoch] == by_loss.history.val_loss[1:].min()
    again = data.train_probe("classification", lr=1e-2, epochs=200, seed=0)
    assert np.array_equal(again.decision(data.X["test"]), probe.decision(data.X["test"]))  # seeded


def test_regressor_sgd_predicts_age_in_years():
    table, feats = cohort(signal=0.0)
    data = probe_splits(table, feats, "age")
    probe = data.train_probe("regression", lr=1e-2, epochs=200, batch_size=16, seed=1)
    pred = probe.decision(data.X["test"])
    m = regression_metrics(data.y["test"], pred)
    naive = regression_metrics(data.y["test"], np.full_like(data.y["test"], data.y["probe_train"].mean()))
    assert m["MAE"] < 0.5 * naive["MAE"]
    # min-max target (authors) with probe_train statistics only; best validation RMSE (in years) kept
    assert probe.y_offset == pytest.approx(float(data.y["probe_train"].min()), rel=1e-6)
    assert probe.y_scale == pytest.approx(float(np.ptp(data.y["probe_train"])), rel=1e-6)
    assert probe.best_epoch == int(probe.history.val_rmse[1:].idxmin())
    val_rmse = regression_metrics(data.y["probe_val"], probe.decision(data.X["probe_val"]))["RMSE"]
    assert val_rmse == pytest.approx(probe.history.val_rmse[probe.best_epoch], rel=1e-4)
    z = data.train_probe("regression", lr=1e-2, epochs=20, batch_size=16, seed=1, target_scaling="zscore")
    assert z.y_offset == pytest.approx(float(data.y["probe_train"].mean()), rel=1e-6)
    with pytest.raises(ValueError, match="age_target"):
        data.train_probe("regression", epochs=1, target_scaling="robust")


def test_select_epoch_on_a_hand_made_sequence():
    """Best val MCC over the trained epochs (epoch 0 = initial weights is not a candidate); ties -> lower val loss,
    then the earlier epoch. 'loss' -> the lowest val loss."""
    history = pd.DataFrame(
        {
            "epoch": [0, 1, 2, 3, 4, 5, 6],
            "val_mcc": [0.9, 0.2, 0.5, 0.5, 0.4, 0.5, 0.5],
            "val_loss": [0.1, 0.6, 0.5, 0.45, 0.3, 0.45, 0.47],
        }
    )
    assert select_epoch(history, "mcc") == 3  # 0.5 at epochs 2, 3, 5, 6; loss 0.45 at 3 and 5 -> the earlier
    assert select_epoch(history, "loss") == 4
    assert select_epoch(history.assign(val_rmse=[1.0, 5.0, 4.0, 3.0, 3.0, 6.0, 7.0]), "rmse") == 3
    assert select_epoch(history.iloc[:1], "mcc") == 0  # nothing trained: the initial weights


def test_minmax_statistics_come_from_probe_train_only():
    table, feats = cohort(signal=0.0)
    data = probe_splits(table, feats, "age")
    probe = data.train_probe("regression", lr=1e-2, epochs=5, seed=0)
    assert (probe.y_offset, probe.y_scale) == pytest.approx(
        (data.y["probe_train"].min(), np.ptp(data.y["probe_train"]))
    )
    # extreme validation and test ages change nothing in the scaling (the authors' min/max included the test ages)
    moved = table.copy()
    moved.loc[moved.split == "test", "age"] = 150.0
    moved.loc[moved.probe_split == "probe_val", "age"] = 10.0
    data2 = probe_splits(moved, feats, "age")
    again = data2.train_probe("regression", lr=1e-2, epochs=5, seed=0)
    assert (again.y_offset, again.y_scale) == (probe.y_offset, probe.y_scale)
    _, probes, _ = run_probes(moved, {"f": feats}, {"LDAE": {"age": "f"}}, lr=1e-2, regressor_epochs=5, seed=0)
    assert probes["LDAE/age"].y_offset == probe.y_offset and probes["LDAE/age"].y_scale == probe.y_scale


def test_trivial_rows_and_bootstrap_intervals():
    """Majority class of probe_train (MCC 0, ROC-AUC 0.5, CN predicted for every test scan) and the probe_train
    mean age; every metric gets a subject-level interval."""
    table, feats = cohort(n_subjects=45, signal=0.0)
    table.loc[table.participant_id.isin(["sub-002", "sub-008", "sub-017", "sub-023"]), "diagnosis"] = "CN"  # CN > AD
    boot = BootstrapSettings(resamples=200, seed=0)
    result, _, _ = run_probes(
        table,
        {"f": feats},
        {"LDAE": {"ad": "f", "age": "f"}},
        lr=1e-2,
        classifier_epochs=3,
        regressor_epochs=3,
        bootstrap=boot,
    )
    trivial = result.set_index("Model").loc[TRIVIAL_ROW]
    ad = probe_splits(table, feats, "ad")
    assert ad.y["probe_train"].mean() > 0.5  # CN (= 1) is the majority of probe_train
    prevalence = ad.y["test"].mean()
    assert trivial["Accuracy"] == pytest.approx(prevalence) and trivial["Precision"] == pytest.approx(prevalence)
    assert trivial["Recall"] == 1.0 and trivial["MCC"] == 0.0 and trivial["ROC-AUC"] == 0.5
    age = probe_splits(table, feats, "age")
    mean_age = age.y["probe_train"].mean()
    assert trivial["MAE"] == pytest.approx(np.abs(age.y["test"] - mean_age).mean(), rel=1e-5)
    assert trivial["RMSE"] == pytest.approx(np.sqrt(((age.y["test"] - mean_age) ** 2).mean()), rel=1e-5)
    for row in result.itertuples():
        for metric in ("Accuracy", "MCC", "MAE", "RMSE"):
            low, high = getattr(row, f"{metric}_ci_low"), getattr(row, f"{metric}_ci_high")
            assert low <= getattr(row, metric) + 1e-9 and getattr(row, metric) <= high + 1e-9
            assert low < high or (row.Model == TRIVIAL_ROW and metric == "MCC")
    assert trivial["MCC_ci_low"] == trivial["MCC_ci_high"] == 0.0  # a constant prediction: MCC 0 in every resample
    assert result.ad_n_test_subjects.iloc[0] == len(set(ad.subjects["test"]))


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
    rows = {
        "LDAE": {"ad": "good", "age": "good"},
        "DAE": {"ad": "noise", "age": "noise"},
        "Supervised encoder": {"ad": "good", "age": "missing"},
    }
    result, probes, history = run_probes(
        table,
        {"good": feats, "noise": np.random.default_rng(2).normal(size=feats.shape).astype(np.float32)},
        rows,
        lr=1e-2,
        classifier_epochs=200,
        regressor_epochs=100,
        seed=0,
    )
    assert list(result.Model) == [*rows, TRIVIAL_ROW]
    good, bad = result.iloc[0], result.iloc[1]
    assert good["ROC-AUC"] > 0.95 and bad["ROC-AUC"] < 0.8
    assert np.isnan(result.iloc[2]["MAE"])  # no such feature set -> n/a, never a number
    assert {"LDAE/ad", "LDAE/age", "DAE/ad"} <= set(probes)
    assert set(history.task) == {"ad", "age"}
    test = table.split == "test"
    train = (table.probe_split == "probe_train").to_numpy()
    coords, how = lda_projection(feats[train], table.diagnosis[train].to_numpy(), feats[test.to_numpy()])
    assert coords.shape == (test.sum(), 2) and how == "LD1 / LD2"
    coords2, how2 = lda_projection(
        feats[train & table.diagnosis.isin(["AD", "CN"]).to_numpy()],
        table.diagnosis[train & table.diagnosis.isin(["AD", "CN"]).to_numpy()].to_numpy(),
        feats[test.to_numpy()],
    )
    assert coords2.shape[1] == 2 and "PC1" in how2
    figure5_lda(
        {
            "LDAE": (
                feats[train],
                table.diagnosis[train].to_numpy(),
                feats[test.to_numpy()],
                table.diagnosis[test].to_numpy(),
            )
        },
        tmp_path / "figure5.png",
    )
    assert (tmp_path / "figure5.png").stat().st_size > 1000


def test_weighted_metrics_equal_scikit_learn_on_repeated_rows():
    """The bootstrap's vectorised metrics: a resample with integer weights = scikit-learn on the repeated rows
    (ties in the scores included)."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    score = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, 40), 0, 1), 1)  # rounded: tied scores
    weights = rng.integers(0, 3, size=(5, 40)).astype(float)
    clf = weighted_classification_metrics(y, score, weights)
    age, pred = rng.normal(70, 5, 40), rng.normal(70, 5, 40)
    reg = weighted_regression_metrics(age, pred, weights)
    for r, w in enumerate(weights.astype(int)):
        rows = np.repeat(np.arange(40), w)
        expected = classification_metrics(y[rows], score[rows])
        for name, value in expected.items():
            assert clf[name][r] == pytest.approx(value, abs=1e-12), name
        for name, value in regression_metrics(age[rows], pred[rows]).items():
            assert reg[name][r] == pytest.approx(value, rel=1e-12), name
    one_class = weighted_classification_metrics(np.ones(4), np.array([0.2, 0.6, 0.7, 0.9]), np.ones((1, 4)))
    assert np.isnan(one_class["ROC-AUC"][0]) and one_class["MCC"][0] == 0.0
