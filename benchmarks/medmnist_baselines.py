"""ResNet-18 (28 px) on BreastMNIST, PneumoniaMNIST and DermaMNIST with the MedMNIST v2 paper's recipe.

Recipe: Adam lr 1e-3, batch 128, no augmentation, lr x0.1 at 50 % and 75 % of the epochs, the checkpoint
with the best validation AUC evaluated on test, CIFAR-style stem. The paper trains 100 epochs; on a
2-core CPU that is 4–5 hours for DermaMNIST alone, so the epoch count per subset is an argument and the
results file records the one used. Every job is resumable: run the same command again to continue.

    python benchmarks/medmnist_baselines.py                     # run / resume, then write the results
    python benchmarks/medmnist_baselines.py --report-only       # only rewrite the results file
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from common import PUBLISHED, RESULTS, ROOT, header, load_results, mean_std, parse_map, run_job

from medlite.engine.tasks.classify import TrainConfig

SUBSETS = ("breastmnist", "pneumoniamnist", "dermamnist")


def jobs(epochs: dict[str, int], seeds: list[int], runs: Path, model: str, threads: int = 0) -> list[TrainConfig]:
    # seed 0 of every subset first, so an interrupted run still covers all subsets
    order = [(s, seed) for seed in seeds for s in SUBSETS if s in epochs]
    return [TrainConfig(model=model, data=s, size=28, epochs=epochs[s], batch_size=128, optimizer="adam",
                        lr=1e-3, schedule="step", milestones=(0.5, 0.75), augment="none", seed=seed,
                        out=str(runs / f"{model}-{s}-s{seed}"), progress=False, threads=threads)
            for s, seed in order]


def report(cfgs: list[TrainConfig], out: Path, epochs: dict[str, int]) -> str:
    lines = header("ResNet-18 (28 px) on MedMNIST: our training vs the published numbers")
    lines += ["Recipe (MedMNIST v2 paper, shortened): Adam lr 1e-3, batch 128, no augmentation, lr x0.1 at "
              "50 % and 75 % of the epochs, best-validation-AUC checkpoint evaluated on test, CIFAR-style "
              "stem. Epochs used: " + ", ".join(f"{k} {v}" for k, v in epochs.items()) +
              " (the paper: 100). Data: the copies in shared/data (PneumoniaMNIST train split is a 3882-image "
              "variant of the official 4708; DermaMNIST is JPEG re-encoded).", "",
              "| subset | seeds done | ours test AUC | ours test ACC | published AUC / ACC | Δ AUC |",
              "|---|---|---|---|---|---|"]
    runs = load_results([c.run_dir() for c in cfgs])
    speed = []
    for s in epochs:
        rs = [r for r in runs if r["data"] == s]
        aucs = [r["test"]["auc"] for r in rs]
        accs = [r["test"]["acc"] for r in rs]
        pub = PUBLISHED["ResNet-18 (28)"][s]
        delta = f"{statistics.mean(aucs) - pub[0]:+.3f}" if aucs else "–"
        lines.append(f"| {s} | {len(rs)} | {mean_std(aucs)} | {mean_std(accs)} | {pub[0]:.3f} / {pub[1]:.3f} "
                     f"| {delta} |")
        if rs:
            # median over epochs: robust to epochs stretched by a paused or crowded machine
            rows = [row for c in cfgs if c.data == s and (c.run_dir() / "metrics.csv").is_file()
                    for row in csv.DictReader((c.run_dir() / "metrics.csv").open())]
            ips = statistics.median(float(row["images_per_s"]) for row in rows)
            eps = statistics.median(float(row["epoch_seconds"]) for row in rows)
            speed.append(f"| {s} | {ips:.0f} | {eps:.0f} | {eps * 100 / 3600:.1f} h |")
    threads = sorted({r["machine"]["torch_threads"] for r in runs})
    lines += ["", "Training throughput on this machine (median over the epochs of all runs; includes the batched input "
              f"pipeline, excludes validation; torch threads: {threads}). The benchmarks ran side by side "
              "with other jobs on the 2 cores, so these are lower bounds; `medmnist_medlit.md` has an "
              "interleaved, same-process throughput comparison.", "",
              "| subset | images/s | s per epoch | 100 epochs would take |", "|---|---|---|---|", *speed, ""]
    lines += ["Per-run results (best epoch, val AUC, test AUC with 95 % bootstrap CI):", "",
              "| run | best epoch / epochs | val AUC | test AUC (95 % CI) | test ACC |", "|---|---|---|---|---|"]
    for r in runs:
        t = r["test"]
        lines.append(f"| {Path(r['run_dir']).name} | {r['best_epoch']} / {r['epochs']} | {r['val']['auc']:.3f} | "
                     f"{t['auc']:.3f} ({t['auc_ci'][0]:.3f}–{t['auc_ci'][1]:.3f}) | {t['acc']:.3f} |")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", default="breastmnist=24,pneumoniamnist=8,dermamnist=5",
                    help="epochs per subset, e.g. breastmnist=100,pneumoniamnist=100")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "baselines"))
    ap.add_argument("--out", default=str(RESULTS / "medmnist_baselines.md"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    epochs = parse_map(a.epochs)
    cfgs = jobs(epochs, [int(s) for s in a.seeds.split(",")], Path(a.runs), a.model, a.threads)
    if not a.report_only:
        for cfg in cfgs:
            run_job(cfg)
            report(cfgs, Path(a.out), epochs)
    print(report(cfgs, Path(a.out), epochs))


if __name__ == "__main__":
    main()
