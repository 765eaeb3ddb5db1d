"""The HTML QC report opened in a real headless Chromium: no console errors, summary above the fold."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from qc_datasets import qc_clean, qc_deviant

from qmrbids.qc import load_protocol, run_qc, write_outputs

__all__ = ["qc_clean", "qc_deviant"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def test_report_loads_without_errors_and_shows_the_summary(qc_deviant, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from matplotlib.image import imread

    dataset, protocol_path, _ = qc_deviant
    result = run_qc(dataset, load_protocol(protocol_path))
    (report,) = [p for p in write_outputs(result, tmp_path, "html") if p.suffix == ".html"]
    browser.get(report.as_uri())
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    summary = browser.find_element(By.ID, "summary")
    assert "what needs attention" in summary.text
    assert "FlipAngle" in browser.find_element(By.ID, "attention-compliance").text
    assert summary.rect["y"] < browser.execute_script("return window.innerHeight")  # above the fold
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    screenshot = imread(io.BytesIO(browser.get_screenshot_as_png()), format="png")
    assert screenshot.std() > 0.05  # not blank
    # the summary's red attention border is visible in the screenshot's top half
    top = screenshot[: screenshot.shape[0] // 2, :, :3]
    assert np.any((top[..., 0] > 0.7) & (top[..., 1] < 0.3) & (top[..., 2] < 0.3))
