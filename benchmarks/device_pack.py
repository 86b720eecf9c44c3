"""Carry the distillation images to a machine without ``$MEDLITE_DATA`` (a lent GPU machine), losslessly.

``pack`` writes the letterboxed train and validation cases of every set that ``litesam_distill.py`` distils
on (the same cases, in the same order, as on this machine: test splits are never written) as PNG files
(grey when the three channels agree) plus ``manifest.json``; ``unpack`` rebuilds them as
:class:`~medlite.data.segmentation.SegmentationData` with empty test splits, pixel-identical.

    python benchmarks/device_pack.py pack .pack     # then carry .pack to the other machine
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medlite.data.segmentation import SegmentationData, SegSplit

SPLITS = ("train", "val")


def _png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, optimize=True)


def pack(data: dict[str, SegmentationData], out: Path) -> dict:
    """Write ``data``'s train / val cases under ``out``; returns the manifest."""
    manifest: dict = {"size": None, "sets": {}}
    for k, (spec, ds) in enumerate(data.items()):
        entry = manifest["sets"][spec] = {}
        for split in SPLITS:
            s: SegSplit = getattr(ds, split)
            folder = out / f"{k}_{split}"
            folder.mkdir(parents=True, exist_ok=True)
            manifest["size"] = int(s.images.shape[-1])
            for i in range(len(s)):
                img = s.images[i].permute(1, 2, 0).numpy()
                grey = bool((img == img[:, :, :1]).all())
                _png(img[:, :, 0] if grey else img, folder / f"{i:04d}.png")
                _png(s.masks[i, 0].numpy() * 255, folder / f"{i:04d}_m.png")
            entry[split] = {"folder": folder.name, "names": list(s.names)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def unpack(root: str | Path) -> dict[str, SegmentationData]:
    """The packed sets by spec; train / val as packed (geometry / originals not carried), test empty."""
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    size, out = manifest["size"], {}
    empty = SegSplit(torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, 1, size, size,
                     dtype=torch.uint8), [], [], [])
    for spec, entry in manifest["sets"].items():
        splits = {}
        for split in SPLITS:
            folder, names = root / entry[split]["folder"], entry[split]["names"]
            imgs, masks = [], []
            for i in range(len(names)):
                a = np.asarray(Image.open(folder / f"{i:04d}.png"))
                imgs.append(np.repeat(a[:, :, None], 3, 2) if a.ndim == 2 else a)
                masks.append(np.asarray(Image.open(folder / f"{i:04d}_m.png")) > 127)
            splits[split] = SegSplit(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous(),
                                     torch.from_numpy(np.stack(masks)[:, None].astype(np.uint8)), list(names),
                                     [None] * len(names), [None] * len(names))
        out[spec] = SegmentationData(name=spec, train=splits["train"], val=splits["val"], test=empty, size=size,
                                     mode="pad", split={"packed": True})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["pack", "check"])
    ap.add_argument("folder")
    args = ap.parse_args()
    from litesam_distill import datasets, distill_sets

    data = datasets(distill_sets(), smoke=False)
    if args.action == "pack":
        pack(data, Path(args.folder))
    back = unpack(args.folder)  # both actions: the pack must give back exactly what was packed
    for spec, ds in data.items():
        for split in SPLITS:
            a, b = getattr(ds, split), getattr(back[spec], split)
            assert a.names == b.names and torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks), spec
    size = sum(f.stat().st_size for f in Path(args.folder).rglob("*") if f.is_file())
    print(f"{args.folder}: {sum(len(d.train) + len(d.val) for d in back.values())} cases, {size / 2**20:.1f} MiB, "
          "identical to the sets loaded here")


if __name__ == "__main__":
    main()
