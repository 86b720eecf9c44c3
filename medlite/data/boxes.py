"""Box prompts supplied by the user, for scoring a model on boxes someone drew rather than boxes taken
from the ground-truth masks.

Three sources, one result (``{case name: (4,) float32 xyxy in original-image pixels}``):

- a JSON file: ``{"case": [x0, y0, x1, y1], ...}`` or ``[{"name": "case", "box": [x0, y0, x1, y1]}, ...]``;
- a CSV file with a header ``name,x0,y0,x1,y1`` (extra columns are ignored);
- a folder of challenge ``.npz`` cases: box i of ``case.npz`` is the prompt of label i + 1, case name
  ``case#<label>`` (the names :func:`medlite.data.npz.load_npz` gives).

Case names are what ``medlite sam evaluate`` reports per case: the image file's stem for image folders
and the built-in sets, ``stem#label`` for challenge cases. Boxes are xyxy with inclusive pixel extents,
as in the MedSAM challenge.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medlite.data.base import DataError


def _box(value, where: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise DataError(f"{where}: a box is [x0, y0, x1, y1]; got {value!r}")
    try:
        b = [float(v) for v in value]
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: box coordinates must be numbers; got {value!r}") from e
    if not all(math.isfinite(v) for v in b):
        raise DataError(f"{where}: box coordinates must be finite; got {value!r}")
    if b[2] < b[0] or b[3] < b[1]:
        raise DataError(f"{where}: box needs x1 >= x0 and y1 >= y0; got {value!r}")
    return np.array(b, np.float32)


def _from_json(path: Path) -> dict[str, np.ndarray]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable JSON file ({e})") from e
    if isinstance(data, dict):
        return {str(k): _box(v, f"{path}: case {k!r}") for k, v in data.items()}
    if isinstance(data, list):
        out = {}
        for i, row in enumerate(data):
            if not isinstance(row, dict) or "name" not in row or "box" not in row:
                raise DataError(f"{path}: entry {i} needs 'name' and 'box'; got {row!r}")
            out[str(row["name"])] = _box(row["box"], f"{path}: entry {i} ({row['name']!r})")
        return out
    raise DataError(f"{path}: boxes JSON must be an object {{name: [x0, y0, x1, y1]}} or a list of "
                    f"{{'name', 'box'}} entries; got {type(data).__name__}")


def _from_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from e
    need = ("name", "x0", "y0", "x1", "y1")
    if not rows or any(k not in rows[0] for k in need):
        raise DataError(f"{path}: boxes CSV needs a header with {', '.join(need)} and at least one row")
    return {r["name"]: _box([r[k] for k in need[1:]], f"{path}: line {i + 2} ({r['name']!r})")
            for i, r in enumerate(rows)}


def _from_npz_folder(root: Path) -> dict[str, np.ndarray]:
    from medlite.data.npz import read_npz

    files = sorted(root.glob("*.npz"))
    if not files:
        raise DataError(f"{root}: a boxes folder must hold challenge .npz cases; found none")
    out = {}
    for f in files:
        for i, b in enumerate(read_npz(f)["boxes"]):
            out[f"{f.stem}#{i + 1}"] = _box(b.tolist(), f"{f}: box {i}")
    return out


def read_boxes(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A boxes file (JSON / CSV) or a folder of challenge ``.npz`` cases -> {case name: (4,) xyxy}."""
    path = Path(path)
    if path.is_dir():
        out = _from_npz_folder(path)
    elif not path.is_file():
        raise DataError(f"{path}: no such boxes file or folder")
    elif path.suffix.lower() == ".json":
        out = _from_json(path)
    elif path.suffix.lower() == ".csv":
        out = _from_csv(path)
    else:
        raise DataError(f"{path}: boxes must be a .json or .csv file, or a folder of challenge .npz cases")
    if not out:
        raise DataError(f"{path}: holds no boxes")
    return out


def boxes_for(names: Sequence[str], shapes: Sequence[tuple[int, int]], boxes: dict[str, np.ndarray],
              source: str | os.PathLike) -> list[np.ndarray]:
    """The supplied box of every case, in case order; refuses a missing case or a box outside its image.

    Args:
        names: case names; shapes: each case's original (H, W); boxes: from :func:`read_boxes`;
        source: the file the boxes came from, for messages.
    """
    missing = [n for n in names if n not in boxes]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{source}: no box for {len(missing)} of {len(names)} cases ({shown}); "
                        f"case names are image file stems, or stem#label for challenge cases")
    out = []
    for n, (h, w) in zip(names, shapes, strict=True):
        b = boxes[n]
        if b[0] < 0 or b[1] < 0 or b[2] > w or b[3] > h:
            raise DataError(f"{source}: box of {n!r} {b.tolist()} lies outside its {w}x{h} image")
        out.append(b)
    return out
