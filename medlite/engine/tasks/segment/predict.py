"""Segment image files with a trained checkpoint (PyTorch) or an exported ``.onnx`` file (ONNX Runtime)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from medlite.data.seg_postprocess import postprocess_mask
from medlite.data.segmentation import letterbox, read_rgb, restore
from medlite.record import require_kind


class SegPredictor:
    """Preprocess like training (3 channels, resize or letterbox, normalise), predict, map back to the
    original size. Build with :meth:`load`."""

    def __init__(self, run, meta: dict, backend: str, model=None) -> None:
        self._run, self.meta, self.backend, self.model = run, meta, backend, model  # model: torch backend only
        pre = meta["preprocessing"]
        self.size, self.mode = int(pre["size"]), pre.get("mode", "resize")
        self.mean = np.asarray(pre["mean"], np.float32)[:, None, None]
        self.std = np.asarray(pre["std"], np.float32)[:, None, None]
        self.threshold = float(pre.get("threshold", 0.5))
        self.postprocess = pre.get("postprocess", "none")  # chosen on validation at training time

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int | None = None) -> SegPredictor:
        """A run folder / ``.safetensors`` checkpoint, or an ``.onnx`` file exported by medlite."""
        if str(path).endswith(".onnx"):
            import onnxruntime as ort

            from medlite.errors import ModelFileError
            from medlite.record import META_KEY, parse

            if not Path(path).is_file():
                raise ModelFileError(f"{path}: model file not found")
            so = ort.SessionOptions()
            if threads:
                so.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            raw = sess.get_modelmeta().custom_metadata_map.get(META_KEY)
            if raw is None:
                raise ModelFileError(f"{path}: no medlite metadata (not exported by medlite)")
            name = sess.get_inputs()[0].name
            meta = parse(raw, str(path))
            require_kind(meta, "segmentation", str(path), "medlite seg predict")
            return cls(lambda x: sess.run(None, {name: x})[0], meta, "onnx")
        import torch

        from medlite.engine.checkpoint import load_model

        if threads:
            torch.set_num_threads(threads)
        model, meta = load_model(path)
        require_kind(meta, "segmentation", str(path), "medlite seg predict")

        @torch.no_grad()
        def run(x: np.ndarray) -> np.ndarray:
            return model(torch.from_numpy(x)).numpy()

        return cls(run, meta, "torch", model)

    def predict_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) float32 foreground probability at the original size."""
        x, geom = letterbox(image, self.size, self.mode)
        x = (x.transpose(2, 0, 1).astype(np.float32) / 255.0 - self.mean) / self.std
        logits = self._run(np.ascontiguousarray(x[None]))[0, 0]
        return restore(1.0 / (1.0 + np.exp(-logits)), geom)

    def explain_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) Grad-CAM of the predicted mask in [0, 1] at the original size (PyTorch
        checkpoints only: an ONNX graph has no gradients)."""
        if self.model is None:
            from medlite.errors import ModelFileError

            raise ModelFileError("--explain needs a PyTorch checkpoint (run folder, .safetensors or zoo name); "
                                 "an ONNX graph has no gradients")
        import torch

        from medlite.explain import seg_gradcam_heatmap

        x, geom = letterbox(image, self.size, self.mode)
        x = (x.transpose(2, 0, 1).astype(np.float32) / 255.0 - self.mean) / self.std
        heat = seg_gradcam_heatmap(self.model, torch.from_numpy(np.ascontiguousarray(x[None])))[0]
        return np.clip(restore(heat.numpy(), geom), 0.0, 1.0)

    def predict_file(self, path: str | os.PathLike, out_dir: str | os.PathLike, explain: bool = False) -> dict:
        """Write ``<stem>_mask.png`` (0/255) and ``<stem>_overlay.png`` into ``out_dir`` (and with ``explain``
        ``<stem>_explain.png``: the Grad-CAM of the mask over the image); return a summary."""
        from medlite.report.seg_plots import save_overlay

        image = read_rgb(path)
        mask = postprocess_mask(self.predict_image(image) > self.threshold, self.postprocess).astype(np.uint8)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = Path(str(path).split("::")[0]).name.split(".")[0]
        mask_path = out / f"{stem}_mask.png"
        Image.fromarray(mask * 255).save(mask_path)
        save_overlay(out / f"{stem}_overlay.png", image, mask)
        result = {"image": str(path), "mask": str(mask_path), "height": mask.shape[0], "width": mask.shape[1],
                  "pixels": int(mask.sum()), "fraction": float(mask.mean())}
        if explain:
            from medlite.report.seg_plots import save_heat_overlay

            title = f"{self.meta['model']['name']}: Grad-CAM of the mask"
            result["explain"] = str(save_heat_overlay(out / f"{stem}_explain.png", image, self.explain_image(image),
                                                      mask, title=title))
        return result
