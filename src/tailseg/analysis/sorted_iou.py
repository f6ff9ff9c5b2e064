"""Per-class IoU sorted by the reference's IoU, with its bottom and top groups (TCE paper, Table 1).

The classes are ranked by the reference method's mean IoU, lowest first (the paper ranks by MCCE, the
same order for every model). The bottom and top groups are the ⌈25 %⌉ lowest and highest of the K
classes that have a reference IoU (`tailseg.metrics.fairness.class_count`; 5 of Cityscapes' 19), the
groups whose mean IoU Table 3 reports as "sorted 25 %".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tailseg.analysis.aggregate import (
    check_methods,
    class_order,
    default_reference,
    mean_iou,
    methods,
    pixel_frequency,
    seed_counts,
)
from tailseg.metrics.fairness import class_count

GROUP_COLORS = {"bottom": "tab:red", "top": "tab:blue"}


def sorted_iou_table(
    per_class: pd.DataFrame, reference: str | None = None, method=None, fraction: float = 0.25
) -> pd.DataFrame:
    """The per-class mean IoU (%) of each method, classes sorted by the reference's mean IoU (lowest first;
    classes without a reference IoU last).

    Returns:
        Index `rank` (1 = the reference's worst class), columns `class`, `pixel_frequency`, `bottom` / `top`
        (whether the class is among the ⌈fraction · K⌉ lowest / highest in the reference) and one column of
        mean IoU per method (the reference first). `attrs`: reference, fraction, group_size, seeds.
    """
    reference = default_reference(per_class, reference)
    shown = methods(per_class) if method is None else check_methods(per_class, method)
    shown = [reference] + [m for m in shown if m != reference]
    order = class_order(per_class, "reference", reference)
    mean = mean_iou(per_class).loc[order]
    ranked = mean[reference].notna().to_numpy()
    k = int(ranked.sum())
    n = class_count(fraction, k) if k else 0
    positions = np.flatnonzero(ranked)  # ranked classes come first in `order`
    bottom = np.zeros(len(order), dtype=bool)
    top = np.zeros(len(order), dtype=bool)
    bottom[positions[:n]] = True
    top[positions[k - n :] if n else []] = True
    table = pd.DataFrame(
        {"class": order, "pixel_frequency": pixel_frequency(per_class).loc[order].to_numpy(), "bottom": bottom,
         "top": top, **{m: mean[m].to_numpy() for m in shown}},
        index=pd.RangeIndex(1, len(order) + 1, name="rank"),
    )  # fmt: skip
    counts = seed_counts(per_class)
    table.attrs.update(reference=reference, fraction=fraction, group_size=n, seeds={m: counts[m] for m in shown})
    return table


def sorted_iou_figure(
    per_class: pd.DataFrame,
    reference: str | None = None,
    method=None,
    fraction: float = 0.25,
    ax: Axes | None = None,
) -> Figure:
    """Grouped bars of the per-class IoU of each method in the order of `sorted_iou_table`, with the bottom and
    top groups shaded. The bars of a method form a `BarContainer` labelled with the method's name."""
    table = sorted_iou_table(per_class, reference, method, fraction)
    shown = [c for c in table.columns if c not in ("class", "pixel_frequency", "bottom", "top")]
    if ax is None:
        figure = Figure(
            figsize=(min(16.0, max(7.0, 0.28 * len(table) * (1 + 0.25 * len(shown)) + 2)), 4.8), layout="constrained"
        )
        ax = figure.add_subplot()
    x = np.arange(len(table))
    width = 0.8 / len(shown)
    for i, method in enumerate(shown):
        heights = table[method].to_numpy()
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(heights, nan=0.0), width, label=method, color=f"C{i}")
    for group, color in GROUP_COLORS.items():
        where = np.flatnonzero(table[group].to_numpy())
        if where.size:
            ax.axvspan(where.min() - 0.5, where.max() + 0.5, color=color, alpha=0.08, lw=0)
            ax.text((where.min() + where.max()) / 2, 1.0, f"{group} {100 * table.attrs['fraction']:g}% ({table.attrs['group_size']})", color=color,
                    ha="center", va="bottom", fontsize=8, transform=ax.get_xaxis_transform())  # fmt: skip
    ax.set_xticks(x, table["class"], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(table) - 0.4)
    ax.set_ylabel("IoU (%)")
    ax.set_title(f"Per-class IoU, classes sorted by {table.attrs['reference']}'s IoU", fontsize=10, pad=14)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return ax.figure
