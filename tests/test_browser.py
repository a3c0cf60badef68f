"""The app in a real browser: Debian's headless chromium against `streamlit run` on a free localhost port.

Visits every page, uploads a gallery image through the file input, moves the threshold slider and
checks the numbers change, and saves screenshots into test-artifacts/. Skipped when chromium or
chromedriver is missing (`apt-get install chromium chromium-driver`). No traffic beyond localhost.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness.chromium import AVAILABLE, MISSING_REASON, metric_values, settled

from drnet_app.navigation import VIEWS

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
WINDOW = "1500,1150"
# The default page is served at the root: Streamlit ignores its url_path.
PAGES = {("" if index == 0 else view.url_path): view.title for index, view in enumerate(VIEWS)}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not AVAILABLE,
                                reason=MISSING_REASON)]


def assert_no_error(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), text[:2000]
    assert "Traceback" not in text
    assert "Something went wrong" not in text


def metric_value(driver, label: str) -> str:
    """The value of the first metric with this label; fails when the page has none."""
    values = metric_values(driver, label)
    assert values, f"no metric labelled {label!r}"
    return values[0]


def screenshot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_every_page_renders(server, browser):
    from selenium.webdriver.common.by import By

    for path, title in PAGES.items():
        browser.get(f"{server}/{path}")
        text = settled(browser)
        assert_no_error(browser, text)
        assert browser.find_element(By.CSS_SELECTOR, '[data-testid="stMain"] h1').text.strip() == title
        assert "NaN" not in text and "inf MFLOPs" not in text
        screenshot(browser, f"page-{path or 'start'}")


def test_threshold_slider_changes_the_numbers(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{server}/inspect?threshold=0.2")
    settled(browser)
    before = metric_value(browser, "Executed MFLOPs")
    # Streamlit's sliders are range inputs labelled by their widget label.
    threshold = browser.find_element(By.CSS_SELECTOR,
                                     '[data-testid="stSidebar"] input[type="range"][aria-label="Selection threshold"]')
    from selenium.webdriver.common.action_chains import ActionChains

    # The range input is visually hidden behind Streamlit's slider: focus it and use the keyboard,
    # as a keyboard user would.
    browser.execute_script("arguments[0].focus();", threshold)
    ActionChains(browser).send_keys(Keys.HOME).perform()  # threshold 0: every branch runs, the dense cost
    time.sleep(1.0)
    if float(threshold.get_attribute("value")) != 0.0:
        ActionChains(browser).send_keys(*([Keys.ARROW_LEFT] * 25)).perform()
    # On a busy machine the rerun can start after the page has looked settled for a while: give the
    # number time to change before calling it unchanged.
    after = metric_value(browser, "Executed MFLOPs")
    deadline = time.monotonic() + 120
    while after == before and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            after = metric_value(browser, "Executed MFLOPs")
        except Exception:  # the element is being redrawn; read it on the next turn
            continue
    text = settled(browser)
    after = metric_value(browser, "Executed MFLOPs")
    assert_no_error(browser, text)
    assert float(threshold.get_attribute("value")) == 0.0
    assert after != before
    assert "threshold=0.0" in browser.current_url
    screenshot(browser, "slider-moved")


def test_upload_a_gallery_image(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from PIL import Image

    from drnet_core.data.datasets import load_test_set

    pixels = load_test_set().images[0].numpy()
    # A photo-like version: dark garment on a light, larger canvas, so the auto inversion is exercised.
    picture = Image.fromarray(255 - pixels).resize((112, 112))
    path = tmp_path / "gallery_garment.png"
    picture.save(path)

    browser.get(f"{server}/inspect?source=Upload")
    settled(browser)
    browser.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(path))
    text = settled(browser, showing="(inverted)")
    assert_no_error(browser, text)
    assert "gallery_garment.png" in text
    assert "(inverted)" in text
    assert metric_value(browser, "Prediction")
    screenshot(browser, "upload")

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"just some text, not a picture")
    browser.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(bad))
    text = settled(browser, showing="Could not use this upload")
    assert "Could not use this upload" in text and "Traceback" not in text
    screenshot(browser, "bad-upload")


def test_payoff_view_draws_the_curve_and_its_controls(server, browser):
    from selenium.webdriver.common.by import By

    path = next(view.url_path for view in VIEWS if view.file == "payoff.py")
    browser.set_window_size(1280, 2600)  # a laptop's width, tall enough to hold the whole view
    try:
        browser.get(f"{server}/{path}?budget=5")
        text = settled(browser, showing="Collapse alarm")
        assert_no_error(browser, text)
        assert "NaN" not in text
        for label in ("Accuracy, current setting", "Random routing, same costs"):
            assert metric_value(browser, label).endswith("%")
        # The curve, the two difficulty figures and the health bars, each a drawn plotly figure.
        assert len(browser.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"] .main-svg')) >= 4
        legend = " ".join(item.text for item in browser.find_elements(By.CSS_SELECTOR, ".legendtext"))
        for entry in ("random routing", "static cells", "plain CNN", "current setting", "budget's setting"):
            assert entry in legend
        assert "Apply to the sidebar" in text
        screenshot(browser, "page-payoff-1280")
    finally:
        browser.set_window_size(1500, 1150)
