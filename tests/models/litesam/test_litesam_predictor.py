from __future__ import annotations

import numpy as np
import pytest
import torch

from medlite.data.prompts import to_model_frame
from medlite.data.segmentation import Geometry
from medlite.models.litesam import LiteSAMPredictor
from medlite.models.litesam.predictor import to_rgb_uint8


def _count_encoder_calls(model):
    calls = []
    model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_encoder_runs_once_for_many_prompts(tiny_litesam):
    calls = _count_encoder_calls(tiny_litesam)
    p = LiteSAMPredictor(tiny_litesam)
    img = np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)
    p.set_image(img)
    p.segment(box=[10, 5, 60, 40])
    p.segment(points=[[30, 20], [5, 5]], point_labels=[1, 0])
    scr = np.zeros((50, 80), np.float32)
    scr[20:22, 20:50] = 1
    p.segment(scribble=scr)
    p.segment(box=[10, 5, 60, 40], points=[[30, 20]])
    p.predict_boxes(np.array([[0, 0, 20, 20], [30, 10, 70, 45]]))
    assert len(calls) == 1 and p.encoder_calls == 1


@pytest.mark.parametrize("shape", [(37, 100), (120, 45, 3), (64, 64, 4), (30, 50, 1), (40, 33, 5)])
def test_masks_at_original_size(tiny_litesam, shape):
    p = LiteSAMPredictor(tiny_litesam)
    img = np.random.default_rng(1).random(shape).astype(np.float32) * 1000  # not uint8: min-max scaled
    p.set_image(img)
    h, w = shape[:2]
    mask, iou = p.segment(box=[2, 2, w - 3, h - 3])
    assert mask.shape == (h, w) and mask.dtype == bool and 0.0 <= iou <= 1.0
    probs, _ = p.segment(points=[[w // 2, h // 2]], return_probs=True)
    assert probs.shape == (h, w) and probs.dtype == np.float32
    masks, ious = p.predict_boxes(np.array([[0, 0, w // 2, h // 2], [1, 1, w - 1, h - 1]]))
    assert masks.shape == (2, h, w) and ious.shape == (2,)


def test_predict_needs_image_and_prompt(tiny_litesam):
    p = LiteSAMPredictor(tiny_litesam)
    with pytest.raises(RuntimeError, match="set_image"):
        p.segment(box=[0, 0, 5, 5])
    p.set_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="prompt"):
        p.segment()
    with pytest.raises(ValueError, match="point_labels"):
        p.segment(points=[[1, 1]], point_labels=[3])


def test_channel_handling():
    assert to_rgb_uint8(np.zeros((4, 5))).shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb_uint8(rgba).max() == 0  # alpha dropped
    grey16 = np.arange(20, dtype=np.uint16).reshape(4, 5) * 1000
    out = to_rgb_uint8(grey16)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_model_frame_mapping():
    g = Geometry.of(100, 200, 64, "pad")  # wide image: scaled by 0.32, padded top and bottom
    np.testing.assert_allclose(to_model_frame(np.array([0, 0, 200, 100]), g), [0, g.top, 64, g.top + 32])
    np.testing.assert_allclose(to_model_frame(np.array([[100, 50]]), g), [[32, g.top + 16]])


def test_predictor_follows_the_box(tiny_litesam):
    """A model trained for a few steps is not needed to check geometry: the prompt's position must change
    the answer (a box on the left vs on the right of a non-square image)."""
    torch.manual_seed(0)
    p = LiteSAMPredictor(tiny_litesam)
    p.set_image(np.random.default_rng(2).integers(0, 255, (40, 120, 3), dtype=np.uint8))
    a, _ = p.segment(box=[2, 2, 40, 38], return_probs=True)
    b, _ = p.segment(box=[80, 2, 118, 38], return_probs=True)
    assert not np.allclose(a, b)


def test_sam_predictor_api(tiny_litesam):
    """predict / predict_torch / set_image follow segment-anything's SamPredictor (ecosystem issue, item 4)."""
    p = LiteSAMPredictor(tiny_litesam)
    img = np.random.default_rng(1).integers(0, 255, (50, 80, 3), dtype=np.uint8)
    p.set_image(img)
    box = np.array([10, 5, 60, 40])
    masks, scores, low = p.predict(box=box, multimask_output=True)
    s = tiny_litesam.cfg.img_size
    assert masks.shape == (1, 50, 80) and masks.dtype == bool and scores.shape == (1,) and low.shape == (1, s, s)
    mask, iou = p.segment(box=box)
    assert np.array_equal(masks[0], mask) and scores[0] == pytest.approx(iou)
    pts, lab = np.array([[30, 20]]), np.array([1])
    logits, _, _ = p.predict(point_coords=pts, point_labels=lab, return_logits=True)
    point_mask = p.predict(point_coords=pts, point_labels=lab)[0][0]
    assert logits.shape == (1, 50, 80) and logits.dtype == np.float32
    assert ((logits[0] > 0) == point_mask).mean() > 0.99  # logits resized vs probabilities resized: edges only
    with pytest.raises(ValueError, match="mask_input"):
        p.predict(box=box, mask_input=low)
    bm, bs, bl = p.predict_torch(boxes=torch.tensor([[10, 5, 60, 40], [30, 10, 70, 45]]))
    assert bm.shape == (2, 1, 50, 80) and bs.shape == (2, 1) and bl.shape == (2, 1, s, s)
    assert torch.equal(bm[0, 0], torch.from_numpy(mask))
    q = LiteSAMPredictor(tiny_litesam)
    q.set_image(img[:, :, ::-1].copy(), image_format="BGR")  # OpenCV order gives the same answer
    assert np.array_equal(q.predict(box=box)[0], masks)
    with pytest.raises(ValueError, match="image_format"):
        q.set_image(img, image_format="HSV")
