"""``pushpull.corrupt`` takes what users hold: numpy or torch uint8 images, one or a batch, and gives the same back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pushpull
from pushpull.data.corruptions import corrupt_reference

RNG = np.random.default_rng(3)
BATCH = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["gaussian_noise", "fog"])
def test_tensor_in_tensor_out_same_pixels(name):
    expected = pushpull.corrupt(BATCH, name, 3, seed=1)
    nhwc = pushpull.corrupt(torch.from_numpy(BATCH), name, 3, seed=1)
    assert isinstance(nhwc, torch.Tensor) and nhwc.dtype == torch.uint8 and nhwc.shape == (3, 32, 32, 3)
    assert np.array_equal(nhwc.numpy(), expected)
    nchw = pushpull.corrupt(torch.from_numpy(BATCH).permute(0, 3, 1, 2), name, 3, seed=1)  # torchvision layout
    assert nchw.shape == (3, 3, 32, 32) and np.array_equal(nchw.permute(0, 2, 3, 1).numpy(), expected)
    oracle = corrupt_reference(torch.from_numpy(BATCH).permute(0, 3, 1, 2), name, 3, seed=1)
    assert isinstance(oracle, torch.Tensor) and torch.equal(oracle, nchw)


def test_one_image_with_its_index():
    expected = pushpull.corrupt(BATCH, "shot_noise", 2, indices=[7, 8, 9])[1]
    one = pushpull.corrupt(BATCH[1], "shot_noise", 2, indices=8)
    assert isinstance(one, np.ndarray) and np.array_equal(one, expected)
    chw = pushpull.corrupt(torch.from_numpy(BATCH[1]).permute(2, 0, 1), "shot_noise", 2, indices=8)
    assert chw.shape == (3, 32, 32) and np.array_equal(chw.permute(1, 2, 0).numpy(), expected)


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="uint8"):
        pushpull.corrupt(torch.zeros(2, 32, 32, 3), "fog", 1)
    with pytest.raises(TypeError, match="list"):
        pushpull.corrupt(BATCH.tolist(), "fog", 1)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\).*got \(2, 32, 32, 4\)"):
        pushpull.corrupt(np.zeros((2, 32, 32, 4), np.uint8), "fog", 1)
    with pytest.raises(ValueError, match="indices"):
        pushpull.corrupt(BATCH, "fog", 1, indices=4)


def test_channels_first_and_last_tensors_of_any_size_and_table():
    image = RNG.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    expected = pushpull.corrupt(image, "motion_blur", 2, seed=3, indices=9, params="tinyimagenet")
    hwc = pushpull.corrupt(torch.from_numpy(image), "motion_blur", 2, seed=3, indices=9, params="tinyimagenet")
    chw_view = torch.from_numpy(image).permute(2, 0, 1)  # not contiguous: what PILToTensor-style code hands over
    chw = pushpull.corrupt(chw_view, "motion_blur", 2, seed=3, indices=9, params="tinyimagenet")
    assert hwc.shape == (40, 56, 3) and chw.shape == (3, 40, 56) and chw.dtype == torch.uint8
    assert np.array_equal(hwc.numpy(), expected) and np.array_equal(chw.permute(1, 2, 0).numpy(), expected)
    # A last dimension of 3 means channels-last, even when the first is 3 too (a 3-row image).
    rows3 = torch.from_numpy(RNG.integers(0, 256, (3, 20, 3), dtype=np.uint8))
    assert torch.equal(pushpull.corrupt(rows3, "contrast", 1), torch.from_numpy(pushpull.corrupt(rows3.numpy(),
                                                                                                 "contrast", 1)))
