"""The cost audit of one's own images in a real browser: upload a zip, see its rows, download the CSV with
its full provenance. Headless Chromium against `streamlit run`; skipped without chromium/chromedriver."""
from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
from harness.chromium import AVAILABLE, MISSING_REASON, settled
from PIL import Image
from test_browser import assert_no_error, metric_value, screenshot

from drnet_core.analysis import audit
from drnet_core.data.datasets import load_shipped_subset

WINDOW = "1500,1150"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not AVAILABLE, reason=MISSING_REASON)]
FOLDERS = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_zip(path) -> None:
    garments = load_shipped_subset()
    with zipfile.ZipFile(path, "w") as archive:
        for position in range(8):
            archive.writestr(f"{FOLDERS[int(garments.labels[position])]}/{position}.png",
                             png(garments.images[position].numpy()))
        archive.writestr("odd/noise.png", png(np.random.default_rng(0).integers(0, 256, (64, 64))))
        archive.writestr("../escape.png", png(np.zeros((28, 28))))
        archive.writestr("readme.txt", b"not an image")


def test_upload_a_zip_on_the_cost_audit_and_download_its_csv(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    archive = tmp_path / "my_images.zip"
    write_zip(archive)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(f"{server}/audit?audit_source=Your%20images")
    settled(browser, showing="Upload images")
    browser.find_element(By.CSS_SELECTOR, '.st-key-audit_upload input[type="file"]').send_keys(str(archive))
    text = settled(browser, showing="Costliest inputs")
    assert_no_error(browser, text)
    assert metric_value(browser, "Inputs shown") == "9"
    assert "2 input(s) skipped" in text
    screenshot(browser, "audit-upload-zip")
    browser.find_element(By.CSS_SELECTOR, ".st-key-download_csv button").click()
    deadline = time.monotonic() + 60
    while not list(downloads.glob("*.csv")) and time.monotonic() < deadline:
        time.sleep(0.5)
    files = list(downloads.glob("*.csv"))
    assert [f.name for f in files] == ["drnet_audit_drnet-fashion_tau0.25_threshold0.3.csv"]
    frame = pd.read_csv(files[0], keep_default_na=False)
    assert len(frame) == 9 and "odd/noise.png" in set(frame["input"])
    for column in audit.PROVENANCE_COLUMNS + ("ood", "ood_score", "path"):
        assert column in frame.columns
    first = frame.iloc[0]
    assert first["checkpoint_name"] == "drnet_fashion.pt" and len(first["checkpoint_sha256"]) == 64
    assert (first["tau"], first["threshold"]) == (0.25, 0.3)
    assert "my_images.zip" in first["dataset"] and first["filters"] == "none"
    assert first["created_utc"].endswith("+00:00") and first["app_version"]
    assert first["timing_machine"].startswith(("cpu:", "cuda:"))
    assert frame.set_index("input").loc["odd/noise.png", "ood"] in (True, "True")
