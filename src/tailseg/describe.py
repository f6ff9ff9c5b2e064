"""`tailseg describe --config X.yaml`: class pixel frequencies and image counts of a configured data set."""

from __future__ import annotations

from typing import Any

import numpy as np
from jsonargparse import ActionConfigFile, ArgumentParser

from tailseg.data import SegmentationDataModule, class_pixel_counts


def describe_table(counts: np.ndarray, class_names, title: str) -> str:
    """A text table: per class, the share of labelled pixels and the images that contain it, rarest last."""
    totals = counts.sum(axis=0).astype(np.float64)
    share = totals / max(totals.sum(), 1.0)
    images = (counts > 0).sum(axis=0)
    n = counts.shape[0]
    order = np.argsort(-share, kind="stable")
    width = max(len(name) for name in class_names)
    lines = [f"{title}: {n} images, {int(totals.sum())} labelled pixels",
             f"{'class':<{width}}  {'pixels %':>8}  {'images':>7}  {'images %':>8}"]  # fmt: skip
    for c in order:
        lines.append(
            f"{class_names[c]:<{width}}  {100 * share[c]:8.3f}  {images[c]:7d}  {100 * images[c] / max(n, 1):8.1f}"
        )
    top6 = share[order[:6]].sum()
    lines.append(f"6 most frequent classes: {100 * top6:.1f}% of the labelled pixels")
    return "\n".join(lines)


def describe_main(argv: list[str], short_errors: bool = False) -> None:
    """Run `tailseg describe ARGV`.

    Args:
        argv: The command line after `describe`.
        short_errors: Report a data set that cannot be built or read (a missing root, a bad file) as one line,
            `tailseg describe: error: ...`, with exit status 2, instead of the traceback.
    """
    try:
        _describe(argv)
    except ValueError as error:  # DataError and the classes' own checks
        if not short_errors:
            raise
        from tailseg.cli import fail, short_error

        fail("tailseg describe", short_error(str(error)))


def _describe(argv: list[str]) -> None:
    parser = ArgumentParser(prog="tailseg describe", description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(SegmentationDataModule, "data")
    for key in (
        "model",
        "trainer",
        "seed_everything",
        "ckpt_path",
        "report_path",
        "ci_resamples",
        "ci_seed",
        "ci_unit",
    ):
        parser.add_argument(f"--{key}", type=Any, default=None)  # other sections of a run config
    cfg = parser.parse_args(argv)
    data: SegmentationDataModule = parser.instantiate(cfg).data
    for split, dataset in (("train", data.train_set), ("val", data.val_set), ("test", data.test_set)):
        if dataset is None:
            continue
        dataset.prepare(max(1, data.num_workers))
        counts = (
            data.class_pixel_counts if split == "train" else class_pixel_counts(dataset, cache_dir=data.stats_cache_dir)
        )
        print(describe_table(counts, dataset.class_names, f"{split} ({type(dataset).__name__})"))
        print()
