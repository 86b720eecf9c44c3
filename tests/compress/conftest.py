"""Tiny MedLiT / ViT models and checkpoints for the compression tests (16 px, 1 channel, 3 classes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compress_tiny import SIZE, TINY, meta_for, tiny_medlit

import medlite
from medlite.engine.checkpoint import save_checkpoint


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def medlit_run(tmp_path: Path, tiny_npz: Path) -> Path:
    """Run folder with an (untrained) tiny MedLiT whose meta names the tiny npz as its data."""
    run = tmp_path / "medlit"
    save_checkpoint(run / "best.safetensors", tiny_medlit(), meta_for("medlit_nano_28", TINY, str(tiny_npz)))
    return run


@pytest.fixture
def vit_teacher(tmp_path: Path, tiny_npz: Path) -> Path:
    """Run folder with a small timm ViT teacher (3 blocks, width 48, 3 heads, 4x4 patches)."""
    torch.manual_seed(1)
    kw = {"depth": 3, "embed_dim": 48, "num_heads": 3}
    model = medlite.create_model("vit_tiny_patch16_224", num_classes=3, in_chans=1, img_size=SIZE, **kw)
    run = tmp_path / "teacher"
    card = medlite.model_card("vit_tiny_patch16_224")
    save_checkpoint(run / "best.safetensors", model,
                    meta_for("vit_tiny_patch16_224", kw, str(tiny_npz), card.mean[:1], card.std[:1]))
    return run
