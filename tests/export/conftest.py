"""Fixtures for the deployment tests: a tiny MedLiT trained for a second on a learnable synthetic task,
saved as a medlite run folder, and its ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import medlite
from medlite.engine.checkpoint import save_checkpoint

SIZE = 16
LABELS = ["left", "middle", "right"]
# A 26 k-parameter MedLiT (4x4 patches on 16 px: 16 tokens), small enough to train in a second.
TINY_MEDLIT = {"embed_dim": 48, "num_heads": 4, "num_kv_groups": 2, "depth": 2, "experts_per_stage": [2, 3],
               "expert_hidden_start": 32, "expert_hidden_end": 16}


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, 16, 16) uint8 images whose class (0, 1, 2) is which third of the image is bright."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, 1, SIZE, SIZE)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, :, :, c * 5 : c * 5 + 5] += 150
    return x, y


def normalised(x: np.ndarray) -> np.ndarray:
    """uint8 -> the model input, (x / 255 - 0.5) / 0.5, float32."""
    return ((x.astype(np.float32) / 255.0 - 0.5) / 0.5).astype(np.float32)


def tiny_meta(name: str = "medlit_nano_28", kwargs: dict | None = None, task: str = "multi-class") -> dict:
    return {
        "medlite_version": medlite.__version__,
        "kind": "classifier",
        "model": {"name": name, "num_classes": 3, "in_chans": 1, "img_size": SIZE,
                  "kwargs": TINY_MEDLIT if kwargs is None else kwargs},
        "preprocessing": {"size": SIZE, "channels": 1, "mean": [0.5], "std": [0.5]},
        "data": {"name": "synthetic-thirds", "task": task, "label_names": LABELS},
        "train_config": {"epochs": 1},
        "metrics": {},
    }


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The test machines are small and shared; one intra-op thread avoids oversubscription stalls."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run folder (``best.safetensors``) with the tiny MedLiT trained to ~100 % on the synthetic task."""
    torch.manual_seed(0)
    meta = tiny_meta()
    model = medlite.create_model("medlit_nano_28", num_classes=3, in_chans=1, img_size=SIZE, **TINY_MEDLIT)
    x, y = synthetic(256, seed=0)
    xt, yt = torch.from_numpy(normalised(x)), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "best.safetensors", model, meta)
    return run


@pytest.fixture(scope="session")
def test_set() -> tuple[np.ndarray, np.ndarray]:
    """200 held-out synthetic images, normalised (200, 1, 16, 16) float32, and their (200,) labels."""
    x, y = synthetic(200, seed=1)
    return normalised(x), y


@pytest.fixture(scope="session")
def calib_images() -> np.ndarray:
    """64 other synthetic images, normalised: (64, 1, 16, 16) float32."""
    return normalised(synthetic(64, seed=2)[0])


@pytest.fixture(scope="session")
def trained_onnx(trained_run, tmp_path_factory) -> Path:
    from medlite.engine.checkpoint import load_model
    from medlite.export.onnx import export_onnx

    model, meta = load_model(trained_run)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(model, meta, path)
    return path


@pytest.fixture
def toy_npz(tmp_path) -> Path:
    """The synthetic task in the MedMNIST npz layout: grey (N, 16, 16) uint8 images, (N, 1) labels."""
    arrays = {}
    for i, split in enumerate(("train", "val", "test")):
        x, y = synthetic(60, seed=10 + i)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x[:, 0], y[:, None].astype(np.uint8)
    np.savez(tmp_path / "toy.npz", **arrays)
    return tmp_path / "toy.npz"
