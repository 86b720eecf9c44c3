"""Per-case scores in the official MedMNIST evaluator's file layout (ecosystem issue, item 4)."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from medlite.engine.evaluate import write_medmnist_scores
from medlite.metrics.classification import medmnist_acc, medmnist_auc


@pytest.mark.parametrize("task,k", [("binary-class", 2), ("multi-class", 4)])
def test_scores_file_parses_like_the_official_evaluator(tmp_path, task, k):
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, 50)
    p = rng.random((50, k))
    p /= p.sum(1, keepdims=True)
    auc, acc = medmnist_auc(y, p, task), medmnist_acc(y, p, task)
    path = write_medmnist_scores(tmp_path, "octmnist", "test", p, auc, acc, run="nano")
    m = re.fullmatch(r"(\w+?)_(\w+?)_\[AUC\](\d\.\d{3})_\[ACC\](\d\.\d{3})@(\w+)\.csv", path.name)
    assert m and m.groups() == ("octmnist", "test", f"{auc:.3f}", f"{acc:.3f}", "nano")
    rows = list(csv.reader(path.open()))
    assert [int(r[0]) for r in rows] == list(range(50))  # index column, no header (read_csv(header=None))
    back = np.array([[float(v) for v in r[1:]] for r in rows])
    np.testing.assert_array_equal(back, p)  # repr round-trips float64 exactly
    assert medmnist_auc(y, back, task) == auc
    with pytest.raises(ValueError, match="run name"):
        write_medmnist_scores(tmp_path, "octmnist", "test", p, auc, acc, run="a_b")
