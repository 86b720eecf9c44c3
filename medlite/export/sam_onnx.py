"""LiteSAM -> two ONNX graphs: the image encoder (run once per image) and the prompt decoder (per prompt).

Encoder graph: ``image (1, 3, S, S) float32`` (letterboxed, min-max normalised) -> ``embedding`` and, for
models with skip connections, ``skip_0`` (stride 8) and ``skip_1`` (stride 4).
Decoder graph: those features (batch 1) + ``point_coords (B, N, 2)`` model-frame (x, y),
``point_labels (B, N)`` in {-1, 0, 1, 2, 3}, ``dense_prompt (B, 1, S, S)`` scribble map and
``has_dense (B,)`` -> ``masks (B, M, S, S)`` logits and ``iou (B, M)`` logits; B (prompts) and N (points)
are dynamic. The checkpoint meta is stored in both files (``metadata_props['medlite']``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlite.export.meta import ExportError, write_onnx_meta
from medlite.models.litesam.image_encoder import ImageFeatures

FP32_ATOL = 1e-3  # max |ORT - PyTorch| accepted on mask logits (values of order 10)
DECODER_INPUTS = ("point_coords", "point_labels", "dense_prompt", "has_dense")


class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.model.forward_features(image)
        return (f.embedding, *f.skips)


class DecoderGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_skips = model.num_skips

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = 1 + self.num_skips
        feats = ImageFeatures(args[0], tuple(args[1:k]))
        return self.model.forward_head(feats, *args[k:])


def feature_names(model: nn.Module) -> list[str]:
    return ["embedding"] + [f"skip_{i}" for i in range(model.num_skips)]


def example_inputs(model: nn.Module, prompts: int = 1, points: int = 2, seed: int = 0):
    """(image, decoder prompt inputs) of the right shapes, random but valid."""
    g = torch.Generator().manual_seed(seed)
    s = model.cfg.img_size
    image = torch.rand(1, model.cfg.in_chans, s, s, generator=g)
    coords = torch.rand(prompts, points, 2, generator=g) * s
    labels = torch.randint(-1, 4, (prompts, points), generator=g).float()
    dense = torch.randint(-1, 2, (prompts, 1, s, s), generator=g).float()
    has_dense = torch.randint(0, 2, (prompts,), generator=g).float()
    return image, (coords, labels, dense, has_dense)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict,
            opset: int) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=opset)
    except Exception as e:  # the exporter raises from many layers
        raise ExportError(f"ONNX export of {type(module).__name__} failed: {type(e).__name__}: {e}") from e


def session(path: str | os.PathLike, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@torch.no_grad()
def export_litesam(model: nn.Module, meta: dict[str, Any], out_dir: str | os.PathLike, opset: int = 17,
                   check: bool = True, atol: float = FP32_ATOL) -> dict[str, Any]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` into ``out_dir`` and check both against PyTorch.

    The parity check feeds new random inputs (another prompt batch and point count than the export's, so
    the dynamic axes are exercised) and compares every output.

    Returns:
        {"encoder", "decoder": paths, "encoder_max_abs_diff", "decoder_max_abs_diff"}.
    Raises:
        ExportError: export failed or ONNX Runtime differs from PyTorch by more than ``atol``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    names = feature_names(model)
    enc, dec = EncoderGraph(model).eval(), DecoderGraph(model).eval()  # the exporter restores their mode
    image, prompts = example_inputs(model, prompts=2, points=3)
    feats = enc(image)
    try:
        _export(enc, (image,), out / "encoder.onnx", ["image"], names, {}, opset)
        dyn = {"point_coords": {0: "prompts", 1: "points"}, "point_labels": {0: "prompts", 1: "points"},
               "dense_prompt": {0: "prompts"}, "has_dense": {0: "prompts"}, "masks": {0: "prompts"},
               "iou": {0: "prompts"}}
        _export(dec, (*feats, *prompts), out / "decoder.onnx", names + list(DECODER_INPUTS), ["masks", "iou"], dyn,
                opset)
        for part in ("encoder", "decoder"):
            write_onnx_meta(out / f"{part}.onnx", {**meta, "export": {"part": part, "opset": opset,
                                                                      "torch_version": torch.__version__}})
        result: dict[str, Any] = {"encoder": str(out / "encoder.onnx"), "decoder": str(out / "decoder.onnx")}
        if check:
            result.update(parity(model, out))
            for part in ("encoder", "decoder"):
                if result[f"{part}_max_abs_diff"] > atol:
                    raise ExportError(f"{out / part}.onnx: ONNX Runtime differs from PyTorch by "
                                      f"{result[f'{part}_max_abs_diff']:.3g} > {atol:g}")
    finally:
        model.train(was_training)
    return result


@torch.no_grad()
def parity(model: nn.Module, out_dir: str | os.PathLike) -> dict[str, float]:
    """Max |ORT - PyTorch| of the encoder outputs and the decoder outputs on fresh random inputs."""
    out = Path(out_dir)
    image, prompts = example_inputs(model, prompts=3, points=4, seed=1)
    ref_feats = EncoderGraph(model).eval()(image)
    got_feats = session(out / "encoder.onnx").run(None, {"image": image.numpy()})
    enc = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got_feats, ref_feats, strict=True))
    ref = DecoderGraph(model).eval()(*ref_feats, *prompts)
    feeds = dict(zip(feature_names(model), [r.numpy() for r in ref_feats], strict=True))
    feeds.update(zip(DECODER_INPUTS, [p.numpy() for p in prompts], strict=True))
    got = session(out / "decoder.onnx").run(None, feeds)
    dec = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref, strict=True))
    return {"encoder_max_abs_diff": enc, "decoder_max_abs_diff": dec}
