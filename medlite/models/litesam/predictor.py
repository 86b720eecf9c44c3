"""SAM-like predictor: ``set_image`` encodes once, ``predict`` answers each prompt from the cache.

Images of any size and channel count go in ((H, W), (H, W, 1), (H, W, 3), (H, W, 4) with alpha dropped,
or (H, W, C) whose channel mean is used; any dtype, min-max scaled to uint8). They are letterboxed to the
model input (longest side to S, zero padding, as LiteMedSAM does) and every mask comes back at the
original size. Prompt coordinates are in original-image pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from medlite.data.frames import (  # noqa: F401 (Geometry, to_rgb_uint8 re-exported)
    Geometry,
    check_boxes,
    letterbox,
    restore,
    scribble_to_model_frame,
    sparse_prompt,
    to_model_frame,
    to_rgb_uint8,
)
from medlite.models.litesam.image_encoder import ImageFeatures


def normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) uint8 letterboxed images -> float32 in [0, 1], per-image min-max (LiteMedSAM)."""
    x = images.float()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def preprocess(image: np.ndarray, size: int) -> tuple[torch.Tensor, Geometry]:
    """(H, W[, C]) image -> ((1, 3, size, size) float32 model input, its Geometry)."""
    boxed, g = letterbox(to_rgb_uint8(image), size, mode="pad")
    return normalise(torch.from_numpy(boxed).permute(2, 0, 1)[None]), g


