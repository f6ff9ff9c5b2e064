"""The synthetic benchmark: deterministic, Cityscapes-like long tail, ignore pixels, bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from tailseg.data import DataError, SyntheticStreets, class_pixel_counts
from tailseg.data.scenes import CLASS_NAMES, IGNORE


def test_same_seed_same_scene_and_splits_differ():
    a = SyntheticStreets("train", num_images=3, height=96, width=192, seed=7)
    b = SyntheticStreets("train", num_images=3, height=96, width=192, seed=7)
    v = SyntheticStreets("val", num_images=3, height=96, width=192, seed=7)
    for i in range(3):
        np.testing.assert_array_equal(a.load_image(i), b.load_image(i))
        np.testing.assert_array_equal(a.load_mask(i), b.load_mask(i))
        assert not np.array_equal(a.load_image(i), v.load_image(i))
    assert not np.array_equal(a.load_image(0), a.load_image(1))


def test_prepare_and_disk_cache_match_on_the_fly_rendering(tmp_path):
    lazy = SyntheticStreets("val", num_images=5, height=64, width=128, seed=3)
    cached = SyntheticStreets("val", num_images=5, height=64, width=128, seed=3, cache_dir=str(tmp_path))
    cached.prepare(num_workers=2)
    assert list(tmp_path.glob("*.npz"))
    again = SyntheticStreets("val", num_images=5, height=64, width=128, seed=3, cache_dir=str(tmp_path))
    again.prepare()
    for i in range(5):
        image, mask = lazy.load(i)
        np.testing.assert_array_equal(image, cached.load_image(i))
        np.testing.assert_array_equal(mask, again.load_mask(i))
        assert image.dtype == np.uint8 and image.shape == (64, 128, 3) and mask.shape == (64, 128)


def test_long_tail_matches_declared_frequencies():
    """The module docs declare: 6 classes hold ~90% of the labelled pixels, the rarest well under 0.5%."""
    ds = SyntheticStreets("train", num_images=120, height=96, width=192, seed=0)
    ds.prepare(num_workers=2)
    counts = class_pixel_counts(ds, cache_dir="")
    share = counts.sum(0) / counts.sum()
    order = np.argsort(-share)
    assert 0.85 <= share[order[:6]].sum() <= 0.97
    assert {CLASS_NAMES[c] for c in order[:6]} == {"road", "building", "vegetation", "sky", "car", "sidewalk"}
    assert (share[order[-5:]] < 0.005).all() and (share > 0).all()
    presence = (counts > 0).mean(0)
    for name in ("truck", "bus", "train"):  # inter-class imbalance: in few images
        assert presence[CLASS_NAMES.index(name)] < 0.25
    assert presence[CLASS_NAMES.index("road")] == 1.0
    ignored = sum((ds.load_mask(i) == IGNORE).sum() for i in range(len(ds))) / (len(ds) * 96 * 192)
    assert 0.01 < ignored < 0.15


def test_intra_class_size_varies():
    """The same class appears large and small (perspective): car pixel counts span an order of magnitude."""
    ds = SyntheticStreets("train", num_images=60, height=96, width=192, seed=1)
    cars = class_pixel_counts(ds, cache_dir="")[:, CLASS_NAMES.index("car")]
    cars = cars[cars > 0]
    assert cars.max() > 10 * cars.min()


def test_shade_changes_appearance_only():
    """Shadows darken and smooth what lies below the sky; labels, sky and unshaded scenes stay as at shade 0."""
    size = {"num_images": 8, "height": 96, "width": 192, "seed": 2}
    plain, full, half = (SyntheticStreets("train", shade=s, **size) for s in (0.0, 1.0, 0.5))
    laplacian = {0.0: [], 1.0: []}
    shaded_half = 0
    for i in range(8):
        mask = plain.load_mask(i)
        np.testing.assert_array_equal(mask, full.load_mask(i))
        np.testing.assert_array_equal(mask, half.load_mask(i))
        sky = mask == CLASS_NAMES.index("sky")
        a, b = plain.load_image(i).astype(np.float64), full.load_image(i).astype(np.float64)
        np.testing.assert_array_equal(a[sky], b[sky])  # shadows never fall on the sky
        assert b[~sky].mean() < a[~sky].mean() - 3  # every scene is shaded at shade 1
        for shade, image in ((0.0, a), (1.0, b)):
            grey = image.mean(axis=2)
            lap = np.abs(4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:])
            laplacian[shade].append(lap.mean())
        shaded_half += not np.array_equal(a, half.load_image(i).astype(np.float64))
    assert np.median(laplacian[1.0]) < 0.95 * np.median(laplacian[0.0])  # textures fade (noise remains)
    assert 0 < shaded_half < 8  # shade 0.5: some scenes shaded, some not (seed 2: fixed draw)
    assert plain.cache_key() != full.cache_key() != half.cache_key()


@pytest.mark.parametrize("shade", [-0.1, 1.5])
def test_bad_shade_names_the_field(shade):
    with pytest.raises(DataError, match="shade"):
        SyntheticStreets(shade=shade)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        pytest.param({"split": "dev"}, "split", id="unknown-split"),
        pytest.param({"num_images": 0}, "num_images", id="num-images-zero"),
        pytest.param({"height": 8}, "height", id="height-too-small"),
        pytest.param({"width": 0}, "width", id="width-zero"),
    ],
)
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(DataError, match=field):
        SyntheticStreets(**kwargs)


def test_index_out_of_range():
    with pytest.raises(IndexError, match="out of range"):
        SyntheticStreets("val", num_images=2, height=64, width=64).load_image(2)
