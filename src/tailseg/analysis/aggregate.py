"""Per-method views of the tidy per-class frame (`load_per_class`): seeds averaged, classes in id order.

Several runs of one method are its seeds: a class's IoU is the mean over the runs that have one, with
the sample standard deviation (ddof 1, NaN with a single run) as its spread - as in `tailseg compare`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SORTS = ("frequency", "reference", "class")


def methods(per_class: pd.DataFrame) -> list[str]:
    """The methods in the order they first appear."""
    return list(dict.fromkeys(per_class["method"]))


def classes(per_class: pd.DataFrame) -> list[str]:
    """The classes in the order they first appear (their id order for frames from `load_per_class`)."""
    return list(dict.fromkeys(per_class["class"]))


def default_reference(per_class: pd.DataFrame, reference: str | None = None) -> str:
    """`reference` (checked), else "base" when present, else the first method."""
    found = methods(per_class)
    if not found:
        raise ValueError("no runs with a per-class IoU")
    if reference is None:
        return "base" if "base" in found else found[0]
    if reference not in found:
        raise ValueError(f"reference method {reference!r} is none of the methods {found}")
    return reference


def check_methods(per_class: pd.DataFrame, wanted) -> list[str]:
    """`wanted` (a name or a list; None: all methods), checked against the frame."""
    found = methods(per_class)
    wanted = found if wanted is None else [wanted] if isinstance(wanted, str) else list(wanted)
    missing = [m for m in wanted if m not in found]
    if missing:
        raise ValueError(f"methods {missing} are not among the runs' methods {found}")
    return wanted


def iou_by_run(per_class: pd.DataFrame, method: str) -> pd.DataFrame:
    """IoU (%) of each run of `method`: index run, columns the classes (id order)."""
    rows = per_class[per_class["method"] == method]
    table = rows.pivot_table(index="run", columns="class", values="iou", aggfunc="first", dropna=False, sort=False)
    return table.reindex(columns=classes(per_class)).astype("float64")


def column_std(values: np.ndarray) -> np.ndarray:
    """Sample standard deviation (ddof 1) of each column over its non-NaN entries; NaN with fewer than 2."""
    values = np.asarray(values, dtype=np.float64)
    counts = (~np.isnan(values)).sum(axis=0)
    with np.errstate(all="ignore"):
        mean = np.nansum(values, axis=0) / np.maximum(counts, 1)
        squares = np.nansum((values - mean) ** 2, axis=0)
        return np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)), np.nan)


def _stat(per_class: pd.DataFrame, name: str) -> pd.DataFrame:
    columns = {}
    for method in methods(per_class):
        values = iou_by_run(per_class, method).to_numpy()
        with np.errstate(all="ignore"):
            counts = (~np.isnan(values)).sum(axis=0)
            if name == "mean":
                stat = np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan)
            elif name == "std":
                stat = column_std(values)
            else:
                stat = counts.astype(np.float64)
        columns[method] = stat
    return pd.DataFrame(columns, index=pd.Index(classes(per_class), name="class"))


def mean_iou(per_class: pd.DataFrame) -> pd.DataFrame:
    """Mean IoU (%) over each method's runs: index class (id order), one column per method."""
    return _stat(per_class, "mean")


def std_iou(per_class: pd.DataFrame) -> pd.DataFrame:
    """Sample standard deviation (ddof 1) of the IoU over each method's runs; NaN with fewer than 2 runs."""
    return _stat(per_class, "std")


def seed_counts(per_class: pd.DataFrame) -> dict[str, int]:
    """{method: number of runs}."""
    return {m: int(per_class.loc[per_class["method"] == m, "run"].nunique()) for m in methods(per_class)}


def pixel_frequency(per_class: pd.DataFrame) -> pd.Series:
    """Share of the labelled training pixels of each class (the first run that knows it; NaN otherwise)."""
    known = per_class.dropna(subset=["pixel_frequency"]).drop_duplicates("class")
    series = known.set_index("class")["pixel_frequency"].reindex(classes(per_class))
    series.index.name = "class"
    return series.astype("float64")


def class_order(per_class: pd.DataFrame, sort: str = "frequency", reference: str | None = None) -> list[str]:
    """Classes sorted by pixel frequency (rarest first), by the reference's mean IoU (lowest first) or in id
    order ("class"). Unknown values go last; ties keep the id order."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")
    names = classes(per_class)
    if sort == "class":
        return names
    if sort == "frequency":
        values = pixel_frequency(per_class).to_numpy()
    else:
        values = mean_iou(per_class)[default_reference(per_class, reference)].to_numpy()
    order = np.argsort(np.nan_to_num(values, nan=np.inf), kind="stable")
    return [names[i] for i in order]


def mean_std_text(mean: float, std: float, decimals: int = 2, signed: bool = False) -> str:
    """ "12.34 ± 0.56" ("12.34" without a std, "n/a" without a mean)."""
    if mean is None or pd.isna(mean):
        return "n/a"
    text = f"{mean:+.{decimals}f}" if signed else f"{mean:.{decimals}f}"
    return text if std is None or pd.isna(std) else f"{text} ± {std:.{decimals}f}"
