"""MedMNIST AUC / ACC: hand-computed cases, equality with the official sklearn-based formulas."""

import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from medlite.metrics import (
    ClassificationMetrics,
    UndefinedAUCWarning,
    bootstrap_ci,
    classification_report,
    confusion_matrix,
    medmnist_acc,
    medmnist_auc,
    per_class_auc,
    roc_auc,
)

# ------------------------------------------------------------------------------- hand-computed cases
# Binary: positives score 0.35, 0.8; negatives 0.1, 0.4. Pairs (pos > neg): 0.35>0.1, 0.8>0.1,
# 0.8>0.4 yes; 0.35>0.4 no -> AUC 3/4. Predictions p > 0.5: [0, 0, 0, 1] vs [0, 0, 1, 1] -> ACC 3/4.
BIN_Y = np.array([0, 0, 1, 1])
BIN_P = np.array([0.1, 0.4, 0.35, 0.8])

# Multi-class, 3 classes, argmax [0, 1, 2, 0] vs y [0, 1, 2, 1] -> ACC 3/4.
# class 0: pos 0.5 vs neg 0.3, 0.2, 0.6 -> 2/3; class 1: pos 0.4, 0.3 vs neg 0.2, 0.3 -> (1+1+1+0.5)/4;
# class 2: pos 0.5 vs neg 0.3, 0.3, 0.1 -> 1. Mean (2/3 + 7/8 + 1) / 3 = 61/72.
MC_Y = np.array([0, 1, 2, 1])
MC_P = np.array([[0.5, 0.2, 0.3], [0.3, 0.4, 0.3], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])

# Multi-label, 2 labels. label 0: pos 0.9, 0.6 vs neg 0.4, 0.7 -> 3/4; label 1: pos 0.7, 0.4 vs neg 0.2,
# 0.1 -> 1; AUC 7/8. Predictions > 0.5: label 0 [1,0,1,1] vs [1,0,1,0] -> 3/4; label 1 [0,1,0,0] vs
# [0,1,1,0] -> 3/4; ACC 3/4.
ML_Y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
ML_P = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.4], [0.7, 0.1]])


def test_binary_by_hand():
    assert medmnist_auc(BIN_Y, BIN_P, "binary") == pytest.approx(0.75)
    assert medmnist_acc(BIN_Y, BIN_P, "binary") == pytest.approx(0.75)
    assert confusion_matrix(BIN_Y, BIN_P, "binary").tolist() == [[2, 0], [1, 1]]


def test_binary_ties_by_hand():
    # pos 0.5 vs neg 0.5 is a tie (1/2), the other three pairs are won -> 3.5 / 4; 0.5 is not > 0.5.
    y, p = np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])
    assert medmnist_auc(y, p, "binary") == pytest.approx(0.875)
    assert medmnist_acc(y, p, "binary") == pytest.approx(0.75)


@pytest.mark.parametrize(
    "y_true, y_score",
    [
        (BIN_Y, BIN_P),
        (BIN_Y[:, None], BIN_P),
        (BIN_Y, BIN_P[:, None]),
        (BIN_Y[:, None], np.stack([1 - BIN_P, BIN_P], axis=1)),
        (torch.tensor(BIN_Y), torch.tensor(BIN_P, dtype=torch.float32)),
        (BIN_Y.astype(np.float32), BIN_P),
    ],
    ids=["N", "N1-labels", "N1-scores", "softmax2", "tensors", "float-labels"],
)
def test_binary_shapes(y_true, y_score):
    assert medmnist_auc(y_true, y_score, "binary") == pytest.approx(0.75)
    assert medmnist_acc(y_true, y_score, "binary") == pytest.approx(0.75)


@pytest.mark.parametrize("task", ["multi-class", "ordinal", "ordinal-regression"])
@pytest.mark.parametrize("labels", [MC_Y, MC_Y[:, None]], ids=["N", "N1"])
def test_multiclass_by_hand(task, labels):
    assert medmnist_auc(labels, MC_P, task) == pytest.approx(61 / 72)
    assert medmnist_acc(labels, MC_P, task) == pytest.approx(0.75)
    np.testing.assert_allclose(per_class_auc(labels, MC_P, task), [2 / 3, 7 / 8, 1.0])
    assert confusion_matrix(labels, MC_P, task).tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]


def test_multilabel_by_hand():
    assert medmnist_auc(ML_Y, ML_P, "multi-label") == pytest.approx(7 / 8)
    assert medmnist_acc(ML_Y, ML_P, "multi-label") == pytest.approx(0.75)
    assert confusion_matrix(ML_Y, ML_P, "multi-label").tolist() == [[[1, 1], [0, 2]], [[2, 0], [1, 1]]]


