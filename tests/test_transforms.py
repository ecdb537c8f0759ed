"""``pushpull.transforms``: corruptions inside torchvision v2 pipelines, reproducible whatever the DataLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

import pushpull
from conftest import real_photos
from pushpull.transforms import Corrupt, RandomCorrupt


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Twelve 48x64 crops of real photos (distinct pixels, so distinct keys)."""
    out = []
    for k in range(12):
        photo = real_photos()[k % 3][1]
        top, left = 37 * k % (photo.shape[0] - 48), 53 * k % (photo.shape[1] - 64)
        out.append(photo[top:top + 48, left:left + 64].copy())
    return out


def test_same_type_and_layout_out(crops):
    x = crops[0]
    t = Corrupt("shot_noise", 3, params="imagenet", seed=1)
    want = t(x)
    assert isinstance(want, np.ndarray) and want.shape == x.shape and want.dtype == np.uint8
    assert not np.array_equal(want, x)
    pil = t(Image.fromarray(x))
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and np.array_equal(np.asarray(pil), want)
    chw = t(torch.from_numpy(x).permute(2, 0, 1))  # a non-contiguous view, as PILToTensor's permute gives
    assert type(chw) is torch.Tensor and chw.dtype == torch.uint8 and chw.shape == (3, 48, 64)
    assert np.array_equal(chw.permute(1, 2, 0).numpy(), want)
    image = t(tv_tensors.Image(torch.from_numpy(x).permute(2, 0, 1)))
    assert isinstance(image, tv_tensors.Image) and np.array_equal(image.permute(1, 2, 0).numpy(), want)


def test_index_gives_what_corrupt_gives(crops):
    x = crops[1]
    for params in ("imagenet", "tinyimagenet"):
        t = Corrupt("glass_blur", 2, params=params, seed=7)
        assert np.array_equal(t(x, index=41), pushpull.corrupt(x, "glass_blur", 2, seed=7, indices=41, params=params))
        assert not np.array_equal(t(x, index=41), t(x, index=42))
    assert np.array_equal(Corrupt("fog", 1, params="cifar")(x, index=3), pushpull.corrupt(x, "fog", 1, indices=3))


def test_in_a_v2_sample_only_the_image_is_corrupted(crops):
    x = torch.from_numpy(crops[2]).permute(2, 0, 1)
    mask = tv_tensors.Mask(torch.zeros(48, 64, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes([[1, 2, 30, 40]], format="XYXY", canvas_size=(48, 64))
    pipeline = v2.Compose([v2.ToImage(), Corrupt("gaussian_noise", 4, params="imagenet", seed=0),
                           v2.ToDtype(torch.float32, scale=True)])
    out = pipeline({"image": tv_tensors.Image(x), "mask": mask, "boxes": boxes, "label": 3})
    assert out["label"] == 3 and torch.equal(out["mask"], mask) and torch.equal(out["boxes"], boxes)
    assert out["image"].dtype == torch.float32
    direct = Corrupt("gaussian_noise", 4, params="imagenet", seed=0)(x)
    assert torch.equal((out["image"] * 255).round().to(torch.uint8), direct)
    image, label = v2.Compose([Corrupt("contrast", 2, params="cifar")])(Image.fromarray(crops[2]), 5)
    assert isinstance(image, Image.Image) and label == 5


class Photos(Dataset):
    def __init__(self, crops, transform, by_index: bool = False):
        self.crops, self.transform, self.by_index = crops, transform, by_index

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i):
        image = Image.fromarray(self.crops[i])
        if self.by_index:
            return v2.functional.pil_to_tensor(self.transform(image, index=i)), i
        return self.transform(image), i


@pytest.mark.parametrize("by_index", [False, True])
def test_dataloader_gives_the_same_images_with_0_and_2_workers(crops, by_index):
    transform = (RandomCorrupt(["gaussian_noise", "frost", "pixelate", "motion_blur"], params="tinyimagenet",
                               seed=5) if by_index else
                 v2.Compose([RandomCorrupt(["gaussian_noise", "frost", "pixelate", "motion_blur"],
                                           params="tinyimagenet", seed=5), v2.PILToTensor()]))
    runs = []
    for workers in (0, 2):
        torch.manual_seed(workers)  # the workers' torch seeds differ: the images must not
        loader = DataLoader(Photos(crops, transform, by_index), batch_size=4, num_workers=workers)
        runs.append(torch.cat([images for images, _ in loader]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], torch.stack([torch.from_numpy(c).permute(2, 0, 1) for c in crops]))


def test_random_corrupt_draws_from_its_choices(crops):
    choices = [(name, s) for name in ("brightness", "contrast") for s in (1, 5)]
    r = RandomCorrupt("brightness,contrast", severities="1,5", params="imagenet", seed=2)
    seen = set()
    for x in crops:
        out = r(x)
        picked = [(n, s) for n, s in choices if np.array_equal(out, Corrupt(n, s, params="imagenet", seed=2)(x))]
        assert picked, "not one of the choices"
        seen.add(picked[0])
    assert len(seen) >= 3  # twelve images, four choices
    assert np.array_equal(r(crops[0]), r(crops[0]))  # a function of the pixels


def test_without_a_seed_torch_seeds_the_draw(crops):
    r = RandomCorrupt(params="imagenet")
    torch.manual_seed(0)
    first = [r(x) for x in crops[:3]]
    torch.manual_seed(0)
    assert all(np.array_equal(a, r(x)) for a, x in zip(first, crops[:3]))
    torch.manual_seed(1)
    assert not all(np.array_equal(a, r(x)) for a, x in zip(first, crops[:3]))


@pytest.mark.parametrize("make, inpt, error, match", [
    (lambda: Corrupt("fog", 1, params="imagenet"), torch.zeros(3, 40, 40), TypeError, "before v2.ToDtype"),
    (lambda: Corrupt("fog", 1, params="imagenet"), torch.zeros(1, 40, 40, dtype=torch.uint8), ValueError,
     r"one \(3, H, W\) image tensor, got shape \(1, 40, 40\)"),
    (lambda: Corrupt("pixelate", 5, params="imagenet"), np.zeros((2, 9, 3), np.uint8), ValueError,
     "a 2x9 image: pixelate severity 5 shrinks by 0.25: needs at least 4 px"),
    (lambda: Corrupt("fogg", 1, params="imagenet"), None, ValueError, "did you mean 'fog'"),
    (lambda: Corrupt("fog", 1, params="imagenet6"), None, ValueError, "unknown parameter table 'imagenet6'"),
    (lambda: Corrupt("fog", 6, params="imagenet"), None, ValueError, "severity must be an integer in 1..5"),
    (lambda: Corrupt("fog", 1, params="imagenet", seed=-1), None, ValueError, "seed must be a non-negative"),
    (lambda: RandomCorrupt("noise", params="cifar"), None, ValueError, "unknown corruption 'noise'"),
    (lambda: RandomCorrupt(severities="0", params="cifar"), None, ValueError, "severities must be among"),
])
def test_errors_say_what_is_expected(make, inpt, error, match):
    with pytest.raises(error, match=match):
        make()(inpt)


def test_index_needs_one_image(crops):
    t = Corrupt("fog", 1, params="imagenet")
    with pytest.raises(TypeError, match="index= goes with one image"):
        t(crops[0], 3, index=1)
    with pytest.raises(ValueError, match="index must be a non-negative integer"):
        t(crops[0], index=-1)
