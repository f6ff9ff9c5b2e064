"""Test set-up: CPU only, no network, W&B disabled, a private statistics cache, tiny models."""

from __future__ import annotations

import os

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# A tiny stand-in for DeepLabV3+'s encoder and a tiny synthetic data set, for CLI runs.
TINY_ENCODER = "tu-mobilenetv3_small_050"


def tiny_synthetic_args(train: int = 8, val: int = 4, height: int = 64, width: int = 128) -> list[str]:
    """CLI overrides that shrink a synthetic-data config to seconds of CPU time."""
    args = ["--model.encoder_name", TINY_ENCODER, "--data.crop_size", "[64,64]", "--data.batch_size", "2",
            "--data.eval_batch_size", "2", "--data.num_workers", "0"]  # fmt: skip
    for split, n in (("train", train), ("val", val)):
        args += [f"--data.{split}.init_args.num_images", str(n), f"--data.{split}.init_args.height", str(height),
                 f"--data.{split}.init_args.width", str(width)]  # fmt: skip
    return args


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TAILSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def dataset_roots(tmp_path_factory) -> dict:
    """Tiny Cityscapes, PASCAL VOC (with the SBD-augmented list), ADE20K and CamVid folders, written once per
    session: {"cityscapes": root, "voc": root, "ade20k": root, "camvid": root}."""
    from fixtures import write_ade20k, write_camvid, write_cityscapes, write_voc

    base = tmp_path_factory.mktemp("datasets")
    return {
        "cityscapes": write_cityscapes(base / "cityscapes", splits=("train", "val"), images_per_split=3),
        "voc": write_voc(base / "voc", splits=("train", "val"), images_per_split=3, augmented=True),
        "ade20k": write_ade20k(base / "ade20k", splits=("training", "validation"), images_per_split=3),
        "camvid": write_camvid(base / "camvid", splits=("train", "val"), images_per_split=3),
    }


@pytest.fixture(scope="module")
def one_thread():
    """The CLI tests run on one thread: much faster on a shared, busy CPU, and the same in every run compared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def kept_environ():
    """`os.environ` as it was before the test: a run in this process sets variables (Lightning's `PL_GLOBAL_SEED`)
    that processes started by later tests would inherit."""
    saved = dict(os.environ)
    os.environ.pop("PL_GLOBAL_SEED", None)  # also left by runs in module-scoped fixtures, set up before this one
    yield
    os.environ.clear()
    os.environ.update(saved)
