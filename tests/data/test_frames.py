"""The torch-free frames (numpy + Pillow) against the PyTorch operations they replace."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medlite.data.frames import Geometry, restore, scribble_to_model_frame


@pytest.mark.parametrize(("h", "w"), [(37, 91), (256, 256), (600, 451), (13, 7)])
def test_restore_is_torch_bilinear_without_align_corners(h, w):
    g = Geometry.of(h, w, 64, "pad")
    prob = torch.rand(64, 64, generator=torch.Generator().manual_seed(h))
    crop = prob[g.top:g.top + g.new_h, g.left:g.left + g.new_w]
    want = F.interpolate(crop[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    got = restore(prob, g)
    assert got.shape == (h, w) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-6)


@pytest.mark.parametrize(("h", "w"), [(40, 90), (300, 211), (64, 64)])
def test_scribble_keeps_every_stroke_like_area_pooling(h, w):
    rng = np.random.default_rng(w)
    s = np.zeros((h, w), np.float32)
    s[rng.integers(0, h, 30), rng.integers(0, w, 30)] = 1
    s[rng.integers(0, h, 30), rng.integers(0, w, 30)] = -1
    g = Geometry.of(h, w, 48, "pad")
    want = torch.zeros(48, 48)
    t = torch.from_numpy(s)[None, None]
    for sign in (1.0, -1.0):
        part = F.interpolate((t == sign).float(), size=(g.new_h, g.new_w), mode="area")[0, 0] > 0
        want[g.top:g.top + g.new_h, g.left:g.left + g.new_w][part] = sign
    np.testing.assert_array_equal(scribble_to_model_frame(s, g), want.numpy())


def test_frames_import_without_torch():
    code = ("import sys; import medlite.data.frames, medlite.export.sam_runtime; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
