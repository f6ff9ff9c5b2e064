"""The fairness table of the TCE paper (Table 3) for several methods, mean ± std over seeds.

Each run's per-class IoU (%) goes through `tailseg.metrics.fairness_report`, with the reference method's
mean per-class IoU ranking the classes for "sorted 25 %" (the paper ranks by MCCE for every model); beside
the paper's criteria, `rare5_miou` is the mean IoU of the five classes with the smallest share of the
labelled training pixels (NaN when the shares are unknown). The runs of a method are its seeds: the table
holds the mean and the sample standard deviation (ddof 1; NaN with one run) of each criterion over them.
`tailseg compare` prints this table as its summary.

`bottom_classes` names the classes of "bottom 25% (sorted by reference)": the ⌈fraction · K⌉ lowest of the K
classes with a reference mean IoU (`tailseg.metrics.fairness.class_count`; ties by class id). They are fixed by
the reference, the same for every method and seed, so that the paired Δ of the comparison
(`tailseg.analysis.comparison`) differences the same classes on both sides. They are the classes of each run's
`sorted_bottom` whenever the run has an IoU in every class the reference has one in (else `fairness_report`
ranks only the classes the run has, and its group can differ).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tailseg.analysis.aggregate import (
    default_reference,
    iou_by_run,
    mean_iou,
    mean_std_text,
    methods,
    pixel_frequency,
)
from tailseg.metrics import fairness_report
from tailseg.metrics.fairness import class_count

RARE_K = 5
METRICS = (
    "miou", "rare5_miou", "worst", "std", "sorted_bottom", "sorted_top", "p25_threshold", "p25_miou",
    "p75_threshold", "p75_miou",
)  # fmt: skip
LABELS = {
    "miou": "mIoU", "rare5_miou": f"{RARE_K} rarest classes' mIoU", "worst": "worst class",
    "std": "std across classes", "sorted_bottom": "bottom 25% (sorted by reference)",
    "sorted_top": "top 25% (sorted by reference)", "p25_threshold": "25th percentile",
    "p25_miou": "mIoU at or below it", "p75_threshold": "75th percentile", "p75_miou": "mIoU at or above it",
}  # fmt: skip


def bottom_classes(per_class: pd.DataFrame, reference: str | None = None, fraction: float = 0.25) -> list[str]:
    """The classes of `sorted_bottom`, the reference's worst, lowest first: its mean IoU over its runs ranks the
    classes that have one (ties by class id) and the ⌈fraction · K⌉ lowest of those K are kept (module docs)."""
    reference = default_reference(per_class, reference)
    ranking = mean_iou(per_class)[reference].dropna()
    if ranking.empty:
        return []
    order = np.argsort(ranking.to_numpy(), kind="stable")
    return [ranking.index[i] for i in order[: class_count(fraction, ranking.size)]]


def fairness_by_run(per_class: pd.DataFrame, reference: str | None = None, fraction: float = 0.25) -> pd.DataFrame:
    """The fairness criteria of every run: columns run, method, seed and `METRICS` (in %). Runs without any
    IoU are left out."""
    reference = default_reference(per_class, reference)
    ranking = mean_iou(per_class)[reference].to_numpy()
    frequency = pixel_frequency(per_class).to_numpy()
    rare = np.argsort(np.nan_to_num(frequency, nan=np.inf), kind="stable")[:RARE_K]
    known = not np.isnan(frequency).all()
    seeds = per_class.drop_duplicates("run").set_index("run")["seed"]
    rows = []
    for method in methods(per_class):
        for run, iou in iou_by_run(per_class, method).iterrows():
            values = iou.to_numpy(dtype=np.float64)
            if np.isnan(values).all():
                continue
            rare_values = values[rare][~np.isnan(values[rare])]
            rare5 = float(rare_values.mean()) if known and rare_values.size else np.nan
            rows.append({"run": run, "method": method, "seed": seeds.get(run), "rare5_miou": rare5,
                         **fairness_report(values, reference=ranking, fraction=fraction)})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["run", "method", "seed", *METRICS])
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def fairness_table(per_class: pd.DataFrame, reference: str | None = None, fraction: float = 0.25) -> pd.DataFrame:
    """Mean and std over each method's runs of the TCE paper's fairness criteria (in %).

    Returns:
        Index method (first-appearance order), columns a MultiIndex (metric, stat) with metric in `METRICS`
        and stat in ("mean", "std"); e.g. `table.loc["lmp", ("miou", "mean")]`. `attrs`: reference,
        fraction, seeds ({method: number of runs}).
    """
    reference = default_reference(per_class, reference)
    by_run = fairness_by_run(per_class, reference, fraction)
    found = [m for m in methods(per_class) if m in set(by_run["method"])]
    data = {}
    for metric in METRICS:
        groups = by_run.groupby("method", sort=False)[metric]
        data[(metric, "mean")] = groups.mean().reindex(found)
        data[(metric, "std")] = groups.std(ddof=1).reindex(found)  # NaN for a single run
    table = pd.DataFrame(data, index=pd.Index(found, name="method"))
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["metric", "stat"])
    table.attrs.update(
        reference=reference, fraction=fraction, seeds=by_run.groupby("method", sort=False).size().to_dict()
    )
    return table


def format_mean_std(table: pd.DataFrame, decimals: int = 2, labels: bool = True) -> pd.DataFrame:
    """A (metric, stat) table as strings "mean ± std" (the std only where there is one): index method,
    one column per metric (readable labels with `labels`)."""
    metrics = list(dict.fromkeys(table.columns.get_level_values(0)))
    text = pd.DataFrame(index=table.index)
    for metric in metrics:
        column = LABELS.get(metric, metric) if labels else metric
        means, stds = table[(metric, "mean")], table[(metric, "std")]
        text[column] = [mean_std_text(m, s, decimals) for m, s in zip(means, stds, strict=True)]
    if "seeds" in table.attrs:
        text.insert(0, "runs", [table.attrs["seeds"].get(m, 0) for m in table.index])
    return text