def test_threshold_is_strict_and_configurable():
    y, p = np.array([0, 1, 1]), np.array([0.2, 0.5, 0.7])
    assert medmnist_acc(y, p, "binary") == pytest.approx(2 / 3)
    assert medmnist_acc(y, p, "binary", threshold=0.4) == pytest.approx(1.0)


# ----------------------------------------------------------------- equality with the official formulas
def _official_auc(y, s, task):
    """The MedMNIST getAUC formulas written directly with sklearn."""
    if task == "binary":
        return roc_auc_score(y, s[:, -1])
    if task == "multi-label":
        return np.mean([roc_auc_score(y[:, j], s[:, j]) for j in range(s.shape[1])])
    return np.mean([roc_auc_score(y == c, s[:, c]) for c in range(s.shape[1])])


def _official_acc(y, s, task):
    if task == "binary":
        return accuracy_score(y, s[:, -1] > 0.5)
    if task == "multi-label":
        return np.mean([accuracy_score(y[:, j], s[:, j] > 0.5) for j in range(s.shape[1])])
    return accuracy_score(y, s.argmax(1))


def _random_case(task, n=300, c=5, seed=0):
    rng = np.random.default_rng(seed)
    if task == "multi-label":
        y = rng.integers(0, 2, (n, c))
        s = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.5, (n, c)))))
        return y, np.round(s, 2)  # rounding creates ties
    c = 2 if task == "binary" else c
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c)) + 1.5 * np.eye(c)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, np.round(probs, 2)


@pytest.mark.parametrize("task", ["binary", "multi-class", "ordinal", "multi-label"])
def test_matches_official_formulas(task):
    y, s = _random_case(task)
    assert medmnist_auc(y, s, task) == pytest.approx(_official_auc(y, s, task), abs=1e-12)
    assert medmnist_acc(y, s, task) == pytest.approx(_official_acc(y, s, task), abs=1e-12)


@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_rank_auc_equals_sklearn_with_ties(decimals):
    rng = np.random.default_rng(decimals)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) * 0.7 + 0.3 * y, decimals)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert roc_auc(y, np.full(500, 0.5)) == pytest.approx(0.5)  # all tied


# ----------------------------------------------------------------------------- missing classes, errors
def test_missing_class_is_skipped_with_warning():
    y = np.array([0, 1, 0, 1])  # class 2 never occurs
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]])
    with pytest.warns(UndefinedAUCWarning, match=r"class index\(es\) \[2\]"):
        auc = medmnist_auc(y, p, "multi-class")
    expected = np.mean([roc_auc_score(y == 0, p[:, 0]), roc_auc_score(y == 1, p[:, 1])])
    assert auc == pytest.approx(expected)


def test_all_classes_undefined_gives_nan():
    with pytest.warns(UndefinedAUCWarning, match=r"label index\(es\) \[0, 1\]"):
        assert np.isnan(medmnist_auc(np.ones((3, 2)), np.full((3, 2), 0.5), "multi-label"))
    with pytest.warns(UndefinedAUCWarning):
        assert np.isnan(medmnist_auc(np.zeros(3), np.array([0.1, 0.2, 0.3]), "binary"))


def test_no_warning_when_all_classes_present():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        medmnist_auc(MC_Y, MC_P, "multi-class")


@pytest.mark.parametrize(
    "y_true, y_score, task, match",
    [
        (BIN_Y, BIN_P * 4 - 2, "binary", "logits"),
        (MC_Y, np.log(MC_P), "multi-class", "logits"),
        (MC_Y, np.where(MC_P == 0.5, np.nan, MC_P), "multi-class", "NaN"),
        (BIN_Y, np.ones((4, 3)) / 3, "binary", "shape"),
        (MC_Y, MC_P[:, 0], "multi-class", "shape"),
        (MC_Y[:3], MC_P, "multi-class", "cases"),
        (np.array([0, 1, 3, 1]), MC_P, "multi-class", "labels must lie"),
        (ML_Y[:, :1], ML_P, "multi-label", "must match"),
        (ML_Y * 2, ML_P, "multi-label", "0 / 1"),
        (np.array([0.0, 0.5, 1.0, 1.0]), BIN_P, "binary", "whole-number"),
        (BIN_Y, BIN_P, "regression", "unknown task"),
    ],
)
def test_bad_inputs_raise(y_true, y_score, task, match):
    with pytest.raises(ValueError, match=match):
        medmnist_auc(y_true, y_score, task)


