"""Robustness, measured through the public CLI: bad inputs per loader, a kill -9 soak of training, and
predict's memory over many files.

1. Bad inputs: a corpus of broken files and options per loader, each run as a user would (`medlite ...` in a
   subprocess). Outcome: "named error" (exit 2, one `error:` line naming the file or option), "traceback"
   (any other failure), or "silent" (exit 0 on an input that should have been refused).
2. Soak: classification (MedLiT-nano, BreastMNIST), segmentation (MedLiteNet, PH2 fold 0, 96 px) and LiteSAM
   (xs, PH2, 128 px) training runs killed with SIGKILL at random moments and resumed with `--resume` until they
   finish; every checkpoint on disk is read after every kill. Reported: kills, corrupt checkpoints, failed
   resumes, completed epochs lost, and whether the final test metrics equal an uninterrupted run's.
3. Memory: peak RSS of `medlite predict ZOO_MODEL` over 100 and 2000 PNG files (streamed in batches of 64).

    python benchmarks/robustness.py                 # about 15 min on 2 cores
    python benchmarks/robustness.py --parts bad     # one part
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, header
from PIL import Image

MEDLITE = [sys.executable, "-m", "medlite"]
ENV = {**os.environ, "COLUMNS": "200", "NO_ALBUMENTATIONS_UPDATE": "1"}


def run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*MEDLITE, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


# ------------------------------------------------------------------------------------------ bad inputs
def _png(path: Path, hw=(32, 32), rgb=False) -> Path:
    rng = np.random.default_rng(len(str(path)))
    a = rng.integers(0, 255, (*hw, 3) if rgb else hw, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def _npz(path: Path, labels: dict[str, np.ndarray] | None = None, sizes=(20, 6, 6)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in zip(("train", "val", "test"), sizes, strict=True):
        arrays[f"{s}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(n) % 2)[:, None].astype(np.uint8)
    for k, v in (labels or {}).items():
        arrays[k] = v
    np.savez(path, **arrays)
    return path


def bad_cases(d: Path) -> list[tuple[str, str, list[str]]]:
    """(loader, case, CLI args) of inputs every one of which must be refused with a named error."""
    good = _png(d / "good.png")
    cases: list[tuple[str, str, list[str]]] = []

    def image(name: str, data: bytes, suffix: str) -> Path:
        p = d / f"{name}{suffix}"
        p.write_bytes(data)
        return p

    raw = good.read_bytes()
    imgs = {
        "empty file": image("empty", b"", ".png"),
        "truncated PNG": image("trunc", raw[:40], ".png"),
        "text named .png": image("text", b"hello world", ".png"),
        "unsupported extension": image("notes", b"x", ".xyz"),
        "JPEG header only": image("head", b"\xff\xd8\xff\xe0" + b"\x00" * 20, ".jpg"),
        "missing file": d / "missing.png",
        "directory": d,
    }
    nan = np.full((16, 16), 0.5, np.float32)
    nan[3, 3] = np.nan
    Image.fromarray(nan, mode="F").save(d / "nan.tif")
    imgs["NaN float TIFF"] = d / "nan.tif"
    bomb = Image.new("L", (12000, 12000))
    bomb.save(d / "bomb_src.png")
    imgs["truncated 12000x12000 PNG"] = image("bomb", (d / "bomb_src.png").read_bytes()[:2000], ".png")
    (d / "bomb_src.png").unlink()
    for case, p in imgs.items():
        cases.append(("image (predict)", case, ["predict", "medlit_nano_28_breastmnist", str(p)]))
    try:
        import nibabel as nib

        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), d / "t4.nii.gz")
        cases.append(("NIfTI (predict)", "4-D with 3 volumes", ["predict", "medlit_nano_28_breastmnist",
                                                                  str(d / "t4.nii.gz")]))
        cases.append(("NIfTI (predict)", "slice out of range", ["predict", "medlit_nano_28_breastmnist",
                                                                  f"{d / 't4.nii.gz'}::99"]))
    except ImportError:
        pass
    dcm = d / "bad.dcm"
    dcm.write_bytes(b"\x00" * 128 + b"DICM" + b"\x01\x02" * 10)
    cases.append(("DICOM (predict)", "DICM magic, garbage body", ["predict", "medlit_nano_28_breastmnist", str(dcm)]))
    train = ["--epochs", "1", "--no-progress", "--threads", "1"]
    npzs = {
        "test label outside train labels": _npz(d / "gap.npz", {"test_labels": np.array([[0], [1], [7], [0], [1],
                                                                                       [0]], np.uint8)}),
        "single class": _npz(d / "one.npz", {f"{s}_labels": np.zeros((n, 1), np.uint8) for s, n in
                                            (("train", 20), ("val", 6), ("test", 6))}),
        "empty test split": _npz(d / "notest.npz", sizes=(20, 6, 0)),
        "text named .npz": image("fake", b"not a zip", ".npz"),
        "NaN labels": _npz(d / "nanlab.npz", {"train_labels": np.full((20, 1), np.nan, np.float32)}),
    }
    for case, p in npzs.items():
        cases.append(("npz (train)", case, ["train", "medlit_nano_28", "--data", str(p), "--out",
                                            str(d / "runs" / case.replace(" ", "_")), *train]))
    folder = d / "folder"
    for c in ("a", "b"):
        for i in range(4):
            _png(folder / c / f"{i}.png")
    (folder / "empty_class").mkdir()
    cases.append(("class folder (train)", "empty class folder", ["train", "resnet18", "--data", str(folder),
                                                                  "--out", str(d / "runs" / "f"), *train]))
    csv_dir = d / "csvs"
    csv_dir.mkdir()
    (csv_dir / "escape.csv").write_text("path,label\n../../../../etc/passwd,a\n../good.png,b\n")
    (csv_dir / "latin1.csv").write_bytes("path,label\nbild_ä.png,a\n".encode("latin-1"))
    (csv_dir / "noheader.csv").write_text("a.png,a\nb.png,b\n")
    (csv_dir / "badsplit.csv").write_text("path,label,split\nx.png,a,training\n")
    for case, name in (("path outside the CSV's folder", "escape"), ("not UTF-8", "latin1"),
                       ("no header", "noheader"), ("unknown split", "badsplit")):
        cases.append(("CSV (train)", case, ["train", "resnet18", "--data", str(csv_dir / f"{name}.csv"), "--out",
                                             str(d / "runs" / name), *train]))
    ro = d / "readonly_parent_is_a_file"
    ro.write_text("x")
    cases.append(("run folder (train)", "--out under a file", ["train", "medlit_nano_28", "--data",
                                                               str(d / "gap.npz"), "--out", str(ro / "run"), *train]))
    sam = ["sam", "predict", "litesam_swin_xs_distilled", str(good), "--out", str(d / "sam")]
    for case, extra in (("box outside the image", ["--box", "10,10,500,500"]), ("inverted box", ["--box", "20,20,5,5"]),
                        ("zero-area box", ["--box", "5,5,5,9"]), ("NaN box", ["--box", "nan,1,5,5"]),
                        ("1e30 box", ["--box", "1,1,1e30,5"]), ("point outside", ["--point", "99,99,1"]),
                        ("point label 7", ["--point", "10,10,7"]), ("three box numbers", ["--box", "1,2,3"])):
        cases.append(("SAM prompts (sam predict)", case, sam + extra))
    cases.append(("checkpoint (predict)", "text file as checkpoint", ["predict", str(image("ck", b"{}",
                                                                                        ".safetensors")), str(good)]))
    cases.append(("checkpoint (predict)", "unknown zoo / model name", ["predict", "no_such_model", str(good)]))
    return cases


def classify_outcome(r: subprocess.CompletedProcess) -> str:
    out = r.stdout + r.stderr
    if "Traceback" in out:
        return "traceback"
    if r.returncode == 0:
        return "silent"
    # medlite's "error: ..." line (exit 2; predict: exit 1, the other files still run), or Typer's
    # "Invalid value: --option ..." box for a bad option
    return "named error" if "error:" in out or "Invalid value" in out else "traceback"


def bad_inputs() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for loader, case, args in bad_cases(Path(tmp)):
            t = time.perf_counter()
            r = run(args, timeout=300)
            first = next((ln.strip(" │") for ln in (r.stdout + r.stderr).splitlines()
                          if "error:" in ln or "Invalid value" in ln), "")
            rows.append({"loader": loader, "case": case, "outcome": classify_outcome(r), "exit": r.returncode,
                         "message": first.strip()[:160].replace(tmp, "TMP"), "seconds": time.perf_counter() - t})
            print(f"{rows[-1]['outcome']:12s} {loader}: {case}", flush=True)
    return {"rows": rows}


# ------------------------------------------------------------------------------------------------ soak
SOAK = {
    "classification": (["train", "medlit_nano_28", "--data", "breastmnist", "--epochs", "6", "--no-progress",
                        "--threads", "1", "--no-leakage", "--seed", "0"], ["--resume"], "test", "auc"),
    "segmentation": (["seg", "train", "medlitenet", "--data", "ph2", "--size", "96", "--epochs", "10",
                      "--batch-size", "8", "--threads", "1", "--set", "progress=false", "--set", "plots=false",
                      "--amp", "none"], ["--resume"], "test", "dice"),
    "litesam": (["sam", "train", "litesam_swin_xs", "--data", "ph2", "--img-size", "128", "--epochs", "3",
                 "--no-progress", "--threads", "1"], [], "", "best_val_dice"),
}


def _checkpoints_ok(folder: Path) -> tuple[int, int]:
    """(checkpoints read, corrupt ones) among *.safetensors in the run folder."""
    from medlite.engine.checkpoint import read_checkpoint

    read = bad = 0
    for f in folder.rglob("*.safetensors"):
        read += 1
        try:
            read_checkpoint(f)
        except Exception:  # noqa: BLE001 - any failure to read counts as corrupt
            bad += 1
    return read, bad


def _epochs_done(folder: Path) -> int:
    m = next(iter(folder.rglob("metrics.csv")), None)
    return max(0, len(m.read_text().splitlines()) - 1) if m else 0


def _final(folder: Path, split: str, metric: str) -> float | None:
    f = next(iter(folder.rglob("results.json")), None)
    if f is None:
        return None
    r = json.loads(f.read_text())
    v = r[split][metric] if split else r[metric]
    return v["mean"] if isinstance(v, dict) else v


def _killed_round(args, resume, run_dir: Path, ref_s: float, rng: random.Random, budget: int, stats: dict) -> None:
    """One run killed at random moments (at most ``budget`` kills) and resumed until it finishes."""
    first = True
    while True:
        cmd = [*MEDLITE, *args, "--out", str(run_dir), *([] if first else resume)]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
        first = False
        if budget > 0:
            # kill inside a random epoch: wait until k epochs are logged, then a random part of the next one
            epochs = int(args[args.index("--epochs") + 1])
            k = rng.randrange(0, max(1, epochs - 1))
            while p.poll() is None and _epochs_done(run_dir) < k:
                time.sleep(0.2)
            try:
                p.wait(timeout=rng.uniform(0.05, 0.95) * ref_s / epochs)
            except subprocess.TimeoutExpired:
                before = _epochs_done(run_dir)
                p.send_signal(signal.SIGKILL)
                p.wait()
                budget -= 1
                stats["kills"] += 1
                n, bad = _checkpoints_ok(run_dir)
                stats["checkpoints_read"] += n
                stats["corrupt_checkpoints"] += bad
                # epochs the restart trains again = epochs logged before the kill minus those checkpointed
                last = next(iter(run_dir.rglob("last.json")), None)
                saved = json.loads(last.read_text()).get("epoch", -1) + 1 if last else 0
                stats["epochs_lost"] += max(0, before - saved)
                continue
        else:
            p.wait(timeout=1800)
        err = p.stderr.read() if p.stderr else ""
        if p.returncode != 0:
            stats["failed_resumes"] += 1
            stats["last_error"] = err[-1000:]
        return


def soak(kills_per_task: int, seed: int = 0, tasks=tuple(SOAK)) -> dict:
    """Each task: an uninterrupted reference run, then rounds of killed-and-resumed runs (fresh folders) until
    ``kills_per_task`` kills have landed; every round's final metric is compared with the reference."""
    rng = random.Random(seed)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (args, resume, split, metric) in SOAK.items():
            if name not in tasks:
                continue
            ref = Path(tmp) / f"{name}-ref"
            t0 = time.perf_counter()
            r = run([*args, "--out", str(ref)], timeout=1800)
            if r.returncode:
                raise RuntimeError(f"{name}: the uninterrupted run failed:\n{r.stderr[-2000:]}")
            ref_s = time.perf_counter() - t0
            stats = {"kills": 0, "corrupt_checkpoints": 0, "checkpoints_read": 0, "failed_resumes": 0,
                     "epochs_lost": 0, "reference_s": ref_s, "rounds": 0, "finals": []}
            while stats["kills"] < kills_per_task and stats["rounds"] < 3 * kills_per_task:
                run_dir = Path(tmp) / f"{name}-killed-{stats['rounds']}"
                stats["rounds"] += 1
                _killed_round(args, resume, run_dir, ref_s, rng, kills_per_task - stats["kills"], stats)
                stats["finals"].append(_final(run_dir, split, metric))
            a = _final(ref, split, metric)
            stats.update(metric=f"{split + ' ' if split else ''}{metric}", uninterrupted=a,
                         killed_and_resumed=stats["finals"], equal=all(f == a for f in stats["finals"]))
            out[name] = stats
            print(name, {k: v for k, v in stats.items() if k != "last_error"}, flush=True)
    return out


