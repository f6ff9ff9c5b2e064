"""Cityscapes, PASCAL VOC and ADE20K read from tiny copies of their official layouts."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, labels, trainId2label
from PIL import Image

from fixtures import write_ade20k, write_cityscapes, write_voc
from tailseg.data import DataError, SegmentationDataset
from tailseg.data.ade20k import ADE20K
from tailseg.data.cityscapes import Cityscapes, label_to_train_table
from tailseg.data.voc import PascalVOC, palette, voc_colormap

# ------------------------------------------------------------------------------------------------ Cityscapes

# The expected train id of every label id drawn by write_cityscapes.
CITYSCAPES_EXPECTED = {0: 255, 1: 255, 4: 255, 7: 0, 8: 1, 11: 2, 21: 8, 23: 10, 24: 11, 26: 13, 33: 18}


def _cs_mask_path(root, split, stem, kind="labelIds"):
    return root / "gtFine" / split / stem.split("_")[0] / f"{stem}_gtFine_{kind}.png"


def test_cityscapes_table_is_the_official_one():
    table = label_to_train_table()
    assert table.shape == (256,)
    for label_id, train_id in {7: 0, 8: 1, 26: 13, 0: 255, 33: 18, 4: 255, 24: 11, 29: 255}.items():
        assert table[label_id] == train_id
    for label in labels:
        if label.id >= 0:
            assert table[label.id] == (label.trainId if 0 <= label.trainId < 255 else 255), label.name
    assert (table[34:] == -1).all()  # not label ids: rejected when read
    assert label_to_train_table(ignore_index=250)[0] == 250 and label_to_train_table(250)[7] == 0


def test_cityscapes_names_colours_and_label_ids(tmp_path):
    ds = Cityscapes(str(write_cityscapes(tmp_path, splits=("val",), images_per_split=1)), "val")
    assert ds.num_classes == 19
    assert ds.class_names == tuple(trainId2label[t].name for t in range(19))
    assert ds.class_names[:3] == ("road", "sidewalk", "building") and ds.class_names[-1] == "bicycle"
    assert ds.class_colors[0] == (128, 64, 128) and ds.class_colors[13] == (0, 0, 142)
    assert ds.label_ids == (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
    assert all(id2label[ds.label_ids[t]].trainId == t for t in range(19))


def test_cityscapes_label_ids_decode_to_train_ids(tmp_path):
    root = write_cityscapes(tmp_path, images_per_split=2)
    ds = Cityscapes(str(root), "train")
    assert len(ds) == 2
    assert [p.name for p in ds.mask_paths] == ["aachen_000000_000019_gtFine_labelIds.png",
                                               "bochum_000001_000019_gtFine_labelIds.png"]  # fmt: skip
    for i in range(2):
        raw = np.asarray(Image.open(ds.mask_paths[i]))
        assert set(np.unique(raw).tolist()) <= set(CITYSCAPES_EXPECTED)
        image, mask = ds.load(i)
        assert image.shape == (64, 128, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 128) and mask.dtype == np.uint8
        expected = np.vectorize(CITYSCAPES_EXPECTED.get)(raw)
        np.testing.assert_array_equal(mask, expected)
        assert {0, 2, 10, 13, 255} <= set(np.unique(mask).tolist())  # road, building, sky, car, void
    custom = Cityscapes(str(root), "train", ignore_index=250)
    assert (custom.load_mask(0)[np.asarray(Image.open(ds.mask_paths[0])) == 0] == 250).all()


def test_cityscapes_prefers_train_ids_files(tmp_path):
    root = write_cityscapes(tmp_path, splits=("train",), images_per_split=2, train_ids=True)
    ds = Cityscapes(str(root), "train")
    assert all(p.name.endswith("_gtFine_labelTrainIds.png") for p in ds.mask_paths)
    by_label_ids = Cityscapes(str(root), "train", prefer_train_ids=False)
    assert all(p.name.endswith("_gtFine_labelIds.png") for p in by_label_ids.mask_paths)
    np.testing.assert_array_equal(ds.load_mask(1), by_label_ids.load_mask(1))  # both files agree
    # A trainIds file that differs from its labelIds file shows which one is read.
    Image.fromarray(np.full((64, 128), 5, np.uint8)).save(ds.mask_paths[0])
    assert (ds.load_mask(0) == 5).all()
    assert not (by_label_ids.load_mask(0) == 5).all()
    assert ds.cache_key() != by_label_ids.cache_key()
    # Where only some trainIds files exist, each sample uses what it has.
    ds.mask_paths[1].unlink()
    mixed = Cityscapes(str(root), "train")
    assert [p.name.split("_gtFine_")[1] for p in mixed.mask_paths] == ["labelTrainIds.png", "labelIds.png"]


def test_cityscapes_train_to_label_ids_round_trip(tmp_path):
    ds = Cityscapes(str(write_cityscapes(tmp_path, splits=("val",), images_per_split=1)), "val")
    pred = np.array([[0, 1, 13, 18], [255, 2, 10, 11]])
    label_map = ds.train_to_label_ids(pred)
    assert label_map.dtype == np.uint8
    np.testing.assert_array_equal(label_map, [[7, 8, 26, 33], [0, 11, 23, 24]])
    np.testing.assert_array_equal(ds.label_to_train_ids(label_map), pred)
    every = np.arange(19).reshape(1, 19)
    np.testing.assert_array_equal(ds.label_to_train_ids(ds.train_to_label_ids(every)), every)
    with pytest.raises(DataError, match=r"\[19\]"):
        ds.train_to_label_ids(np.array([[0, 19]]))
    with pytest.raises(DataError, match=r"\[34\]"):
        ds.label_to_train_ids(np.array([[7, 34]]))


def test_cityscapes_order_and_prediction_name(tmp_path):
    root = write_cityscapes(tmp_path, splits=("test",), images_per_split=4)
    ds = Cityscapes(str(root), "test")
    assert [ds.prediction_name(i) for i in range(4)] == [
        "aachen_000000_000019", "aachen_000003_000019", "bochum_000001_000019", "bremen_000002_000019",
    ]  # fmt: skip
    assert ds.sample_name(0) == str(root / "leftImg8bit" / "test" / "aachen" / "aachen_000000_000019_leftImg8bit.png")
    assert ds.cache_key() == Cityscapes(str(root), "test").cache_key()
    assert ds[2]["name"].endswith("bochum_000001_000019_leftImg8bit.png")


def test_cityscapes_coarse_train_extra(tmp_path):
    root = write_cityscapes(tmp_path, splits=("train_extra",), images_per_split=1, annotations="gtCoarse")
    ds = Cityscapes(str(root), "train_extra", annotations="gtCoarse")
    assert ds.mask_paths[0].name == "aachen_000000_000019_gtCoarse_labelIds.png"
    assert ds.load(0)[1].shape == (64, 128)
    with pytest.raises(DataError, match="split must be one of"):
        Cityscapes(str(root), "train_extra")


@pytest.mark.parametrize(
    ("kind", "value"),
    [("labelIds", 200), ("labelIds", 34), ("labelTrainIds", 19)],
    ids=["label-ids-200", "label-ids-34-past-last", "train-ids-19-past-last"],
)
def test_cityscapes_bad_mask_value_names_the_file(tmp_path, kind, value):
    root = write_cityscapes(tmp_path, splits=("train",), images_per_split=1, train_ids=kind == "labelTrainIds")
    path = _cs_mask_path(root, "train", "aachen_000000_000019", kind)
    mask = np.asarray(Image.open(path)).copy()
    mask[3, 4] = value
    Image.fromarray(mask).save(path)
    ds = Cityscapes(str(root), "train")
    with pytest.raises(DataError, match=re.escape(str(path)) + rf".*\[{value}\]"):
        ds.load_mask(0)
    with pytest.raises(DataError, match=re.escape(str(path))):
        ds[0]


def test_cityscapes_layout_errors_name_the_first_missing_path(tmp_path):
    missing_root = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(f"{missing_root} not found")) as err:
        Cityscapes(str(missing_root), "train")
    assert "leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png" in str(err.value)
    assert "gtFine/train/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png" in str(err.value)

    root = write_cityscapes(tmp_path / "cs", splits=("train",), images_per_split=2)
    with pytest.raises(DataError, match=re.escape(f"{root / 'leftImg8bit' / 'val'} not found")):
        Cityscapes(str(root), "val")
    with pytest.raises(DataError, match="split must be one of"):
        Cityscapes(str(root), "validation")

    mask = _cs_mask_path(root, "train", "bochum_000001_000019")
    mask.unlink()
    with pytest.raises(DataError, match=re.escape(f"{mask} not found (the label map of ")) as err:
        Cityscapes(str(root), "train")
    assert "bochum_000001_000019_leftImg8bit.png" in str(err.value) and "Expected layout" in str(err.value)

    shutil.rmtree(root / "gtFine" / "train")
    with pytest.raises(DataError, match=re.escape(f"{root / 'gtFine' / 'train'} not found")):
        Cityscapes(str(root), "train")


# ------------------------------------------------------------------------------------------------ PASCAL VOC


def test_voc_palette_is_the_standard_one():
    colors = voc_colormap()
    assert colors.shape == (256, 3) and colors.dtype == np.uint8
    assert colors[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert colors[15].tolist() == [192, 128, 128] and colors[20].tolist() == [0, 64, 128]
    assert colors[255].tolist() == [224, 224, 192]
    assert len(palette()) == 768 and palette()[3:6] == [128, 0, 0]


def test_voc_reads_palette_png_as_class_indices(tmp_path):
    root = write_voc(tmp_path / "VOC2012")
    ds = PascalVOC(str(root), "train")
    assert ds.num_classes == 21 and ds.class_names[0] == "background" and ds.class_names[20] == "tvmonitor"
    assert ds.class_colors[1] == (128, 0, 0) and ds.palette() == palette()
    assert ds.ids == ["2007_000000", "2007_000001"]
    mask = np.zeros((48, 64), np.uint8)
    mask[:, 10:20], mask[:, 20:30], mask[:, 30:32], mask[0, 0] = 15, 20, 255, 1
    label = Image.fromarray(mask)
    label.putpalette(palette())
    label.save(ds.mask_paths[1])
    assert Image.open(ds.mask_paths[1]).mode == "P"
    image, loaded = ds.load(1)
    assert image.shape == (48, 64, 3) and loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, mask)  # indices, not the colours (192,128,128) of the palette
    assert set(np.unique(ds.load_mask(0)).tolist()) in ({0, c, 255} for c in (1, 7, 12, 15, 20))
    assert (PascalVOC(str(root), "train", ignore_index=254).load_mask(1)[:, 30:32] == 254).all()


def test_voc_splits_and_trainval(tmp_path):
    root = write_voc(tmp_path / "VOC2012", images_per_split=2)
    assert PascalVOC(str(root), "val").ids == ["2008_000000", "2008_000001"]
    assert PascalVOC(str(root), "trainval").ids == ["2007_000000", "2007_000001", "2008_000000", "2008_000001"]
    assert PascalVOC(str(root), "val").cache_key() != PascalVOC(str(root), "train").cache_key()
    with pytest.raises(DataError, match="split must be one of"):
        PascalVOC(str(root), "test")


def test_voc_augmented_list_and_masks(tmp_path):
    root = write_voc(tmp_path / "VOC2012", augmented=True, images_per_split=2, extra_aug_images=3)
    ds = PascalVOC(str(root), "train", augmented=True)
    assert ds.list_file == root / "ImageSets" / "Segmentation" / "train_aug.txt"
    assert ds.ids == ["2007_000000", "2007_000001", "2011_000000", "2011_000001", "2011_000002"]
    assert all(p.parent.name == "SegmentationClassAug" for p in ds.mask_paths)
    assert Image.open(ds.mask_paths[2]).mode == "L"
    mask = ds.load_mask(2)
    assert 255 in mask and 0 in mask and len(np.unique(mask)) == 3
    # Same labels in both conventions for the VOC images.
    np.testing.assert_array_equal(ds.load_mask(0), PascalVOC(str(root), "train").load_mask(0))
    # val with augmented=True: val.txt, masks from SegmentationClassAug.
    val = PascalVOC(str(root), "val", augmented=True)
    assert val.list_file.name == "val.txt" and val.mask_paths[0].parent.name == "SegmentationClassAug"
    # SBD-only images have no SegmentationClass mask: the first one is named.
    with pytest.raises(DataError, match=re.escape(f"{root / 'SegmentationClass' / '2011_000000.png'} not found")):
        PascalVOC(str(root), "train", list_file="ImageSets/Segmentation/train_aug.txt")


def test_voc_list_file_with_paths(tmp_path):
    root = write_voc(tmp_path / "VOC2012", augmented=True, extra_aug_images=1)
    lst = tmp_path / "my_train_aug.txt"
    lst.write_text("/JPEGImages/2011_000000.jpg /SegmentationClassAug/2011_000000.png\n\n"
                   "/JPEGImages/2007_000001.jpg /SegmentationClassAug/2007_000001.png\n")  # fmt: skip
    ds = PascalVOC(str(root), "train", augmented=True, list_file=str(lst))
    assert ds.ids == ["2007_000001", "2011_000000"] and ds.list_file == lst


def test_voc_bad_value_names_the_file(tmp_path):
    root = write_voc(tmp_path / "VOC2012", splits=("train",), images_per_split=1)
    ds = PascalVOC(str(root), "train")
    mask = np.asarray(Image.open(ds.mask_paths[0])).copy()
    mask[5, 5] = 21
    label = Image.fromarray(mask)
    label.putpalette(palette())
    label.save(ds.mask_paths[0])
    with pytest.raises(DataError, match=re.escape(str(ds.mask_paths[0])) + r".*\[21\]"):
        ds.load_mask(0)


def test_voc_layout_errors(tmp_path):
    root = write_voc(tmp_path / "VOC2012", augmented=True)
    aug_list = root / "ImageSets" / "Segmentation" / "train_aug.txt"
    aug_list.unlink()
    with pytest.raises(DataError, match=re.escape(f"{aug_list} not found (the image list)")) as err:
        PascalVOC(str(root), "train", augmented=True)
    assert "SegmentationClassAug/<id>.png" in str(err.value) and "JPEGImages/<id>.jpg" in str(err.value)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'VOCdevkit'} not found")):
        PascalVOC(str(tmp_path / "VOCdevkit"), "train")
    (root / "JPEGImages" / "2008_000001.jpg").unlink()
    with pytest.raises(DataError, match=re.escape(f"{root / 'JPEGImages' / '2008_000001.jpg'} not found (listed in")):
        PascalVOC(str(root), "val")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(DataError, match="holds no ids"):
        PascalVOC(str(root), "val")


# ------------------------------------------------------------------------------------------------ ADE20K


def test_ade20k_names():
    from tailseg.data.ade20k import CLASS_NAMES

    assert len(CLASS_NAMES) == 150 == len(set(CLASS_NAMES))
    assert CLASS_NAMES[:5] == ("wall", "building", "sky", "floor", "tree")
    assert CLASS_NAMES[12] == "person" and CLASS_NAMES[148] == "clock" and CLASS_NAMES[149] == "flag"


def test_ade20k_label_shift_and_ignore(tmp_path):
    root = write_ade20k(tmp_path / "ADEChallengeData2016")
    ds = ADE20K(str(root), "training")
    assert len(ds) == 2 and ds.num_classes == 150 and ds.class_names[0] == "wall"
    assert [p.name for p in ds.image_paths] == ["ADE_train_00000001.jpg", "ADE_train_00000002.jpg"]
    raw = np.asarray(Image.open(ds.mask_paths[0]))
    assert set(np.unique(raw).tolist()) == {0, 1, 3, 4, 13, 150}
    image, mask = ds.load(0)
    assert image.shape == (48, 64, 3) and mask.dtype == np.uint8
    assert (mask[raw == 0] == 255).all() and (mask[raw == 1] == 0).all() and (mask[raw == 150] == 149).all()
    np.testing.assert_array_equal(mask, np.where(raw == 0, 255, raw.astype(int) - 1))
    annotation = np.array([[0, 1, 2, 150]] * 48, np.uint8).repeat(16, axis=1)
    Image.fromarray(annotation).save(ds.mask_paths[1])
    np.testing.assert_array_equal(ds.load_mask(1)[0, ::16], [255, 0, 1, 149])
    assert (ADE20K(str(root), "training", ignore_index=200).load_mask(1)[:, :16] == 200).all()


def test_ade20k_split_aliases(tmp_path):
    root = write_ade20k(tmp_path / "ADEChallengeData2016", images_per_split=1)
    train, val = ADE20K(str(root), "train"), ADE20K(str(root), "val")
    assert train.split == "training" and val.split == "validation"
    assert train.image_paths == ADE20K(str(root), "training").image_paths
    assert val.image_paths[0].name == "ADE_val_00000001.jpg"
    with pytest.raises(DataError, match="split must be one of"):
        ADE20K(str(root), "test")


def test_ade20k_bad_value_and_missing_annotation(tmp_path):
    root = write_ade20k(tmp_path / "ADEChallengeData2016", splits=("validation",), images_per_split=2)
    ds = ADE20K(str(root), "validation")
    Image.fromarray(np.full((48, 64), 151, np.uint8)).save(ds.mask_paths[0])
    with pytest.raises(DataError, match=re.escape(str(ds.mask_paths[0])) + r".*\[151\]"):
        ds.load_mask(0)
    ds.mask_paths[1].unlink()
    with pytest.raises(DataError, match=re.escape(f"{ds.mask_paths[1]} not found (the label map of")) as err:
        ADE20K(str(root), "val")
    assert "annotations/validation/<name>.png" in str(err.value)
    with pytest.raises(DataError, match=re.escape(f"{root / 'images' / 'training'} not found")):
        ADE20K(str(root), "train")


# ------------------------------------------------------------------------------------------------ configuration


def test_data_sets_build_from_class_path(tmp_path):
    from jsonargparse import ArgumentParser

    roots = {
        "tailseg.data.cityscapes.Cityscapes": write_cityscapes(tmp_path / "cs", splits=("val",), images_per_split=1),
        "tailseg.data.voc.PascalVOC": write_voc(tmp_path / "VOC2012", splits=("val",), images_per_split=1),
        "tailseg.data.ade20k.ADE20K": write_ade20k(tmp_path / "ade", splits=("validation",), images_per_split=1),
    }
    parser = ArgumentParser()
    parser.add_argument("--data", type=SegmentationDataset)
    for class_path, root in roots.items():
        config = parser.parse_object(
            {"data": {"class_path": class_path, "init_args": {"root": str(root), "split": "val"}}}
        )
        ds = parser.instantiate_classes(config).data
        assert type(ds).__name__ == class_path.rsplit(".", 1)[1] and len(ds) == 1
        assert ds[0]["mask"].shape == ds[0]["image"].shape[:2]
