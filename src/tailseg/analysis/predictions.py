"""A model's predictions on a few fixed images: the confusion matrix and overlay pictures.

The model is a `SegmentationModel` or the path of one of its checkpoints; the data is a
`SegmentationDataModule` (its `val` set by default, seen through its evaluation transform), a
`SegmentationDataset` (normalised with the ImageNet statistics, the DataModule's default) or any data set
whose items are dicts with a normalised `image` tensor (3, H, W) and a `mask` (H, W). Images are predicted
one at a time with the model's `predict_logits` (its configured tiling), as in validation.

The confusion matrix is `tailseg.metrics.ClassIoU`'s (rows: truth, columns: prediction, void pixels left
out), row-normalised: row c holds where the pixels of class c went, summing to 1 (NaN for a class absent
from the truth of the images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tailseg.metrics import ClassIoU


@dataclass
class Prediction:
    """One predicted image: `image` uint8 (H, W, 3) for display, `mask` the truth and `prediction` the
    predicted train ids, both (H, W) int64."""

    index: int
    name: str
    image: np.ndarray
    mask: np.ndarray
    prediction: np.ndarray


def load_model(model):
    """`model` itself, or the `SegmentationModel` of a checkpoint path (on the CPU); in eval mode."""
    if isinstance(model, (str, Path)):
        from tailseg.model import SegmentationModel

        model = SegmentationModel.load_from_checkpoint(str(model), map_location="cpu", weights_only=False)
    return model.eval()


def eval_dataset(data, split: str = "val"):
    """The data set to predict: a DataModule's `<split>_set` through its evaluation transform, a bare
    `SegmentationDataset` through the default `EvalTransform`, or `data` itself."""
    from tailseg.data.datamodule import TransformedDataset
    from tailseg.data.transforms import EvalTransform

    subset = getattr(data, f"{split}_set", None)
    if subset is not None and hasattr(data, "eval_transform"):
        return TransformedDataset(subset, data.eval_transform)
    if callable(getattr(data, "load", None)) and callable(getattr(data, "sample_name", None)):
        return TransformedDataset(data, EvalTransform())
    return data


def _raw(dataset):
    """The untransformed `SegmentationDataset` behind an evaluation data set, if there is one."""
    inner = getattr(dataset, "dataset", None)
    return inner if callable(getattr(inner, "load_image", None)) else None


def _display_image(dataset, index: int, image: torch.Tensor) -> np.ndarray:
    raw = _raw(dataset)
    if raw is not None:
        picture = np.asarray(raw.load_image(index), dtype=np.uint8)
        if picture.shape[:2] == tuple(image.shape[-2:]):
            return picture
    array = image.detach().cpu().float().numpy().transpose(1, 2, 0)  # normalised: stretch to [0, 255]
    low, high = array.min(), array.max()
    return ((array - low) / max(high - low, 1e-8) * 255).round().astype(np.uint8)


def palette_for(data, num_classes: int) -> np.ndarray:
    """(C, 3) uint8 class colours: the data set's `color_palette()`, else the fixed pseudo-random palette."""
    from tailseg.data.base import pseudo_random_palette

    for candidate in (data, getattr(data, "val_set", None), _raw(data)):
        palette = getattr(candidate, "color_palette", None)
        if callable(palette):
            colors = np.asarray(palette(), dtype=np.uint8)
            if len(colors) >= num_classes:
                return colors[:num_classes]
    return pseudo_random_palette(num_classes)


@torch.no_grad()
def predict_images(model, data, indices: Sequence[int], split: str = "val") -> list[Prediction]:
    """Predict the images `indices` of `data` (see the module docs) with `model` (a model or a checkpoint)."""
    model = load_model(model)
    dataset = eval_dataset(data, split)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    predict = getattr(model, "predict_logits", model)
    out = []
    for index in indices:
        with torch.random.fork_rng(devices=[]):  # leaves the caller's random stream alone
            sample = dataset[int(index)]
        image = torch.as_tensor(sample["image"])
        logits = predict(image[None].to(device))
        prediction = logits.argmax(1)[0].cpu().numpy().astype(np.int64)
        name = sample.get("name", str(index))
        mask = np.asarray(torch.as_tensor(sample["mask"]).cpu(), dtype=np.int64)
        out.append(Prediction(int(index), str(name), _display_image(dataset, int(index), image), mask, prediction))
    return out


