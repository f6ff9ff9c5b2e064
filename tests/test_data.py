"""DataModule, class statistics and the bad inputs that must fail early with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tailseg.data import DataError, ImageMaskFolder, SegmentationDataModule, class_pixel_counts
from tailseg.data.base import SegmentationDataset
from tailseg.sampling import UniformSampler

NAMES = ("a", "b", "c")


class ArrayDataset(SegmentationDataset):
    """Samples held in memory, for tests."""

    def __init__(self, images, masks, class_names=NAMES):
        super().__init__(class_names)
        self.images, self.masks = images, masks

    def __len__(self):
        return len(self.images)

    def load_image(self, index):
        return self.images[index]

    def load_mask(self, index):
        return self.masks[index]

    def sample_name(self, index):
        return f"sample_{index}"

    def cache_key(self):
        return f"array-{id(self)}"


def _arrays(n=3, h=16, w=20):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    masks = [rng.integers(0, 3, (h, w)).astype(np.uint8) for _ in range(n)]
    return images, masks


def test_class_counts_table_and_cache(tmp_path):
    images, masks = _arrays()
    masks[1][:] = 255
    ds = ArrayDataset(images, masks)
    counts = class_pixel_counts(ds, cache_dir=str(tmp_path))
    assert counts.shape == (3, 3) and counts.dtype == np.int64
    for i in range(3):
        assert counts[i].tolist() == [int((masks[i] == c).sum()) for c in range(3)]
    assert counts[1].sum() == 0
    assert len(list(tmp_path.glob("class_counts-*.npy"))) == 1
    masks[0][:] = 0  # the cache is keyed by the data set's key: same key, same (stale) table by design
    np.testing.assert_array_equal(class_pixel_counts(ds, cache_dir=str(tmp_path)), counts)


def test_label_outside_classes_names_the_sample():
    images, masks = _arrays()
    masks[2][3, 4] = 7
    with pytest.raises(DataError, match=r"sample_2: label values \[7\]"):
        class_pixel_counts(ArrayDataset(images, masks), cache_dir="")
    with pytest.raises(DataError, match="sample_2"):
        ArrayDataset(images, masks).load(2)


def test_image_and_mask_of_different_sizes():
    images, masks = _arrays()
    masks[1] = masks[1][:, :-1]
    with pytest.raises(DataError, match=r"sample_1: image size \(16, 20\) and mask size \(16, 19\) differ"):
        ArrayDataset(images, masks).load(1)


def test_datamodule_checks_all_training_masks_before_training():
    images, masks = _arrays()
    masks[2][0, 0] = 9
    dm = SegmentationDataModule(ArrayDataset(images, masks), crop_size=(8, 8), num_workers=0, stats_cache_dir="")
    with pytest.raises(DataError, match="sample_2"):
        dm.setup("fit")


def test_datamodule_batches_and_links():
    images, masks = _arrays(n=4)
    dm = SegmentationDataModule(
        ArrayDataset(images, masks), ArrayDataset(images, masks), crop_size=(8, 8), batch_size=2, num_workers=0,
        stats_cache_dir="",
    )  # fmt: skip
    assert dm.num_classes == 3 and dm.class_names == list(NAMES) and dm.ignore_index == 255
    dm.setup("fit")
    assert isinstance(dm.train_sampler, UniformSampler)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 8, 8) and batch["mask"].shape == (2, 8, 8)
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[-2:] == (16, 20)
    np.testing.assert_allclose(dm.class_frequency.sum(), 1.0)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"batch_size": 0}, "batch_size"), ({"crop_size": (4, 64)}, "crop_size"), ({"scale_range": (1.5, 0.5)}, "scale_range"),
     ({"num_workers": -1}, "num_workers"), ({"eval_batch_size": 0}, "eval_batch_size")],
    ids=["batch-size-zero", "crop-size-too-small", "scale-range-reversed", "num-workers-negative",
         "eval-batch-size-zero"],
)  # fmt: skip
def test_config_values_out_of_range(kwargs, field):
    images, masks = _arrays()
    with pytest.raises(ValueError, match=field):
        SegmentationDataModule(ArrayDataset(images, masks), **kwargs)


def test_val_set_with_other_classes_is_rejected():
    images, masks = _arrays()
    with pytest.raises(DataError, match="'val'"):
        SegmentationDataModule(ArrayDataset(images, masks), ArrayDataset(images, masks, ("x", "y", "z")))


def _folder(tmp_path, n=2):
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(n):
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "images" / f"s{i}.png")
        Image.fromarray(np.ones((8, 10), np.uint8)).save(tmp_path / "masks" / f"s{i}.png")
    return tmp_path


def test_image_mask_folder_reads_and_counts(tmp_path):
    ds = ImageMaskFolder(str(_folder(tmp_path)), class_names=NAMES)
    image, mask = ds.load(1)
    assert image.shape == (8, 10, 3) and mask.shape == (8, 10)
    assert class_pixel_counts(ds, cache_dir="").tolist() == [[0, 80, 0], [0, 80, 0]]


def test_empty_and_unreadable_files_are_named(tmp_path):
    root = _folder(tmp_path)
    (root / "masks" / "s0.png").write_bytes(b"")
    (root / "images" / "s1.png").write_bytes(b"not a png at all")
    ds = ImageMaskFolder(str(root), class_names=NAMES)
    with pytest.raises(DataError, match=r"s0\.png: file is empty"):
        ds.load(0)
    with pytest.raises(DataError, match=r"s1\.png: cannot be read"):
        ds.load(1)
    with pytest.raises(DataError, match="s0.png"):
        class_pixel_counts(ds, cache_dir="")


def test_missing_folder_and_missing_mask(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        ImageMaskFolder(str(tmp_path / "nowhere"), class_names=NAMES)
    root = _folder(tmp_path)
    (root / "masks" / "s1.png").unlink()
    with pytest.raises(DataError, match=r"first: .*s1\.png"):
        ImageMaskFolder(str(root), class_names=NAMES)


def test_mask_size_mismatch_found_by_stats(tmp_path):
    """Stats compare the image header size with the mask before any training."""
    root = _folder(tmp_path)
    Image.fromarray(np.ones((9, 10), np.uint8)).save(root / "masks" / "s0.png")
    with pytest.raises(DataError, match=r"s0\.png: image size \(8, 10\) and mask size \(9, 10\) differ"):
        class_pixel_counts(ImageMaskFolder(str(root), class_names=NAMES), cache_dir="")


def test_uniform_sampler_shards_one_permutation():
    counts = np.ones((10, 3), np.int64)
    full = list(UniformSampler(counts, seed=3))
    assert sorted(full) == list(range(10))
    shards = [list(UniformSampler(counts, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10)) and not set(shards[0]) & set(shards[1])
    sampler = UniformSampler(counts, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != full and sorted(sampler) == list(range(10))
