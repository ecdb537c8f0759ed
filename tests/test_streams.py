"""The per-image random streams: ids fixed by the name (pinned here), one rule for -C and -P."""

from __future__ import annotations

import numpy as np
import pytest

import pushpull.data.corruptions as corruptions
from pushpull.data.corruptions import CORRUPTIONS, corrupt, corrupt_reference
from pushpull.data.perturbations import ALL_PERTURBATIONS, perturb
from pushpull.data.streams import STREAM_RULE, image_stream, stream_id

# Rule 2: CRC-32 of the name. Changing any of these changes every generated -C/-P set: bump STREAM_RULE.
GOLDEN_IDS = {
    "gaussian_noise": 3703756812, "shot_noise": 3471894632, "impulse_noise": 1509473130,
    "defocus_blur": 3309403886, "glass_blur": 2691946566, "motion_blur": 2065860148, "zoom_blur": 3308848911,
    "snow": 914597299, "frost": 26676970, "fog": 2192108819, "brightness": 3648444131, "contrast": 2739747336,
    "elastic_transform": 1646847121, "pixelate": 798093527, "jpeg_compression": 301795284,
    "speckle_noise": 1912357100, "gaussian_blur": 3261062983, "spatter": 4273487425, "saturate": 890621446,
    "translate": 1242588023, "rotate": 931746316, "tilt": 473926134, "scale": 3964020100, "shear": 171176403,
    "gaussian_noise_2": 2425408460, "gaussian_noise_3": 3885497178, "shot_noise_2": 3084404721,
    "shot_noise_3": 3235870567, "speckle_noise_2": 809143912, "speckle_noise_3": 1195228926,
}


def test_stream_ids_are_pinned():
    assert STREAM_RULE == 2
    assert set(GOLDEN_IDS) == set(CORRUPTIONS) | set(ALL_PERTURBATIONS)
    assert {name: stream_id(name) for name in GOLDEN_IDS} == GOLDEN_IDS
    assert len(set(GOLDEN_IDS.values())) == len(GOLDEN_IDS)  # no two names share a stream


def test_corruption_pixels_follow_the_rule():
    """Gaussian noise of one image is the reference formula on default_rng([seed, id, severity, index])."""
    gray = np.full((1, 8, 8, 3), 128, np.uint8)
    rng = np.random.default_rng([3, GOLDEN_IDS["gaussian_noise"], 2, 41])
    expected = np.uint8(np.clip(gray[0] / 255.0 + rng.normal(size=gray.shape[1:], scale=0.06), 0, 1) * 255)
    np.testing.assert_array_equal(corrupt(gray, "gaussian_noise", 2, seed=3, indices=[41])[0], expected)


def test_perturbation_pixels_follow_the_rule():
    """Frame 1 of a speckle sequence is the reference formula on default_rng([seed, id, index])."""
    gray = np.full((1, 8, 8, 3), 128, np.uint8)
    rng = np.random.default_rng([5, GOLDEN_IDS["speckle_noise"], 9])
    x = gray[0] / 255.0
    expected = np.uint8(255 * np.clip(x + x * rng.normal(size=x.shape, scale=0.05), 0, 1))
    np.testing.assert_array_equal(perturb(gray, "speckle_noise", seed=5, indices=[9])[0, 1], expected)


@pytest.mark.parametrize("name", ["gaussian_noise", "fog", "spatter"])
def test_reordering_the_corruptions_changes_nothing(name, monkeypatch):
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    before = corrupt(x, name, 3, seed=1)
    monkeypatch.setattr(corruptions, "CORRUPTIONS", ("a_new_corruption",) + CORRUPTIONS[::-1])
    np.testing.assert_array_equal(corrupt(x, name, 3, seed=1), before)
    np.testing.assert_array_equal(corrupt_reference(x, name, 3, seed=1), before)


def test_negative_seed_is_refused():
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        image_stream(-1, "fog", 1, 0)