def confusion_counts(predictions: Sequence[Prediction], num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(C, C) pixel counts (rows: truth, columns: prediction) of `predictions`, summed by `ClassIoU`."""
    metric = ClassIoU(num_classes, ignore_index)
    for item in predictions:
        metric.update(torch.as_tensor(item.prediction), torch.as_tensor(item.mask))
    return metric.confusion.cpu().numpy()


def normalize_rows(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (NaN rows for classes without truth pixels)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, confusion / totals, np.nan)


def confusion_table(
    predictions: Sequence[Prediction], class_names: Sequence[str], ignore_index: int = 255, normalize: bool = True
) -> pd.DataFrame:
    """The confusion matrix of `predictions` as a DataFrame (index "truth", columns "prediction", class names),
    row-normalised unless `normalize` is False (then pixel counts)."""
    counts = confusion_counts(predictions, len(class_names), ignore_index)
    values = normalize_rows(counts) if normalize else counts
    return pd.DataFrame(
        values, index=pd.Index(list(class_names), name="truth"), columns=pd.Index(list(class_names), name="prediction")
    )


def _class_names(model, data) -> list[str]:
    for candidate in (model, data, getattr(data, "dataset", None)):
        names = getattr(candidate, "class_names", None)
        if names:
            return list(names)
    raise ValueError("cannot tell the class names: neither the model nor the data set has `class_names`")


def _ignore_index(model, data) -> int:
    for candidate in (model, data, getattr(data, "dataset", None)):
        value = getattr(candidate, "ignore_index", None)
        if value is not None:
            return int(value)
    return 255


def confusion_matrix(model, data, indices: Sequence[int], normalize: bool = True, split: str = "val") -> pd.DataFrame:
    """Row-normalised confusion matrix of `model` on the images `indices` of `data` (see `confusion_table`)."""
    model = load_model(model)
    predictions = predict_images(model, data, indices, split)
    return confusion_table(predictions, _class_names(model, data), _ignore_index(model, data), normalize)


def confusion_figure(table: pd.DataFrame, title: str | None = None, annotate_min: float = 0.1) -> Figure:
    """A heat map of a row-normalised confusion table (`confusion_matrix`); cells ≥ `annotate_min` and the
    diagonal are written out."""
    values = table.to_numpy(dtype=np.float64)
    size = max(4.5, 0.38 * len(table) + 2.5)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's pixels")
    ticks = np.arange(len(table))
    ax.set_xticks(ticks, table.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, table.index, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    for (r, c), value in np.ndenumerate(values):
        if not np.isnan(value) and (r == c or value >= annotate_min):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if value > 0.6 else "black")  # fmt: skip
    ax.set_title(title or "Confusion matrix (rows normalised)", fontsize=10)
    return figure


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colours of a label map; labels outside the palette (void) are black."""
    lut = np.zeros((max(int(labels.max(initial=0)), len(palette) - 1) + 1, 3), np.uint8)
    lut[: len(palette)] = palette
    return lut[np.clip(labels, 0, None)]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """`image` with the class colours of `labels` blended in (`alpha`); void pixels keep the image."""
    colors = colorize(labels, palette).astype(np.float64)
    blended = (1 - alpha) * image.astype(np.float64) + alpha * colors
    keep = (labels < 0) | (labels >= len(palette))
    blended[keep] = image[keep]
    return blended.round().astype(np.uint8)


def overlay_figure(
    model=None,
    data=None,
    indices: Sequence[int] | None = None,
    *,
    predictions: Sequence[Prediction] | None = None,
    class_names: Sequence[str] | None = None,
    palette: np.ndarray | None = None,
    alpha: float = 0.55,
    split: str = "val",
) -> Figure:
    """One row per image: the image, the truth and the prediction in class colours over it, and a legend of
    the classes shown. Give `model`, `data` and `indices`, or `predictions` from `predict_images` (with
    `class_names`)."""
    if predictions is None:
        if model is None or data is None or indices is None:
            raise ValueError("overlay_figure: give model, data and indices, or predictions")
        model = load_model(model)
        predictions = predict_images(model, data, indices, split)
        class_names = class_names or _class_names(model, data)
        palette = palette if palette is not None else palette_for(data, len(class_names))
    if class_names is None:
        raise ValueError("overlay_figure: class_names are needed with predictions")
    palette = palette if palette is not None else palette_for(None, len(class_names))
    rows = len(predictions)
    if rows == 0:
        raise ValueError("overlay_figure: no images")
    height, width = predictions[0].image.shape[:2]
    panel = 3.2
    figure = Figure(figsize=(3 * panel * max(1.0, width / height) ** 0.5 + 1.6, rows * panel * 0.75 + 0.6),
                    layout="constrained")  # fmt: skip
    axes = figure.subplots(rows, 3, squeeze=False)
    shown: set[int] = set()
    for row, item in zip(axes, predictions, strict=True):
        panels = (item.image, overlay(item.image, item.mask, palette, alpha),
                  overlay(item.image, item.prediction, palette, alpha))  # fmt: skip
        for ax, picture, title in zip(row, panels, ("image", "truth", "prediction"), strict=True):
            ax.imshow(picture)
            ax.set_title(f"{item.name}: {title}" if title == "image" else title, fontsize=8)
            ax.set_axis_off()
        for labels in (item.mask, item.prediction):
            shown |= {int(v) for v in np.unique(labels) if 0 <= v < len(class_names)}
    handles = [Patch(color=palette[c] / 255.0, label=class_names[c]) for c in sorted(shown)]
    figure.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False)
    return figure
