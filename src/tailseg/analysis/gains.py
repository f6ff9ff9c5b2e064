"""Per-class gain of a method over a reference against the class's pixel share (LMP paper, Fig. 3).

    tailseg compare RUNS_DIR [--reference base] --figure gains.png    # the figure of every method found

The gain of a class is the method's mean IoU minus the reference's mean IoU (IoU points, means over
each method's runs). The x axis is the class's share of the labelled training pixels, on a log axis:
rare classes on the left. `worst_k_table` turns the LMP paper's argument (§5.2, "one has to improve the
worst 7 categories by 5 % each") into a table for the methods compared.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tailseg.analysis.aggregate import (
    check_methods,
    column_std,
    default_reference,
    iou_by_run,
    mean_iou,
    methods,
    pixel_frequency,
)
from tailseg.metrics import worst_k_to_match

GAIN_COLORS = {True: "tab:green", False: "tab:red"}


def gain_table(per_class: pd.DataFrame, method: str, reference: str | None = None) -> pd.DataFrame:
    """Per-class gain of `method` over `reference` (default: "base" or the first method).

    Returns:
        Index class (rarest first; classes without a known pixel share last), columns `pixel_frequency`,
        `reference` and `method` (mean IoU % over each one's runs), `gain` (method − reference) and
        `gain_std` (sample std over the method's runs of their gain over the reference's mean; NaN with one
        run).
    """
    reference = default_reference(per_class, reference)
    check_methods(per_class, method)
    mean = mean_iou(per_class)
    runs = iou_by_run(per_class, method).to_numpy() - mean[reference].to_numpy()[None, :]
    spread = column_std(runs)
    table = pd.DataFrame(
        {
            "pixel_frequency": pixel_frequency(per_class),
            "reference": mean[reference],
            "method": mean[method],
            "gain": mean[method] - mean[reference],
            "gain_std": spread,
        }
    )
    table.attrs.update(reference=reference, method=method)
    order = np.argsort(np.nan_to_num(table["pixel_frequency"].to_numpy(), nan=np.inf), kind="stable")
    return table.iloc[order]


def _gain_points(source, method: str, reference: str) -> pd.DataFrame:
    """Per class (rarest first): pixel_frequency, gain and its error bar below / above (`lower`, `upper`; 0
    without): from a `Comparison`, the paired Δ and its interval (std over seeds without one); from a
    per-class frame, `gain_table`'s gain and std."""
    from tailseg.analysis.comparison import Comparison

    if isinstance(source, Comparison):
        delta = source.deltas[method]
        gain = pd.Series(delta.per_class, index=source.classes)
        if delta.per_class_ci is None:
            lower = upper = pd.Series(delta.per_class_std, index=source.classes)
        else:
            lower = gain - pd.Series(delta.per_class_ci[0], index=source.classes)
            upper = pd.Series(delta.per_class_ci[1], index=source.classes) - gain
        table = pd.DataFrame({"pixel_frequency": source.pixel_frequency.reindex(source.classes), "gain": gain,
                              "lower": lower, "upper": upper})  # fmt: skip
        order = np.argsort(np.nan_to_num(table["pixel_frequency"].to_numpy(), nan=np.inf), kind="stable")
        return table.iloc[order]
    table = gain_table(source, method, reference)
    return table.assign(lower=table["gain_std"], upper=table["gain_std"])


#: The most series whose legend `gain_figure` puts inside the axes; more stand to the right of them.
LEGEND_INSIDE = 6


def gain_figure(
    per_class,
    method: str | list[str] | None = None,
    reference: str | None = None,
    ax: Axes | None = None,
    label_classes: bool = True,
) -> Figure:
    """Scatter of each class's gain over `reference` against its pixel share (log x axis), one series per
    method in `method` (a name or a list; default: every method but the reference), classes labelled (at the
    first method's points).

    `per_class` is a per-class frame (`load_per_class`; error bars: the std of the method's runs' gains) or a
    `Comparison` (`build_comparison`, whose reference is used; error bars: the paired 95% interval of Δ, else
    the std over seeds). Classes without a gain (no IoU in one of the two) or without a positive pixel share
    cannot be placed and are left out (listed in the axes' title). Each series is a `PathCollection` labelled
    "<method> − <reference>"; its offsets are (pixel share, gain). With more than `LEGEND_INSIDE` series the
    legend stands to the right of the axes (and a figure made here is wider), where it hides no point.
    """
    from tailseg.analysis.comparison import Comparison

    if isinstance(per_class, Comparison):
        reference, names = per_class.reference, per_class.methods
    else:
        reference, names = default_reference(per_class, reference), methods(per_class)
    if method is None:
        shown = [m for m in names if m != reference]
    else:
        shown = [method] if isinstance(method, str) else list(method)
        missing = [m for m in shown if m not in names]
        if missing:
            raise ValueError(f"methods {missing} are not among the runs' methods {names}")
    if not shown:
        raise ValueError(f"no method to compare with the reference {reference!r}")
    if ax is None:
        figure = Figure(figsize=(8.5 if len(shown) <= LEGEND_INSIDE else 11.0, 5.0), layout="constrained")
        ax = figure.add_subplot()
    markers = "os^Dv<>p"
    left_out: set[str] = set()
    for i, name in enumerate(shown):
        table = _gain_points(per_class, name, reference)
        ok = table["gain"].notna() & (table["pixel_frequency"] > 0)
        left_out |= set(table.index[~ok])
        table = table[ok]
        x, y = table["pixel_frequency"].to_numpy(), table["gain"].to_numpy()
        colors = [GAIN_COLORS[bool(v >= 0)] for v in y] if len(shown) == 1 else f"C{i}"
        if table["lower"].notna().any():
            bars = np.vstack([table["lower"].fillna(0).to_numpy(), table["upper"].fillna(0).to_numpy()])
            ax.errorbar(x, y, yerr=bars, fmt="none", ecolor="0.6", lw=1)
        ax.scatter(x, y, c=colors, marker=markers[i % len(markers)], s=36, zorder=3, label=f"{name} − {reference}")
        if label_classes and i == 0:  # the classes' names once, at the first method's points
            for cls, xi, yi in zip(table.index, x, y, strict=True):
                ax.annotate(cls, (xi, yi), xytext=(3, 4), textcoords="offset points", fontsize=7, rotation=35)
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("share of labelled training pixels (log scale)")
    ax.set_ylabel(f"IoU gain over {reference} (points)")
    title = f"Per-class gain over {reference}"
    if left_out:
        title += f"\n(not shown: {', '.join(sorted(left_out))})"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if len(shown) > LEGEND_INSIDE:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    elif len(shown) > 1:
        ax.legend(fontsize=8)
    return ax.figure


def worst_k_table(per_class: pd.DataFrame, reference: str | None = None, steps=(3.0, 5.0)) -> pd.DataFrame:
    """How many of the reference's worst classes must each gain `step` points to match each method's mIoU.

    Per method (other than the reference): `miou` (mean over its runs of each run's mIoU), `reference_miou`
    (mIoU of the reference's mean per-class IoU, the IoU that is raised) and for each step the column
    `k@<step>` = `worst_k_to_match(reference per-class mean, miou, step)`, out of `classes` classes with an
    IoU (0 when the reference already matches; missing when out of reach).
    """
    reference = default_reference(per_class, reference)
    base = mean_iou(per_class)[reference].to_numpy()
    rows = []
    for method in methods(per_class):
        if method == reference:
            continue
        runs = iou_by_run(per_class, method).to_numpy()
        with np.errstate(all="ignore"):
            miou = float(np.nanmean(np.nanmean(runs, axis=1)))
        row = {"method": method, "miou": miou, "reference_miou": float(np.nanmean(base)),
               "classes": int((~np.isnan(base)).sum())}  # fmt: skip
        for step in steps:
            try:
                k = worst_k_to_match(base, miou, step) if math.isfinite(miou) else None
            except ValueError:
                k = None
            row[f"k@{step:g}"] = k
        rows.append(row)
    table = pd.DataFrame(rows, columns=["method", "miou", "reference_miou", "classes", *[f"k@{s:g}" for s in steps]])
    for step in steps:
        table[f"k@{step:g}"] = table[f"k@{step:g}"].astype("Int64")
    table.attrs["reference"] = reference
    return table.set_index("method")
