"""CamVid (SegNet layout) read from a tiny generated copy; never from the real data."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image

from fixtures import write_camvid
from tailseg.data import CamVid, DataError, SegmentationDataModule, SegmentationDataset
from tailseg.data.camvid import CLASS_COLORS, label_table

OFFICIAL_NAMES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist")  # fmt: skip
# The SegNet CamVid palette, written out independently of the module.
OFFICIAL_COLORS = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
                   [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192]]  # fmt: skip


@pytest.fixture
def camvid(tmp_path):
    return write_camvid(tmp_path / "CamVid")


def _raw(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_camvid_lengths_names_and_classes(camvid):
    train, val = CamVid(str(camvid), "train"), CamVid(str(camvid), "val")
    assert len(train) == 3 and len(val) == 3
    assert [p.name for p in train.image_paths] == ["0001TP_000000.png", "0001TP_000030.png", "0001TP_000060.png"]
    assert [p.parent.name for p in train.mask_paths] == ["trainannot"] * 3
    assert [p.name for p in val.mask_paths] == [p.name for p in val.image_paths]
    assert train.sample_name(1) == str(camvid / "train" / "0001TP_000030.png")
    assert train.prediction_name(1) == "0001TP_000030" and train.prediction_file(1) == "0001TP_000030.png"
    assert train.class_names == OFFICIAL_NAMES and train.num_classes == 11 and train.ignore_index == 255
    assert (camvid / "train.txt").read_text().splitlines()[0] == "train/0001TP_000000.png trainannot/0001TP_000000.png"
    with pytest.raises(DataError, match="split must be one of"):
        CamVid(str(camvid), "validation")


def test_camvid_void_becomes_ignore_and_labels_are_kept(camvid):
    ds = CamVid(str(camvid), "train")
    for i in range(len(ds)):
        raw = _raw(ds.mask_paths[i])
        assert Image.open(ds.mask_paths[i]).mode == "L"
        assert {0, 1, 3, 4, 5, 8, 11} <= set(np.unique(raw).tolist()) <= set(range(12))
        image, mask = ds.load(i)
        assert image.shape == (36, 48, 3) and image.dtype == np.uint8
        assert mask.shape == (36, 48) and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, np.where(raw == 11, 255, raw))
        assert ds.image_size(i) == (36, 48)
        assert ds[i]["name"] == ds.sample_name(i)
    custom = CamVid(str(camvid), "train", ignore_index=250)
    raw = _raw(custom.mask_paths[0])
    np.testing.assert_array_equal(custom.load_mask(0), np.where(raw == 11, 250, raw))
    assert (CamVid(str(camvid), "train", ignore_index=11).load_mask(0) == raw).all()  # void kept as 11
    wide = CamVid(str(camvid), "train", ignore_index=-1).load_mask(0)
    assert wide.dtype == np.int64 and (wide[raw == 11] == -1).all()


def test_camvid_label_table():
    table = label_table()
    assert table.shape == (256,)
    assert table[:11].tolist() == list(range(11)) and table[11] == 255 and (table[12:] == -1).all()
    assert label_table(ignore_index=100)[11] == 100


def test_camvid_cache_key_follows_the_file_list(camvid):
    train = CamVid(str(camvid), "train")
    assert train.cache_key() == CamVid(str(camvid), "train").cache_key()
    assert train.cache_key() != CamVid(str(camvid), "val").cache_key()
    assert train.cache_key().startswith("CamVid-3-")
    shutil.copy(train.image_paths[0], camvid / "train" / "0001TP_000090.png")
    shutil.copy(train.mask_paths[0], camvid / "trainannot" / "0001TP_000090.png")
    assert CamVid(str(camvid), "train").cache_key() != train.cache_key()


@pytest.mark.parametrize("value", [12, 255], ids=["label-12-past-void", "label-255-not-void"])
def test_camvid_bad_label_names_the_file_and_values(camvid, value):
    ds = CamVid(str(camvid), "val")
    path = ds.mask_paths[1]
    raw = _raw(path).copy()
    raw[3, 4] = value
    Image.fromarray(raw).save(path)
    with pytest.raises(DataError, match=re.escape(str(path)) + rf".*\[{value}\]"):
        ds.load_mask(1)
    with pytest.raises(DataError, match=re.escape(str(path))):
        ds[1]


def test_camvid_16_bit_label_map_out_of_range(camvid):
    ds = CamVid(str(camvid), "val")
    Image.fromarray(np.full((36, 48), 300, np.uint16)).save(ds.mask_paths[0])
    with pytest.raises(DataError, match=re.escape(str(ds.mask_paths[0])) + r".*\[300\]"):
        ds.load_mask(0)


def test_camvid_missing_label_map_shows_the_layout(camvid):
    missing = camvid / "valannot" / "0016E5_000030.png"
    missing.unlink()
    with pytest.raises(DataError, match=re.escape(f"CamVid: {missing} not found (the label map of ")) as err:
        CamVid(str(camvid), "val")
    message = str(err.value)
    assert "0016E5_000030.png" in message and "Expected layout:" in message
    assert "val/<name>.png" in message and "valannot/<name>.png" in message


def test_camvid_missing_folders_show_the_layout(camvid, tmp_path):
    with pytest.raises(DataError, match=re.escape(f"CamVid: {camvid / 'test'} not found. Expected layout:")) as err:
        CamVid(str(camvid), "test")
    assert "test/<name>.png" in str(err.value) and "testannot/<name>.png" in str(err.value)
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(f"CamVid: {nowhere} not found. Expected layout:")):
        CamVid(str(nowhere), "train")
    shutil.rmtree(camvid / "trainannot")
    with pytest.raises(DataError, match=re.escape(f"CamVid: {camvid / 'trainannot'} not found. Expected layout:")):
        CamVid(str(camvid), "train")
    for path in (camvid / "val").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=re.escape(f"CamVid: {camvid / 'val' / '<name>.png'} not found")):
        CamVid(str(camvid), "val")


def test_camvid_prediction_round_trips_to_the_annotation_encoding(camvid, tmp_path):
    ds = CamVid(str(camvid), "val")
    pred = np.array([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 255]])
    image = ds.encode_prediction(pred)
    assert image.mode == "L"
    path = tmp_path / ds.prediction_file(0)
    image.save(path)
    np.testing.assert_array_equal(_raw(path), [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    # A ground-truth map, written back as a prediction, gives the very annotation file's pixels.
    raw = _raw(ds.mask_paths[2])
    ds.encode_prediction(ds.load_mask(2)).save(path)
    np.testing.assert_array_equal(_raw(path), raw)
    custom = CamVid(str(camvid), "val", ignore_index=250)
    np.testing.assert_array_equal(np.asarray(custom.encode_prediction(np.array([[250, 3]]))), [[11, 3]])
    with pytest.raises(DataError, match=r"\[11\]"):
        ds.encode_prediction(np.array([[0, 11]]))


def test_camvid_colours_are_the_segnet_palette(camvid):
    ds = CamVid(str(camvid), "val")
    assert [list(c) for c in CLASS_COLORS] == OFFICIAL_COLORS
    assert ds.color_palette().tolist() == OFFICIAL_COLORS
    picture = ds.encode_color(np.array([[0, 3, 4, 10, 255]]))
    assert picture.mode == "RGB"
    assert np.asarray(picture)[0].tolist() == [[128, 128, 128], [128, 64, 128], [60, 40, 222], [0, 128, 192], [0, 0, 0]]


def test_camvid_datamodule_class_counts_match_a_direct_count(camvid):
    train, val = CamVid(str(camvid), "train"), CamVid(str(camvid), "val")
    dm = SegmentationDataModule(
        train=train, val=val, crop_size=(32, 32), batch_size=2, num_workers=0, stats_cache_dir="", seed=0
    )
    assert dm.num_classes == 11 and dm.class_names == list(OFFICIAL_NAMES) and dm.ignore_index == 255
    masks = [_raw(p) for p in sorted((camvid / "trainannot").glob("*.png"))]
    expected = np.array([[(m == c).sum() for c in range(11)] for m in masks], dtype=np.int64)
    counts = dm.class_pixel_counts
    assert counts.shape == (3, 11) and counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == sum((m != 11).sum() for m in masks)  # void is not counted
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (2, 3, 32, 32) and tuple(batch["mask"].shape) == (2, 32, 32)
    labels = set(np.unique(batch["mask"].numpy()).tolist())
    assert labels <= set(range(11)) | {255}
    val_batch = next(iter(dm.val_dataloader()))
    assert tuple(val_batch["mask"].shape[-2:]) == (36, 48)


def test_camvid_builds_from_class_path(camvid):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--data", type=SegmentationDataset)
    config = parser.parse_object(
        {"data": {"class_path": "tailseg.data.CamVid", "init_args": {"root": str(camvid), "split": "val"}}}
    )
    ds = parser.instantiate_classes(config).data
    assert isinstance(ds, CamVid) and len(ds) == 3 and ds.split == "val"


# --- videos: groups, joined splits, selection ---------------------------------------------------------------


def _add_video(root, split: str, video: str, frames: int) -> None:
    """Copy the first image and label map of `split` as `frames` frames of another video."""
    for frame in range(frames):
        for folder in (split, f"{split}annot"):
            shutil.copy(root / folder / "0001TP_000000.png", root / folder / f"{video}_{frame:06d}.png")


def test_camvid_groups_are_the_videos_and_splits_join(camvid):
    assert [CamVid(str(camvid), "train").image_group(i) for i in range(3)] == ["0001TP"] * 3
    assert CamVid(str(camvid), "val").image_group(0) == "0016E5"
    both = CamVid(str(camvid), "train+val")
    assert [both.prediction_name(i) for i in range(len(both))] == [
        "0001TP_000000", "0001TP_000030", "0001TP_000060", "0016E5_000000", "0016E5_000030", "0016E5_000060"
    ]  # fmt: skip
    assert [p.parent.name for p in both.mask_paths] == ["trainannot"] * 3 + ["valannot"] * 3
    assert both.cache_key() != CamVid(str(camvid), "train").cache_key()
    assert SegmentationDataset.image_group(both, 0) is None  # data sets without groups
    for bad in ("train+train", "train+validation", ""):
        with pytest.raises(DataError, match=re.escape(f"or several joined by '+', got {bad!r}")):
            CamVid(str(camvid), bad)


def test_camvid_selects_videos_and_names_unknown_ones(camvid):
    _add_video(camvid, "train", "0006R0", 2)
    assert len(CamVid(str(camvid), "train")) == 5
    held_out = CamVid(str(camvid), "train", videos=["0006R0"])
    assert [held_out.prediction_name(i) for i in range(2)] == ["0006R0_000000", "0006R0_000001"]
    rest = CamVid(str(camvid), "train+val", exclude_videos=["0006R0"])
    assert [rest.image_group(i) for i in range(len(rest))] == ["0001TP"] * 3 + ["0016E5"] * 3
    assert len(CamVid(str(camvid), "train+val", videos=["0001TP", "0006R0"], exclude_videos=["0001TP"])) == 2
    parsed = CamVid(str(camvid), "train+val", exclude_videos=[1600000.0])  # "0016E5" as a YAML parser reads it
    assert [parsed.image_group(i) for i in range(len(parsed))] == ["0001TP"] * 3 + ["0006R0"] * 2
    message = "CamVid: videos ['0006R0', 'Seq05VD'] are not videos of split 'val', which holds ['0016E5']"
    with pytest.raises(DataError, match=re.escape(message)):
        CamVid(str(camvid), "val", videos=["0016E5", "0006R0", "Seq05VD"])
    with pytest.raises(DataError, match=re.escape("exclude_videos ['0016E5'] are not videos of split 'train'")):
        CamVid(str(camvid), "train", exclude_videos=["0016E5"])
    with pytest.raises(DataError, match="leave no image of 'val'"):
        CamVid(str(camvid), "val", exclude_videos=["0016E5"])


def test_camvid_group_intervals_need_two_videos(camvid):
    from tailseg.callbacks.report import ReportWriter

    ReportWriter.check_groups(CamVid(str(camvid), "train+val"))  # 2 videos: a group interval can be drawn
    with pytest.raises(ValueError, match=re.escape("all images of the evaluated set (CamVid, 3 images) are in one "
                                                   "group ('0016E5'); a group interval needs at least 2")):  # fmt: skip
        ReportWriter.check_groups(CamVid(str(camvid), "val"))