class LiteSAMPredictor:
    """Encode an image once, then segment it for many prompts.

    ``predict`` / ``predict_torch`` / ``set_image`` follow segment-anything's ``SamPredictor`` (same
    argument names and return shapes; LiteSAM has one mask output, so C = 1 whatever ``multimask_output``
    says); ``segment`` is medlite's shorthand for one mask and its score, and takes scribbles too.

    Example:
        >>> p = LiteSAMPredictor(model)
        >>> p.set_image(image)                          # (H, W, 3) uint8 RGB, any size
        >>> masks, scores, low_res = p.predict(box=np.array([40, 30, 200, 180]))   # (1, H, W), (1,), (1, S, S)
        >>> mask, iou = p.segment(points=[[120, 100]], point_labels=[1])             # (H, W) bool, float
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.size = int(model.cfg.img_size)
        self.features: ImageFeatures | None = None
        self.geometry: Geometry | None = None
        self.encoder_calls = 0  # how often set_image ran the encoder (tests check the cache)

    @torch.no_grad()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute and cache the image features. image: (H, W[, C]) array, any dtype; ``image_format``
        "RGB" or "BGR" (OpenCV's order) for 3-channel images."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR'; got {image_format!r}")
        image = np.asarray(image)
        if image_format == "BGR" and image.ndim == 3 and image.shape[2] >= 3:
            image = image[:, :, [2, 1, 0]]
        x, self.geometry = preprocess(image, self.size)
        self.features = self.model.forward_features(x.to(self.device))
        self.encoder_calls += 1

    def _iou(self, iou: torch.Tensor) -> torch.Tensor:
        score = getattr(self.model, "iou_score", None)  # a LiteSAM; exported graphs give logits
        return score(iou) if score is not None else torch.sigmoid(iou)

    def reset_image(self) -> None:
        self.features, self.geometry = None, None

    def check_boxes(self, boxes: np.ndarray, what: str = "box") -> np.ndarray:
        """(N, 4) xyxy boxes in original pixels, checked against the cached image (see frames.check_boxes)."""
        return check_boxes(boxes, self.geometry, what)

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False, scribble=None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SamPredictor.predict: one prompt (points and / or a box; medlite adds ``scribble``).

        Args:
            point_coords: (K, 2) (x, y) in original pixels; point_labels: (K,) 1 foreground / 0 background.
            box: (4,) xyxy in original pixels.
            mask_input: not supported (LiteSAM's dense prompt is a scribble); must be None.
            multimask_output: accepted for compatibility; LiteSAM always gives one mask.
            return_logits: masks as logits at the original size instead of booleans.
        Returns:
            masks (1, H, W) bool (or float32 logits), scores (1,) predicted IoU, low_res_logits (1, S, S)
            float32 in the model frame (S = the model input size).
        """
        if mask_input is not None:
            raise ValueError("mask_input is not supported by LiteSAM (its dense prompt is a scribble: scribble=)")
        logits, iou = self._decode(box, point_coords, point_labels, scribble)
        g = self.geometry  # masks as segment() and the evaluation make them: probabilities resized, then > 0.5
        masks = restore(logits, g) if return_logits else restore(torch.sigmoid(logits), g) > 0.5
        return masks[None], np.array([iou], np.float32), logits.numpy()[None]

    @torch.no_grad()
    def predict_torch(self, point_coords=None, point_labels=None, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SamPredictor.predict_torch: a batch of B prompts on the cached image, in original pixels.

        Args:
            point_coords: (B, K, 2) tensor; point_labels: (B, K); boxes: (B, 4) xyxy. Either or both.
        Returns:
            masks (B, 1, H, W) bool (or logits), scores (B, 1), low_res_logits (B, 1, S, S).
        """
        if mask_input is not None:
            raise ValueError("mask_input is not supported by LiteSAM (its dense prompt is a scribble)")
        n = len(boxes) if boxes is not None else len(point_coords) if point_coords is not None else 0
        if n == 0:
            raise ValueError("give boxes and / or point_coords with point_labels")
        out = [self.predict(None if point_coords is None else point_coords[i].cpu().numpy(),
                            None if point_labels is None else point_labels[i].cpu().numpy(),
                            None if boxes is None else boxes[i].cpu().numpy(), None, multimask_output,
                            return_logits) for i in range(n)]
        return tuple(torch.from_numpy(np.stack([o[k] for o in out])) for k in range(3))

    @torch.no_grad()
    def _decode(self, box, points, point_labels, scribble) -> tuple[torch.Tensor, float]:
        """(S, S) mask logits in the model frame and the predicted IoU of one prompt."""
        if self.features is None:
            raise RuntimeError("call set_image(image) before predict()")
        if box is None and points is None and scribble is None:
            raise ValueError("give at least one prompt: box, points or scribble")
        coords, labels = sparse_prompt(box, points, point_labels, self.geometry)
        g = self.geometry
        dense = np.zeros((g.size, g.size), np.float32) if scribble is None else scribble_to_model_frame(scribble, g)
        logits, iou = self.model.forward_head(
            self.features, torch.from_numpy(coords)[None].to(self.device),
            torch.from_numpy(labels)[None].to(self.device), torch.from_numpy(dense)[None, None].to(self.device),
            torch.tensor([0.0 if scribble is None else 1.0], device=self.device))
        return logits[0, 0].float().cpu(), float(self._iou(iou[:1])[0, 0])

    def segment(self, box=None, points=None, point_labels=None, scribble=None,
                return_probs: bool = False) -> tuple[np.ndarray, float]:
        """Segment the cached image for one prompt (any combination of box, points and scribble).

        Args:
            box: (4,) xyxy in original pixels.
            points: (K, 2) (x, y) in original pixels; point_labels: (K,) 1 positive / 0 negative
                (default all positive).
            scribble: (H, W) map, +1 foreground strokes, -1 background strokes, 0 elsewhere.
            return_probs: give the (H, W) float32 probability map instead of the thresholded mask.
        Returns:
            (H, W) bool mask (or probabilities) at the original size, predicted IoU in [0, 1].
        """
        logits, iou = self._decode(box, points, point_labels, scribble)
        prob = restore(torch.sigmoid(logits), self.geometry)
        return (prob if return_probs else prob > 0.5), iou

    @torch.no_grad()
    def predict_boxes(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Many box prompts in one decoder batch: boxes (N, 4) xyxy original pixels -> (N, H, W) bool, (N,)."""
        if self.features is None:
            raise RuntimeError("call set_image(image) before predict_boxes()")
        boxes = self.check_boxes(boxes)
        g = self.geometry
        if len(boxes) == 0:
            return np.zeros((0, g.height, g.width), bool), np.zeros(0, np.float32)
        mb = to_model_frame(boxes, g)
        coords = torch.from_numpy(mb.reshape(-1, 2, 2)).to(self.device)
        labels = torch.tensor([[2.0, 3.0]], device=self.device).expand(len(boxes), 2)
        dense = torch.zeros(len(boxes), 1, g.size, g.size, device=self.device)
        logits, iou = self.model.forward_head(self.features, coords, labels, dense,
                                              torch.zeros(len(boxes), device=self.device))
        probs = torch.sigmoid(logits[:, 0]).cpu()
        masks = np.stack([restore(p, g) > 0.5 for p in probs])
        return masks, self._iou(iou)[:, 0].cpu().numpy()
