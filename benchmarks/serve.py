"""Latency of `medlite serve` as a person meets it: in a real browser (headless Chromium driven by Playwright),
time from choosing an image to "ready" (upload, read, encoder, preview back and drawn) and from releasing
the mouse after drawing a box to the overlay drawn (decoder, resize to the original size, PNG transfer,
drawing), on 1 and 2 ONNX Runtime threads. Also the page's screenshot for the README (docs/serve.png).

Images: the first 10 BUSI cases of validation list 1 (sorted by name), each prompted with two boxes (the
ground-truth mask's bounding box, and that box widened by 8 % per side, clipped to the image): 10 uploads and
20 prompts per thread count. Medians over them; the server's own encoder / decoder ms beside.

    python benchmarks/serve.py     # writes results/serve.md and docs/serve.png
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, header
from PIL import Image

from medlite import zoo
from medlite.data.base import data_root
from medlite.data.prompts import box_from_mask
from medlite.serve import browser
from medlite.serve.app import Server, create_app
from medlite.serve.models import export_sam_cached, weights_key

SAM = "litesam_swin_xs_distilled"
SHOT_CASE = "benign (10)"


def cases(n: int) -> list[tuple[Path, np.ndarray]]:
    root = data_root() / "busi"
    names = sorted(x.strip() for x in (root / "busi_val1.txt").read_text().splitlines() if x.strip())[:n]
    out = []
    for name in names:
        stem = name.rsplit(".", 1)[0] if name.endswith(".png") else name
        gt = np.asarray(Image.open(root / "masks" / "0" / f"{stem}.png")) > 0
        out.append((root / "images" / f"{stem}.png", gt))
    return out


def boxes(gt: np.ndarray) -> list[list[float]]:
    b = box_from_mask(gt).astype(float)
    h, w = gt.shape
    dx, dy = 0.08 * (b[2] - b[0]), 0.08 * (b[3] - b[1])
    wide = [max(0.0, b[0] - dx), max(0.0, b[1] - dy), min(w - 1.0, b[2] + dx), min(h - 1.0, b[3] + dy)]
    return [b.tolist(), wide]


def measure(sam: Path, threads: int, data: list, shot: Path | None) -> dict:
    server = Server(sam, {}, threads=threads, sam_name=SAM)
    up, prompt = [], []
    with browser.running(create_app(server)) as url, browser.browser_page() as page:
        page.goto(url)
        browser.open_image(page, data[0][0])  # warm-up: the first run of each graph allocates
        browser.draw_box(page, boxes(data[0][1])[0])
        server.timings = {"encoder_ms": [], "decoder_ms": []}
        for path, gt in data:
            up.append(browser.open_image(page, path))
            for b in boxes(gt):
                prompt.append(browser.draw_box(page, b))
        if shot is not None:
            root = data_root() / "busi"
            gt = np.asarray(Image.open(root / "masks" / "0" / f"{SHOT_CASE}.png")) > 0
            browser.open_image(page, root / "images" / f"{SHOT_CASE}.png")
            browser.draw_box(page, boxes(gt)[0])
            page.screenshot(path=str(shot))
    return {"upload": up, "prompt": prompt, **server.timings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default=str(RESULTS / "serve.md"))
    ap.add_argument("--screenshot", default=str(ROOT.parent / "docs" / "serve.png"))
    ap.add_argument("--note", default="", help="what else the machine was doing, written into the results")
    args = ap.parse_args()
    data = cases(args.images)
    with tempfile.TemporaryDirectory() as cache:
        sam = export_sam_cached(*zoo.load(SAM), SAM, weights_key(SAM), cache)
        res = {}
        for i, t in enumerate(int(x) for x in args.threads.split(",")):
            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            res[t] = measure(sam, t, data, Path(args.screenshot) if i == 0 else None)
            print(f"{t} thread(s): upload->ready {statistics.median(res[t]['upload']):.0f} ms, "
                  f"box->overlay {statistics.median(res[t]['prompt']):.0f} ms", file=sys.stderr)

    def med(xs):
        return f"{statistics.median(xs):.0f}"

    def p90(xs):
        return f"{np.percentile(xs, 90):.0f}"

    n_up, n_prompt = len(res[next(iter(res))]["upload"]), len(res[next(iter(res))]["prompt"])
    lines = header("medlite serve: latency in the browser")
    lines += [f"Model `{SAM}` (the shipped LiteSAM, 2.19 M parameters) as ONNX graphs on ONNX Runtime, served by "
              "`medlite serve` on 127.0.0.1; the page in headless Chromium (Debian's) driven by Playwright on the "
              f"same machine. {n_up} BUSI images (validation list 1, first by name), {n_prompt} box prompts (two per "
              "image: the ground-truth box and that box widened by 8 % per side), drawn with the mouse. Times "
              "are the page's own (`performance.now()`), so they include the HTTP round trip, the PNG transfer "
              "and the drawing; the server's encoder / decoder columns are the model alone (the decoder column "
              "includes resizing the probabilities to the original image size). One warm-up image first.", "",
              "| ONNX Runtime threads | upload -> ready, median (p90) ms | box release -> overlay, median (p90) ms "
              "| server encoder median ms | server decoder median ms |",
              "|---|---|---|---|---|"]
    for t, r in res.items():
        lines.append(f"| {t} | {med(r['upload'])} ({p90(r['upload'])}) | {med(r['prompt'])} ({p90(r['prompt'])}) | "
                     f"{med(r['encoder_ms'])} | {med(r['decoder_ms'])} |")
    one = statistics.median(res[min(res)]["prompt"])
    lines += ["", f"Target: overlay within 100 ms of the box on 1 thread: {one:.0f} ms, "
              + ("**met**." if one < 100 else f"**missed** by {one - 100:.0f} ms."),
              "", "Screenshot: `docs/serve.png` (a box drawn on BUSI `benign (10)`).", ""]
    if args.note:
        lines += [f"Note: {args.note}", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
