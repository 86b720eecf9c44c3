import torch

import medlite
from medlite.models.mae import MAEPretrainer, load_encoder_into, patchify, to_3ch, unpatchify

TINY = dict(embed_dim=24, depth=3, expert_hidden_start=8, expert_hidden_end=4)


def _mae(**kw) -> MAEPretrainer:
    enc = medlite.create_model("medlit_nano_28", in_chans=3, **TINY)
    return MAEPretrainer(enc, decoder_dim=16, decoder_depth=1, decoder_heads=2, **kw)


def test_mae_loss_backward_grey_input():
    torch.manual_seed(0)
    mae = _mae().train()
    x = torch.randn(4, 1, 28, 28)  # grey images are repeated to 3 channels
    loss, pred, mask = mae(x, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == (4, 49, 4 * 4 * 3)
    assert mask.shape == (4, 49)
    assert (mask.sum(1) == 49 - round(49 * 0.25)).all()  # 75 % masked, per sample
    loss.backward()
    for name, p in mae.named_parameters():
        if name.startswith("encoder.head."):
            assert p.grad is None  # the classifier head is not part of pretraining
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_masks_are_random_per_sample_and_reproducible():
    mae = _mae().eval()
    x = torch.randn(3, 3, 28, 28)
    _, _, m1 = mae(x, generator=torch.Generator().manual_seed(1))
    _, _, m2 = mae(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(m1, m2)
    assert not torch.equal(m1[0], m1[1])


def test_patchify_roundtrip_and_to_3ch():
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(unpatchify(patchify(x, 4), 4, 3), x)
    assert to_3ch(torch.randn(2, 1, 8, 8)).shape == (2, 3, 8, 8)


def test_load_encoder_into_grey_classifier():
    torch.manual_seed(0)
    mae = _mae()
    clf = medlite.create_model("medlit_nano_28", in_chans=1, num_classes=5, **TINY).eval()
    result = load_encoder_into(clf, mae.encoder_state_dict())
    assert set(result.missing_keys) == {"head.weight", "head.bias"}
    assert result.unexpected_keys == []
    grey = torch.randn(2, 1, 28, 28)
    # summed channel weights: a grey image gives the tokens the 3-channel encoder gives its RGB repeat
    mae.encoder.eval()
    torch.testing.assert_close(clf.forward_features(grey), mae.encoder.forward_features(to_3ch(grey)),
                               atol=1e-5, rtol=1e-5)


def test_load_encoder_into_other_grid_resamples_position_embedding():
    mae = _mae()
    clf = medlite.create_model("medlit_nano_28", in_chans=3, img_size=56, **TINY)
    result = load_encoder_into(clf, mae.encoder_state_dict())
    assert set(result.missing_keys) == {"head.weight", "head.bias"}
    assert clf.pos_embed.shape == (1, 1 + 14 * 14, 24)
    torch.testing.assert_close(clf.pos_embed[:, 0], mae.encoder.pos_embed[:, 0])  # cls position kept
