"""MAE pretraining: the loss falls on real data, the engine resumes, and fine-tuning starts from it."""

import numpy as np
import pytest
import torch

import medlite
from medlite.engine.checkpoint import read_checkpoint
from medlite.engine.tasks.classify import TrainConfig, train
from medlite.engine.tasks.mae import PretrainConfig, pretrain

TINY = {"embed_dim": 48, "depth": 2, "num_heads": 2, "num_kv_groups": 1, "experts_per_stage": [2, 2],
        "expert_hidden_start": 32, "expert_hidden_end": 16}


@pytest.mark.data
def test_mae_loss_decreases_on_real_breastmnist(real_data_root):
    from medlite.data import load_classification
    from medlite.data.transforms import to_float
    from medlite.models.mae import MAEPretrainer

    torch.manual_seed(0)
    data = load_classification("breastmnist", size=28, root=real_data_root)
    x = to_float(data.train.images[:64], [0.5], [0.5])
    mae = MAEPretrainer(medlite.create_model("medlit_nano_28", in_chans=3, img_size=28))
    opt = torch.optim.AdamW(mae.parameters(), lr=1e-3)

    def loss_on_fixed_masks():
        mae.eval()
        with torch.no_grad():
            return mae(x, generator=torch.Generator().manual_seed(123))[0].item()

    before = loss_on_fixed_masks()
    mae.train()
    for step in range(15):
        loss, _, _ = mae(x, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = loss_on_fixed_masks()
    assert np.isfinite(after) and after < 0.9 * before


def test_pretrain_then_finetune_from_encoder(tiny_npz, tmp_path, monkeypatch):
    # Pretraining builds the registered encoder; make the registered nano tiny for the test.
    from medlite.models import medlit as medlit_models

    real = medlit_models.medlit_nano_28
    monkeypatch.setitem(medlite.registry._REGISTRY, "medlit_nano_28",
                        (lambda **kw: real(**{**TINY, **kw}), medlite.model_card("medlit_nano_28")))
    cfg = PretrainConfig(model="medlit_nano_28", data=str(tiny_npz), size=16, epochs=2, batch_size=32,
                         out=str(tmp_path / "mae"), progress=False)
    res = pretrain(cfg)
    enc_w, meta, _ = read_checkpoint(res["encoder"])
    assert meta["kind"] == "mae-encoder" and meta["model"]["in_chans"] == 3
    assert (tmp_path / "mae" / "plots" / "mae_loss.png").is_file()
    # resume of a finished run adds nothing and keeps the history
    res2 = pretrain(cfg, resume=True)
    assert res2["epochs"] == 2

    run = train(TrainConfig(model="medlit_nano_28", data=str(tiny_npz), size=16, epochs=1, batch_size=32,
                            init=res["encoder"], out=str(tmp_path / "ft"), n_boot=20, progress=False,
                            plots=False, max_steps_per_epoch=1))
    assert run["test"]["n"] == 48
    # before any step the 1-channel patch embedding is the sum of the 3 pretrained channel weights
    model = medlite.create_model("medlit_nano_28", num_classes=3, in_chans=1, img_size=16)
    from medlite.engine.tasks.classify import _init_from

    _init_from(model, res["encoder"])
    torch.testing.assert_close(model.patch_embed.proj.weight,
                               enc_w["patch_embed.proj.weight"].sum(dim=1, keepdim=True))
