"""Every plot writes a non-empty PNG that PIL can open."""

import numpy as np
import pytest
from PIL import Image

from medlite.report import plot_confusion, plot_roc, plot_training_curves, plot_values_per_epoch

DERMA = [
    "actinic keratoses",
    "basal cell carcinoma",
    "benign keratosis-like lesions",
    "dermatofibroma",
    "melanoma",
    "melanocytic nevi",
    "vascular lesions",
]


def _case(task, n=120, c=3, seed=0):
    rng = np.random.default_rng(seed)
    if task == "multi-label":
        y = rng.integers(0, 2, (n, c))
        return y, 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.5, (n, c)))))
    c = 2 if task == "binary" else c
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c)) + 1.5 * np.eye(c)[y]
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


def test_training_curves_with_missing_values(tmp_path):
    rows = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e + 0.01 * e,
            "val_auc": 0.7 + 0.02 * e - 0.002 * e**2,
            "val_acc": 0.6 + 0.01 * e,
            "lr": 1e-3 if e < 4 else 1e-4,
        }
        for e in range(1, 8)
    ]
    rows[2].pop("val_loss")
    rows[4]["val_acc"] = None
    _assert_png(plot_training_curves(rows, tmp_path / "curves.png"))
    _assert_png(plot_training_curves([{"epoch": 1, "train_loss": 0.5}], tmp_path / "one.png"))


@pytest.mark.parametrize(
    "task, names",
    [("binary", ["malignant", "normal/benign"]), ("multi-class", None), ("multi-label", ["a", "b", "c"])],
)
def test_roc_and_confusion(tmp_path, task, names):
    y, s = _case(task)
    _assert_png(plot_roc(y, s, task, names, tmp_path / "roc.png"))
    _assert_png(plot_confusion(y, s, task, names, tmp_path / "sub" / "confusion.png"))


def test_multiclass_with_seven_label_names(tmp_path):
    y, s = _case("multi-class", n=300, c=7)
    _assert_png(plot_roc(y, s, "multi-class", DERMA, tmp_path / "roc7.png"))
    _assert_png(plot_confusion(y, s, "multi-class", DERMA, tmp_path / "confusion7.png", normalize=False))


def test_roc_with_missing_class_and_bad_names(tmp_path):
    y, s = _case("multi-class", n=60, c=3)
    y[y == 2] = 0  # class 2 has no positive case: drawn as "n/a"
    with pytest.warns(UserWarning, match="class"):
        _assert_png(plot_roc(y, s, "multi-class", ["a", "b", "c"], tmp_path / "roc.png"))
    with pytest.raises(ValueError, match="label names"):
        plot_confusion(y, s, "multi-class", ["a", "b"], tmp_path / "bad.png")


def test_values_per_epoch(tmp_path):
    series = {"from scratch": [0.70, 0.75, 0.78, None], "MAE pretrained": [0.80, 0.84, 0.86, 0.87]}
    _assert_png(plot_values_per_epoch(series, tmp_path / "auc.png", "val AUC", "Pretraining"))


def test_values_per_epoch_with_one_panel_per_dataset(tmp_path):
    from PIL import Image

    from medlite.report.plots import plot_values_per_epoch

    path = plot_values_per_epoch({"breast": {"scratch": [0.5, 0.6], "MAE": [0.7, 0.8]},
                                  "derma": {"scratch": [0.8, None, 0.9]}},
                                 tmp_path / "panels.png", ylabel="val AUC", title="MAE vs scratch")
    w, h = Image.open(path).size
    assert w > 1.5 * h  # two panels side by side
