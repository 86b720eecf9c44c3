"""The sign-of-life metric of zoo weights, computed the same way when the zoo is built (``zoo/build.py``
records it in the manifest) and when it is tested (``tests/zoo``): a changed file, a changed loader or a
changed preprocessing shows up as a different number.

- classifier: MedMNIST test AUC / ACC (official definitions) on the whole test split of its subset;
- segmentation: Dice at the original size on the first :data:`N_CASES` test cases (sorted by name) of the
  split it was trained on, with the post-processing its record chose on validation;
- promptable: box-prompt DSC on the first :data:`N_CASES` cases of the BUSI test list (one box around the
  whole ground-truth mask, the LiteMedSAM protocol of ``medlite sam evaluate``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

N_CASES = 10


def _first(split, n: int):
    from medlite.data.segmentation import SegSplit

    order = sorted(range(len(split)), key=lambda i: split.names[i])[:n]
    idx = torch.tensor(order)
    return SegSplit(images=split.images[idx], masks=split.masks[idx], names=[split.names[i] for i in order],
                    geometry=[split.geometry[i] for i in order], originals=[split.originals[i] for i in order])


@torch.no_grad()
def sign_of_life(model: nn.Module, meta: dict[str, Any], data_root: str | None = None) -> dict[str, Any]:
    """The metric of :mod:`this module <medlite.zoo.verify>` for ``model`` and its run record."""
    model = model.eval()
    kind = meta["kind"]
    if kind == "classifier":
        from medlite.data import load_classification
        from medlite.engine.evaluate import predict
        from medlite.metrics.classification import medmnist_acc, medmnist_auc

        pre = meta["preprocessing"]
        data = load_classification(meta["data"]["name"], size=pre["size"], root=data_root)
        probs, labels, _ = predict(model, data.test, pre["mean"], pre["std"], data.task)
        return {"split": "test", "n": len(data.test), "auc": float(medmnist_auc(labels, probs, data.task)),
                "acc": float(medmnist_acc(labels, probs, data.task))}
    if kind == "segmentation":
        from medlite.engine.tasks.segment.evaluate import evaluate_original, predict_probs
        from medlite.engine.tasks.segment.train import SegTrainConfig, load_seg_data

        cfg = SegTrainConfig.from_dict({**meta["train_config"], "data_root": data_root or ""})
        test = _first(load_seg_data(cfg).test, N_CASES)
        pre = meta["preprocessing"]
        probs = predict_probs(model, test.images, pre["mean"], pre["std"])
        summary, _ = evaluate_original(probs, test, postprocess=pre.get("postprocess", "none"))
        return {"split": f"first {len(test)} test cases", "n": len(test), "dice": float(summary["dice"]["mean"])}
    if kind == "promptable":
        from medlite.data.segmentation import load_builtin
        from medlite.engine.tasks.promptable import evaluate_sam

        size = int(meta["model"].get("img_size", 256))
        test = _first(load_builtin("busi", size=size, mode="pad", root=data_root).test, N_CASES)
        res = evaluate_sam(model, test, prompts=("box",))
        return {"split": f"first {len(test)} BUSI test-list cases, box prompt", "n": len(test),
                "dsc": float(res["box"]["dsc"]["mean"])}
    raise ValueError(f"no sign-of-life metric for kind {kind!r}")
