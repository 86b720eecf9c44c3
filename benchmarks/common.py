"""Shared helpers for benchmark scripts: resumable job lists, machine description, result tables."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from medlite.engine.tasks.classify import TrainConfig, train

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

# Published MedMNIST v2 test AUC / ACC at 28 px (Yang et al., Scientific Data 2023, Table 3).
PUBLISHED = {
    "ResNet-18 (28)": {"breastmnist": (0.901, 0.863), "pneumoniamnist": (0.944, 0.854), "dermamnist": (0.917, 0.735)},
    "ResNet-50 (28)": {"breastmnist": (0.857, 0.812), "pneumoniamnist": (0.948, 0.854), "dermamnist": (0.913, 0.735)},
    "ResNet-18 (224)": {"breastmnist": (0.891, 0.833), "pneumoniamnist": (0.956, 0.864), "dermamnist": (0.920, 0.754)},
    "auto-sklearn": {"breastmnist": (0.836, 0.803), "pneumoniamnist": (0.942, 0.855), "dermamnist": (0.902, 0.719)},
    "AutoKeras": {"breastmnist": (0.871, 0.831), "pneumoniamnist": (0.947, 0.878), "dermamnist": (0.915, 0.749)},
    "Google AutoML Vision": {"breastmnist": (0.919, 0.861), "pneumoniamnist": (0.991, 0.946),
                             "dermamnist": (0.914, 0.768)},
}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, {platform.system()}")


def header(title: str) -> list[str]:
    return [f"# {title}", "",
            f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`",
            f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {machine()}", ""]


def run_job(cfg: TrainConfig) -> dict | None:
    """Run (or resume, or skip when finished) one training job; returns its results.json."""
    run = cfg.run_dir()
    done = run / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.time()
    res = train(cfg, resume=(run / "last.safetensors").is_file())
    print(f"[{time.time() - t0:.0f}s] {cfg.model} {cfg.data} seed {cfg.seed}: "
          f"test AUC {res['test']['auc']:.3f} ACC {res['test']['acc']:.3f}", flush=True)
    return res


# Compact records of finished MedMNIST runs (test AUC/ACC, validation AUC per epoch), committed with the
# results so that a report can be rewritten on a machine that does not hold the (git-ignored) run folders.
STORE = RESULTS / "medmnist_runs.json"


def _store() -> dict[str, dict]:
    return json.loads(STORE.read_text()) if STORE.is_file() else {}


def remember(run_dir: Path, res: dict) -> dict:
    """Add a finished run's compact record to the store (keyed by run folder name); returns the record."""
    import csv

    hist = run_dir / "metrics.csv"
    val_auc = [float(r["val_auc"]) for r in csv.DictReader(hist.open())] if hist.is_file() else []
    seed = run_dir.name.rsplit("-s", 1)[-1]
    rec = {"model": res["model"], "data": res["data"], "seed": int(seed) if seed.isdigit() else None,
           "best_epoch": res.get("best_epoch"), "epochs": res.get("epochs"),
           "test": {"auc": res["test"]["auc"], "acc": res["test"]["acc"]},
           "val": {"auc": res["val"]["auc"], "acc": res["val"]["acc"]} if "val" in res else None,
           "val_auc_per_epoch": val_auc, "source": f"run folder {run_dir.name}, "
           f"recorded {datetime.now(UTC).strftime('%Y-%m-%d')}"}
    store = _store()
    old = store.get(run_dir.name)
    if old is not None and {**old, "source": ""} == {**rec, "source": ""}:
        return old  # already recorded: no rewrite on every report
    store[run_dir.name] = rec
    STORE.parent.mkdir(parents=True, exist_ok=True)
    tmp = STORE.with_suffix(f".{os.getpid()}.tmp")  # atomic: parallel benchmark processes share the store
    tmp.write_text(json.dumps(dict(sorted(store.items())), indent=1) + "\n")
    os.replace(tmp, STORE)
    return rec


def stored(run_dir: Path) -> dict | None:
    """The store's record of a run, or None."""
    return _store().get(Path(run_dir).name)


def stored_names(prefix: str) -> list[str]:
    """Run folder names the store holds a record of that start with ``prefix``."""
    return [name for name in _store() if name.startswith(prefix)]


def load_results(run_dirs: list[Path], use_store: bool = False) -> list[dict]:
    """results.json of each finished run; with ``use_store``, runs whose folder is gone come from the store
    and finished runs are recorded in it."""
    out = []
    for r in run_dirs:
        f = r / "results.json"
        if f.is_file():
            res = json.loads(f.read_text())
            if use_store:
                remember(Path(r), res)
            out.append(res)
        elif use_store and (rec := stored(r)) is not None:
            out.append(rec)
    return out


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def parse_map(text: str, cast=int) -> dict[str, int]:
    """'a=1,b=2' -> {'a': 1, 'b': 2}."""
    out = {}
    for item in filter(None, text.split(",")):
        k, v = item.split("=")
        out[k.strip()] = cast(v)
    return out