# ------------------------------------------------------------------------------------------ bootstrap
@pytest.mark.parametrize("task", ["binary", "multi-class", "multi-label"])
@pytest.mark.parametrize("metric", ["auc", "acc"])
def test_bootstrap_contains_estimate_and_narrows(task, metric):
    point = {"auc": medmnist_auc, "acc": medmnist_acc}[metric]
    widths = []
    for n in (200, 2000):
        y, s = _random_case(task, n=n, c=4)
        low, high = bootstrap_ci(y, s, task, metric, n_boot=300, seed=1)
        assert low <= point(y, s, task) <= high
        assert 0 <= low < high <= 1
        widths.append(high - low)
    assert widths[1] < 0.6 * widths[0]  # ~ 1 / sqrt(10) in theory


def test_bootstrap_reproducible_and_seeded():
    y, s = _random_case("binary", n=300)
    assert bootstrap_ci(y, s, "binary", n_boot=200, seed=3) == bootstrap_ci(
        y, s, "binary", n_boot=200, seed=3
    )
    assert bootstrap_ci(y, s, "binary", n_boot=200, seed=3) != bootstrap_ci(
        y, s, "binary", n_boot=200, seed=4
    )


def test_bootstrap_equals_explicit_resampling():
    """The weighted-rank shortcut gives the same statistics as resampling indices and calling sklearn."""
    y, s = _random_case("multi-class", n=120, c=3)
    rng = np.random.default_rng(7)
    stats = []
    for _ in range(50):
        idx = rng.integers(0, len(y), len(y))
        stats.append(_official_auc(y[idx], s[idx], "multi-class"))
    expected = np.quantile(stats, [0.025, 0.975])
    np.testing.assert_allclose(bootstrap_ci(y, s, "multi-class", n_boot=50, seed=7), expected, atol=1e-12)


def test_bootstrap_is_fast():
    y, s = _random_case("binary", n=2000)
    start = time.perf_counter()
    bootstrap_ci(y, s, "binary", n_boot=1000)
    assert time.perf_counter() - start < 3.0  # ~0.1 s on one core; generous for shared CI machines


# --------------------------------------------------------------------------------- report and object
def test_report_keys_and_values():
    report = classification_report(MC_Y, MC_P, "multi-class", label_names=["a", "b", "c"], n_boot=50)
    assert {"auc", "acc", "auc_ci", "acc_ci", "n", "per_class_auc", "confusion"} <= report.keys()
    assert report["n"] == 4 and report["auc"] == pytest.approx(61 / 72) and report["acc"] == 0.75
    assert report["per_class_auc"] == pytest.approx([2 / 3, 7 / 8, 1.0])
    assert len(report["auc_ci"]) == 2 and report["label_names"] == ["a", "b", "c"]
    binary = classification_report(BIN_Y, BIN_P, "binary", n_boot=0)
    assert binary["per_class_auc"] == pytest.approx([0.75, 0.75]) and binary["auc_ci"] is None
    assert binary["confusion"] == [[2, 0], [1, 1]]
    with pytest.raises(ValueError, match="label names"):
        classification_report(MC_Y, MC_P, "multi-class", label_names=["a", "b"], n_boot=0)


@pytest.mark.parametrize("task", ["binary", "multi-class", "multi-label"])
def test_metric_object_equals_function(task):
    y, s = _random_case(task, n=250, c=4, seed=5)
    metrics = ClassificationMetrics(task, n_boot=20)
    for start in range(0, len(y), 64):  # uneven last batch; tensors like a training loop gives
        metrics.update(torch.tensor(s[start : start + 64]), torch.tensor(y[start : start + 64]))
    assert metrics.compute() == classification_report(y, s, task, n_boot=20)

    metrics.reset()
    with pytest.raises(ValueError, match="before any update"):
        metrics.compute()
    metrics.update(s[:50], y[:50])
    assert metrics.compute() == classification_report(y[:50], s[:50], task, n_boot=20)


def test_metric_object_rejects_logits_and_mismatched_batches():
    metrics = ClassificationMetrics("multi-class")
    with pytest.raises(ValueError, match="logits"):
        metrics.update(torch.randn(4, 3) * 5, torch.tensor([0, 1, 2, 0]))
    metrics.update(MC_P, MC_Y)
    with pytest.raises(ValueError, match="earlier batches"):
        metrics.update(np.full((2, 4), 0.25), np.array([0, 3]))
