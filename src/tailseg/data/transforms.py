"""Training and evaluation transforms (albumentations), with crops that can be placed on a class.

Training, as in both papers: random scale in [0.5, 1.5], pad to the crop size (image with 0,
mask with the ignore index), crop, random horizontal flip, normalise. The crop is placed by
`crop_window`: uniformly at random, or - when a sampler asks for class c - so that it contains
a random pixel of class c (the LMP paper's "patches cropped at positions given by the sampling
strategy").

Randomness: every call takes a `seed`; the same seed gives the same output. The DataModule
draws each sample's seed from torch's generator, which Lightning's `seed_everything(workers=True)`
seeds per worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_window(
    mask: np.ndarray, size: tuple[int, int], rng: np.random.Generator, focus_class: int | None = None
) -> tuple[int, int]:
    """Top-left corner of a `size` crop of `mask` (which is at least `size` large).

    Args:
        mask: The (H, W) label map, already padded to at least the crop size.
        size: (crop height, crop width).
        rng: Source of randomness.
        focus_class: If given and present in `mask`, the crop contains a pixel of this class
            chosen uniformly among its pixels, at a uniformly random position inside the crop;
            otherwise the crop is uniform over all positions.

    Returns:
        (top, left).
    """
    h, w = mask.shape
    ch, cw = size
    if focus_class is not None and focus_class >= 0:
        ys, xs = np.nonzero(mask == focus_class)
        if ys.size:
            k = rng.integers(ys.size)
            top = int(np.clip(ys[k] - rng.integers(ch), 0, h - ch))
            left = int(np.clip(xs[k] - rng.integers(cw), 0, w - cw))
            return top, left
    return int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))


class TrainTransform:
    """Scale, pad, (class-aware) crop, flip and normalise one training sample.

    Args:
        crop_size: (height, width) of the crops.
        scale_range: Range of the random scale factor.
        hflip: Whether to flip horizontally with probability 0.5.
        mean: Normalisation mean per channel (on [0, 1] pixel values).
        std: Normalisation standard deviation per channel.
        ignore_index: Fill value of padded mask pixels.
    """

    def __init__(
        self,
        crop_size: tuple[int, int],
        scale_range: tuple[float, float] = (0.5, 1.5),
        hflip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = 255,
    ) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale = A.Compose(
            [
                A.RandomScale(
                    scale_limit=(scale_range[0] - 1.0, scale_range[1] - 1.0),
                    interpolation=cv2.INTER_LINEAR,
                    mask_interpolation=cv2.INTER_NEAREST,
                    p=1.0,
                ),
                A.PadIfNeeded(
                    min_height=self.crop_size[0],
                    min_width=self.crop_size[1],
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=ignore_index,
                    position="random",
                ),
            ]
        )
        self.finish = A.Compose([A.HorizontalFlip(p=0.5 if hflip else 0.0), A.Normalize(mean=mean, std=std)])

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, seed: int, focus_class: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.scale.set_random_seed(seed)
        self.finish.set_random_seed(seed + 1)
        out = self.scale(image=image, mask=mask)
        image, mask = out["image"], out["mask"]
        top, left = crop_window(mask, self.crop_size, np.random.default_rng(seed), focus_class)
        ch, cw = self.crop_size
        out = self.finish(image=image[top : top + ch, left : left + cw], mask=mask[top : top + ch, left : left + cw])
        return to_tensors(out["image"], out["mask"])


class EvalTransform:
    """Normalise the whole image; no geometric change (validation, test, prediction)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.normalize = A.Normalize(mean=mean, std=std)

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int = 0, focus_class: int | None = None):
        return to_tensors(self.normalize(image=image)["image"], mask)


def to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) float image -> (3, H, W) float32 tensor; (H, W) mask -> int64 tensor."""
    image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    mask_t = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
    return image_t, mask_t
