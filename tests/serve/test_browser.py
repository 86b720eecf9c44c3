"""The page in a real browser (Playwright driving Debian's Chromium): open a BUSI image, draw its box with
the mouse, download the mask and compare it with the model's own `medlite sam predict` output and with the
ground truth. Also the classification tab."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medlite.cli import app as cli
from medlite.data.base import data_root
from medlite.data.prompts import box_from_mask
from medlite.serve import browser
from medlite.serve.app import create_app

CASE = "benign (10)"


def _needs_browser():
    missing = [what for what, ok in (("chromium", browser.chromium_path()),
                                     ("playwright", _has("playwright"))) if not ok]
    if missing:
        reason = f"{' and '.join(missing)} not installed (make test installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _busi():
    root = data_root() / "busi"
    if not root.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{root}: BUSI is missing (MEDLITE_DATA)")
        pytest.skip("BUSI not under MEDLITE_DATA")
    return root / "images" / f"{CASE}.png", root / "masks" / "0" / f"{CASE}.png"


def _dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.slow
def test_draw_a_box_in_the_browser_and_download_the_mask(server, graphs, tmp_path):
    _needs_browser()
    image, truth = _busi()
    gt = np.asarray(Image.open(truth)) > 0
    box = box_from_mask(gt)
    with browser.running(create_app(server)) as url, browser.browser_page() as page:
        page.goto(url)
        browser.wait_for(page, "document.getElementById('model').textContent.includes('litesam')")
        browser.open_image(page, image)
        assert "encoded" in page.text_content("#status")
        browser.draw_box(page, box)
        sent = page.evaluate("window.medlite.objects[0].box")  # the box the mouse drew, in image pixels
        assert np.abs(np.array(sent) - box).max() <= 1.5
        got = np.asarray(Image.open(browser.download(page, "#dl-mask", tmp_path / "mask.png"))) > 0
        overlay = browser.download(page, "#dl-overlay", tmp_path / "overlay.png")
        assert np.asarray(Image.open(overlay)).shape == gt.shape + (3,)
        # undo removes the box and its mask
        page.click("#undo")
        browser.wait_for(page, "window.medlite.objects[0].prob === null")
    r = CliRunner().invoke(cli, ["sam", "predict", str(graphs[0]), str(image), "--box", ",".join(map(str, sent)),
                                 "--out", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    want = np.asarray(Image.open(tmp_path / "cli" / f"{CASE}_mask.png")) > 0
    np.testing.assert_array_equal(got, want)  # identical to the model's own predict
    assert _dice(got, gt) > 0.8


@pytest.mark.slow
def test_classify_tab_shows_probabilities_and_heat_map(server):
    _needs_browser()
    image, _ = _busi()
    with browser.running(create_app(server)) as url, browser.browser_page() as page:
        page.goto(url)
        browser.open_image(page, image)
        page.click("#tab-classify")
        page.select_option("#classifier", "medlit_nano_28_breastmnist")
        page.click("#classify")
        page.wait_for_selector("#probs tr")
        names = page.locator("#probs tr td:first-child").all_text_contents()
        assert sorted(names) == ["benign", "malignant"] or len(names) == 2
        assert page.is_visible("#heat")
        assert "medlit_nano_28_breastmnist" in page.text_content("#status")
