"""Writes the legacy checkpoints in this folder: one of each kind, as medlite 0.1.0 wrote them before the
one-training-core redesign (commit e7d536b). Kept to show how they were made; it runs only on that commit:

    git worktree add /tmp/before e7d536b
    cd /tmp/before && PYTHONPATH=. python /path/to/make_legacy.py OUT_DIR

Each run trains for one step on synthetic data with a tiny variant, so the files are a few hundred KB.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(sys.argv[1])
TINY_MEDLIT = {"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2, "experts_per_stage": [2, 3],
               "expert_hidden_start": 24, "expert_hidden_end": 12}
TINY_SEG = {"encoder": "mobilenetv2_035", "bottleneck_dim": 32, "transformer_dim": 32, "transformer_depth": 1,
            "transformer_heads": 2, "aspp_branch": 16, "decoder_dims": [16, 16, 16, 16]}
TINY_SAM = {"dims": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "heads": [1, 1, 1, 1], "embed_dim": 32,
            "decoder_heads": 2, "decoder_mlp_dim": 32}


def npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 64), ("val", 32), ("test", 32)):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, :, c * 5: c * 5 + 5] += 150
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.astype(np.uint8).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def seg_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(12):
        img = rng.integers(0, 60, (48, 72), dtype=np.uint8)
        m = np.zeros((48, 72), np.uint8)
        r, c = rng.integers(4, 20), rng.integers(4, 40)
        m[r:r + 20, c:c + 24] = 255
        img[m > 0] += 150
        Image.fromarray(img).save(root / "images" / f"c{i}.png")
        Image.fromarray(m).save(root / "masks" / f"c{i}.png")
    return root


def keep(run: Path, name: str, src: str = "best.safetensors") -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / src, OUT / f"{name}.safetensors")
    shutil.copy(run / src.replace(".safetensors", ".json"), OUT / f"{name}.json")


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    data = npz(tmp / "tiny.npz")
    from medlite.engine.train import TrainConfig, train

    train(TrainConfig(model="medlit_nano_28", data=str(data), size=16, epochs=1, batch_size=32, out=str(tmp / "cls"),
                      model_kwargs=TINY_MEDLIT, progress=False, plots=False, n_boot=10, max_steps_per_epoch=1))
    keep(tmp / "cls", "classifier")

    from medlite.compress.distill import DistillConfig, distill

    distill(DistillConfig(student="medlit_nano_28", teacher=str(tmp / "cls"), data=str(data), epochs=1, batch_size=32,
                          out=str(tmp / "dis"), student_kwargs=TINY_MEDLIT, n_boot=10, max_steps_per_epoch=1))
    keep(tmp / "dis", "distilled")

    from medlite.engine.pretrain import PretrainConfig, pretrain

    from medlite.models import medlit

    base = medlit.NANO_28  # the MAE builds the registered encoder; make it tiny for the fixture
    tiny = {k: tuple(v) if isinstance(v, list) else v for k, v in TINY_MEDLIT.items()}
    medlit.NANO_28 = medlit.replace(base, stages=None, **tiny)
    pretrain(PretrainConfig(model="medlit_nano_28", data=str(data), size=16, epochs=1, batch_size=32,
                            out=str(tmp / "mae"), progress=False, max_steps_per_epoch=1))
    medlit.NANO_28 = base
    keep(tmp / "mae", "mae_encoder", "encoder.safetensors")

    from medlite.engine.seg_train import SegTrainConfig, train_segmentation

    folder = seg_folder(tmp / "segdata")
    train_segmentation(SegTrainConfig(model="medlitenet", data=str(folder), size=64, epochs=1, batch_size=4,
                                      folds=4, model_kwargs=TINY_SEG, out=str(tmp / "seg"), progress=False,
                                      plots=False, amp="none", max_steps_per_epoch=1))
    keep(tmp / "seg", "segmentation")

    from medlite.engine.sam_train import SamTrainConfig, load_dataset, train_sam

    spec = f"folder:{folder}"
    train_sam(SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY_SAM, datasets=(spec,), img_size=64,
                             epochs=1, batch_size=4, warmup_steps=1, out_dir=str(tmp / "sam"), name="run"),
              {spec: load_dataset(spec, 64)})
    keep(tmp / "sam" / "run", "promptable")
print("wrote", sorted(p.name for p in OUT.iterdir()))
