"""Training transforms: crops on a chosen class, ignore padding, determinism; the poly schedule."""

from __future__ import annotations

import numpy as np
import torch

from tailseg.data.transforms import EvalTransform, TrainTransform, crop_window
from tailseg.optim import PolyLR


def test_focused_crop_contains_the_class():
    mask = np.zeros((100, 200), np.uint8)
    mask[90:92, 190:193] = 7  # a tiny rare object in a corner
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left = crop_window(mask, (32, 32), rng, focus_class=7)
        assert (mask[top : top + 32, left : left + 32] == 7).any()
    # A class that is absent falls back to a uniform crop inside the image.
    top, left = crop_window(mask, (32, 32), rng, focus_class=3)
    assert 0 <= top <= 68 and 0 <= left <= 168


def test_train_transform_pads_with_ignore_and_is_deterministic():
    image = np.full((20, 30, 3), 128, np.uint8)
    mask = np.ones((20, 30), np.uint8)
    t = TrainTransform(crop_size=(64, 64), scale_range=(1.0, 1.0), hflip=False)
    img_a, mask_a = t(image, mask, seed=5)
    img_b, mask_b = t(image, mask, seed=5)
    assert img_a.shape == (3, 64, 64) and mask_a.shape == (64, 64) and mask_a.dtype == torch.int64
    assert torch.equal(img_a, img_b) and torch.equal(mask_a, mask_b)
    assert (mask_a == 255).sum() == 64 * 64 - 20 * 30 and (mask_a == 1).sum() == 20 * 30


def test_eval_transform_keeps_geometry_and_normalises():
    image = np.zeros((10, 12, 3), np.uint8)
    img, mask = EvalTransform()(image, np.zeros((10, 12), np.uint8))
    assert img.shape == (3, 10, 12)
    np.testing.assert_allclose(img[0, 0, 0].item(), -0.485 / 0.229, rtol=1e-5)


def test_poly_lr_follows_the_formula():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = PolyLR(opt, total_steps=10, power=0.9)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 * (1 - min(k, 10) / 10) ** 0.9 for k in range(12)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)
