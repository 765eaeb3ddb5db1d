"""The image-quality metric definitions against synthetic images whose truth is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from qmrbids.qc.metrics import foreground_mask, raw_image_metrics
from qmrbids.qc.protocol import classify


def _disc(n: int = 64, slices: int = 3, radius: float = 18) -> np.ndarray:
    x, y = np.mgrid[:n, :n] - (n - 1) / 2
    return np.repeat(((x ** 2 + y ** 2) <= radius ** 2)[..., None], slices, axis=2)


def _rician(amplitude: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(amplitude + rng.normal(0, sigma, amplitude.shape) + 1j * rng.normal(0, sigma, amplitude.shape))


@pytest.mark.parametrize("true_snr", [2.0, 5.0, 40.0])
def test_snr_is_rician_corrected(true_snr):
    disc = _disc()
    sigma = 100.0
    image = _rician(disc * true_snr * sigma, sigma)
    values = raw_image_metrics(image, disc, (3.0, 3.0))
    assert values["noise_sigma"] == pytest.approx(sigma, rel=0.04)
    assert values["snr"] == pytest.approx(true_snr, rel=0.06)
    naive = image[disc].mean() / values["noise_sigma"]
    if true_snr == 2.0:  # the uncorrected ratio would be biased by the Rician floor
        assert naive > 1.1 * true_snr


def test_mask_from_many_noisy_images_finds_the_object():
    disc = _disc()
    images = [_rician(disc * 3 * 100.0, 100.0, seed) for seed in range(12)]
    mask = foreground_mask(images)
    assert (mask == disc).mean() > 0.97


def test_piu_of_a_ramp_and_ghosting_of_a_ghost():
    disc = _disc()
    ramp = np.linspace(0.8, 1.2, disc.shape[0])[:, None, None] * np.ones(disc.shape)
    values = raw_image_metrics(1000.0 * disc * ramp, disc, (3.0, 3.0))
    high, low = ramp[disc].max(), ramp[disc].min()  # the ramp across the disc
    assert values["piu"] == pytest.approx(100 * (1 - (high - low) / (high + low)), abs=1.5)
    assert values["snr"] == float("inf") and values["ghosting_ratio"] == pytest.approx(0.0)
    clean = _rician(1000.0 * disc, 10.0)
    ghost = 0.05 * np.roll(1000.0 * disc, disc.shape[1] // 2, axis=1)  # an N/2 ghost along the phase axis
    ghosted = _rician(1000.0 * disc + ghost * ~disc, 10.0)
    ratio_clean = raw_image_metrics(clean, disc, (3.0, 3.0))["ghosting_ratio"]
    ratio_ghost = raw_image_metrics(ghosted, disc, (3.0, 3.0))["ghosting_ratio"]
    assert ratio_clean < 0.005 < ratio_ghost


def test_thresholds_classify():
    threshold = {"warn_below": 10, "fail_below": 5}
    assert [classify(v, threshold) for v in (12, 7, 3, None, float("inf"))] == ["pass", "warn", "fail", "n/a", "pass"]
    assert classify(0.02, {"warn_above": 0.001, "fail_above": 0.01}) == "fail"