# ---------------------------------------------------------------------------------------------- memory
def predict_memory(counts=(100, 2000)) -> dict:
    r = subprocess.run(["/usr/bin/time", "-f", "PEAK_KB %M", sys.executable, "-c", "import torch"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    base = int(next(ln for ln in r.stderr.splitlines() if ln.startswith("PEAK_KB")).split()[1])
    out: dict = {"import torch only": {"peak_rss_mb": base / 1024, "seconds": 0.0}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            d = Path(tmp) / str(n)
            d.mkdir()
            rng = np.random.default_rng(0)
            for i in range(n):
                Image.fromarray((rng.random((28, 28, 3)) * 255).astype(np.uint8)).save(d / f"{i}.png")
            t = time.perf_counter()
            # GNU time reports this one process's peak RSS (getrusage of children would mix in earlier ones)
            r = subprocess.run(["/usr/bin/time", "-f", "PEAK_KB %M", *MEDLITE, "predict", "medlit_nano_28_dermamnist",
                                *map(str, sorted(d.iterdir())), "--json"], capture_output=True, text=True, env=ENV,
                               timeout=900)
            assert r.returncode == 0 and len(json.loads(r.stdout)) == n, r.stderr[-500:]
            peak_kb = int(next(ln for ln in r.stderr.splitlines() if ln.startswith("PEAK_KB")).split()[1])
            out[n] = {"peak_rss_mb": peak_kb / 1024, "seconds": time.perf_counter() - t}
            shutil.rmtree(d)
    return out


# ---------------------------------------------------------------------------------------------- report
def write(args, res: dict) -> None:
    lines = header("Robustness: bad inputs, kill -9 during training, predict's memory")
    dated = ", ".join(f"{k} ({res[k].get('_date', 'date not recorded')})" for k in res)
    lines[-1:-1] = [f"- parts: {dated}; a part not rerun keeps its figures from the run dated here"]
    if "bad" in res:
        rows = res["bad"]["rows"]
        by: dict[str, dict[str, int]] = {}
        for r in rows:
            by.setdefault(r["loader"], {"tried": 0, "named error": 0, "traceback": 0, "silent": 0})
            by[r["loader"]]["tried"] += 1
            by[r["loader"]][r["outcome"]] += 1
        tot = {k: sum(v[k] for v in by.values()) for k in ("tried", "named error", "traceback", "silent")}
        lines += ["## Bad inputs through the CLI", "",
                  "| loader (command) | tried | named error | traceback | silent |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['tried']} | {v['named error']} | {v['traceback']} | {v['silent']} |"
                  for k, v in by.items()]
        lines += [f"| **total** | {tot['tried']} | {tot['named error']} | {tot['traceback']} | {tot['silent']} |",
                  "", "<details><summary>every case and its message</summary>", "",
                  "| loader | case | outcome | message |", "|---|---|---|---|"]
        lines += [f"| {r['loader']} | {r['case']} | {r['outcome']} | {r['message'].replace('|', '/')} |"
                  for r in rows]
        lines += ["", "</details>", ""]
    if "soak" in res:
        s = res["soak"]
        lines += ["## kill -9 soak", "",
                  "| run | kills | checkpoints read after kills | corrupt | failed resumes | epochs lost | final "
                  "metric | uninterrupted | killed and resumed | equal |", "|---|---|---|---|---|---|---|---|---|---|"]
        for k, v in s.items():
            if k.startswith("_"):
                continue
            finals = ", ".join("n/a" if f is None else f"{f:.4f}" for f in v["killed_and_resumed"])
            lines.append(f"| {k} | {v['kills']} in {v['rounds']} run(s) | {v['checkpoints_read']} | "
                         f"{v['corrupt_checkpoints']} | {v['failed_resumes']} | {v['epochs_lost']} | {v['metric']} | "
                         f"{v['uninterrupted']:.4f} | {finals} | {v['equal']} |")
        kills = sum(v["kills"] for k, v in s.items() if not k.startswith("_"))
        lines += ["", f"Total kills: {kills}. Epochs lost = completed epochs logged "
                  "before a kill that the resumed run had to train again (at most the epoch in progress is lost by "
                  "design: checkpoints are written at the end of each epoch).", ""]
    if "memory" in res:
        lines += ["## predict: peak memory over many files", "", "| files | peak RSS (MB) | seconds |",
                  "|---|---|---|"]
        lines += [f"| {n} | {v['peak_rss_mb']:.0f} | {v['seconds']:.1f} |" for n, v in res["memory"].items()
                  if not str(n).startswith("_")]
        lines += ["", "Files are read, classified and printed 64 at a time (`iter_classify_files`), so the peak "
                  "does not grow with the number of files. Most of it is PyTorch itself: `import torch` alone "
                  f"(the {__import__('torch').__version__} wheel installed here) peaks at the first row's figure; "
                  "`medlite predict FILE.onnx` runs without torch.", ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["bad", "soak", "memory"], choices=["bad", "soak", "memory"])
    ap.add_argument("--kills", type=int, default=7, help="kills per training task")
    ap.add_argument("--tasks", nargs="+", default=list(SOAK), choices=list(SOAK), help="soak only these")
    ap.add_argument("--out", default=str(RESULTS / "robustness.md"))
    args = ap.parse_args()
    prev = Path(args.out).with_suffix(".json")
    res = json.loads(prev.read_text()) if prev.is_file() else {}  # parts not run keep their last figures
    from datetime import UTC, datetime

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if "bad" in args.parts:
        res["bad"] = {**bad_inputs(), "_date": now}
    if "soak" in args.parts:
        res["soak"] = {**res.get("soak", {}), **soak(args.kills, tasks=args.tasks), "_date": now}
    if "memory" in args.parts:
        res["memory"] = {**predict_memory(), "_date": now}
    write(args, res)


if __name__ == "__main__":
    main()
