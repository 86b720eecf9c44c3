"""Tiny MedLiT models and checkpoint metadata shared by the compression tests (16 px, 1 channel, 3 classes).

A module of its own (not conftest.py) so that tests import it by a name no other test folder uses.
"""

from __future__ import annotations

import torch

import medlite

SIZE = 16
# 4x4 patches on 16 px (16 tokens); 4 heads in 2 key/value groups; 3 experts in the second stage.
TINY = {"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2, "experts_per_stage": [2, 3],
        "expert_hidden_start": 24, "expert_hidden_end": 12}


def tiny_medlit(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return medlite.create_model("medlit_nano_28", num_classes=3, in_chans=1, img_size=SIZE, **{**TINY, **kw})


def meta_for(name: str, kwargs: dict, data: str = "synthetic", mean=(0.5,), std=(0.5,)) -> dict:
    return {"medlite_version": medlite.__version__, "kind": "classifier",
            "model": {"name": name, "num_classes": 3, "in_chans": 1, "img_size": SIZE, "kwargs": kwargs},
            "preprocessing": {"size": SIZE, "channels": 1, "mean": list(mean), "std": list(std)},
            "data": {"name": data, "task": "multi-class", "label_names": ["a", "b", "c"]}}
