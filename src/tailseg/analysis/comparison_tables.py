"""The tables of a `Comparison` as rows of text (no statistics here: every number comes from the comparison).

`comparison_tables` gives (title, header, rows, lines under the table) of the per-class IoU, the per-class Δ
over the reference, the fairness summary and the leaderboard (`tailseg compare` documents their columns);
`comparison_frames` gives the same tables as DataFrames, for the notebooks. Figures with an interval read
`49.9 [47.1, 52.3]`, Δ cells `+2.1 [0.4, 3.9]*` (`*`: significant, see `tailseg.analysis.comparison`),
figures without one (reports without per-image counts) `49.90 ± 1.20`, mean ± std over seeds. Where some method
has the mean of the last k validations (`miou_last_k`), the leaderboard shows it beside the final mIoU (mean ± std
over seeds) with its seed-paired Δ to the reference (`+1.2 [-0.5, 2.9]*`, paired t-test over the seed pairs).
The leaderboard's last column, "Δ bottom 25% vs <reference>", is the paired Δ of the mean IoU over the reference's
worst quarter of the classes (`Delta.bottom`; `+3.2 [2.9, 3.4]*` like ΔmIoU), a line under it naming the classes.
`across_table` sets the leaderboards of several comparisons of the same methods on different evaluation sets side
by side (e.g. val and a held-out video: `tailseg compare --across`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tailseg.analysis.aggregate import mean_std_text
from tailseg.analysis.comparison import MIN_SEED_PAIRS, Comparison, Delta
from tailseg.analysis.fairness import LABELS, format_mean_std

Table = tuple[str, list[str], list[list[str]], list[str]]
"""(title, header, rows, lines under the table)."""

SORTS = ("reference", "frequency")


def interval_text(value: float, interval: np.ndarray | None, std: float = np.nan, signed: bool = False) -> str:
    """ "49.9 [47.1, 52.3]" with an interval, else "49.90 ± 1.20" ("49.90" without a std, "n/a" without a value)."""
    if value is None or pd.isna(value):
        return "n/a"
    if interval is None or np.isnan(interval).any():
        return mean_std_text(value, std, signed=signed)
    sign = "+" if signed else ""
    return f"{value:{sign}.1f} [{interval[0]:.1f}, {interval[1]:.1f}]"


def delta_text(delta: Delta, index: int | None = None) -> str:
    """A Δ cell of class `index` (None: ΔmIoU): "+2.1 [0.4, 3.9]*" (`*`: significant), "+2.10 ± 0.50" without
    an interval."""
    if index is None:
        text = interval_text(delta.miou, delta.miou_ci, signed=True)
        return text + ("*" if delta.miou_significant else "")
    interval = None if delta.per_class_ci is None else delta.per_class_ci[:, index]
    text = interval_text(delta.per_class[index], interval, delta.per_class_std[index], signed=True)
    return text + ("*" if delta.significant is not None and delta.significant[index] else "")


def bottom_delta_text(delta: Delta) -> str:
    """The cell of Δ bottom 25% (`Delta.bottom`): "+3.2 [2.9, 3.4]*" (`*`: its p < alpha with 3 seed pairs or
    more), "+3.20" without per-image counts to pair, "n/a" without the figure."""
    text = interval_text(delta.bottom, delta.bottom_ci, signed=True)
    return text + ("*" if delta.bottom_significant else "")


def last_k_delta_text(delta: Delta) -> str:
    """The Δ cell of the mean of the last k validations: "+1.2 [-0.5, 2.9]*" (`*`: p < alpha with 3 seed pairs or
    more), "+1.20" with fewer than 2 seed pairs, "n/a" without the figure."""
    text = interval_text(delta.miou_last_k, delta.miou_last_k_ci, signed=True)
    return text + ("*" if delta.miou_last_k_significant else "")


def class_order(comparison: Comparison, sort: str = "reference") -> list[str]:
    """The classes by pixel frequency (rarest first) or by the reference's IoU (lowest first); unknown last, ties
    in id order."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")
    if sort == "frequency":
        values = comparison.pixel_frequency.reindex(comparison.classes).to_numpy()
    else:
        values = comparison.figures[comparison.reference].per_class
    order = np.argsort(np.nan_to_num(values, nan=np.inf), kind="stable")
    return [comparison.classes[i] for i in order]


def comparison_tables(comparison: Comparison, sort: str = "reference") -> list[Table]:
    """The per-class IoU, Δ, summary and leaderboard tables of the module docs, formatted from `comparison`."""
    c = comparison
    order = class_order(c, sort)
    index = {name: i for i, name in enumerate(c.classes)}
    seeds = ", ".join(f"{m}: {len(c.figures[m].seeds)}" for m in c.methods)
    frequency = 100.0 * c.pixel_frequency.reindex(c.classes)
    per_class = [
        [name, "" if pd.isna(frequency[name]) else f"{frequency[name]:.3f}",
         *(interval_text(f.per_class[index[name]], None if f.per_class_ci is None else f.per_class_ci[:, index[name]],
                         f.per_class_std[index[name]]) for f in c.figures.values())]
        for name in order
    ]  # fmt: skip
    by = "pixel frequency, rarest first" if sort == "frequency" else f"{c.reference}'s IoU"
    level = f"{100 * c.level:g}%"
    tables = [
        (f"Per-class IoU (%), sorted by {by}; seeds per method - {seeds}", ["class", "pixels %", *c.methods],
         per_class, [f"mean over seeds [{level} interval over seeds and images]; mean ± std over seeds where the "
                     "reports hold no per-image counts"]),
    ]  # fmt: skip
    if c.deltas:
        gains = [[name, *(delta_text(d, index[name]) for d in c.deltas.values())] for name in order]
        gains.append(["mIoU", *(delta_text(d) for d in c.deltas.values())])
        under = [
            f"Δ = method − {c.reference}, paired by seed and image [{level} percentile interval, {c.resamples} "
            f"bootstrap resamples, resampling {c.unit}s]; * Holm-corrected p < {c.alpha:g} over the classes of a "
            f"column that have a p (the mIoU row: its own p < {c.alpha:g}); marks need at least {MIN_SEED_PAIRS} "
            "seed pairs"
        ]
        tables.append((f"Gain over {c.reference} (IoU points)", ["class", *c.deltas], gains, under))
    fairness = format_mean_std(c.fairness, labels=False).drop(columns="runs")
    summary = [
        [LABELS[metric], *fairness.loc[c.methods, metric].tolist()]
        for metric in fairness.columns
        if metric != "rare5_miou" or (fairness[metric] != "n/a").any()
    ]
    tables.append(("Summary (%)", ["metric", *c.methods], summary, ["mean ± std over seeds"]))
    tables.append(leaderboard(c))
    return tables


def by_miou(comparison: Comparison) -> list[str]:
    """The methods, highest mIoU first (a method without one last)."""
    return sorted(comparison.methods, key=lambda m: -np.nan_to_num(comparison.figures[m].miou, nan=-np.inf))


def leaderboard(comparison: Comparison) -> Table:
    """The methods as rows, best mIoU first (see the module docs for the columns)."""
    c = comparison
    text = format_mean_std(c.fairness, labels=False)
    columns = ["rare5_miou", "worst", "std", "sorted_bottom"]
    if (text["rare5_miou"] == "n/a").all():
        columns.remove("rare5_miou")
    ks = {f.last_k for f in c.figures.values() if f.miou_last_k is not None}
    last = f"last {ks.pop() if len(ks) == 1 and None not in ks else 'k'}" if ks else None
    bottom = f"Δ bottom {100 * c.fraction:g}% vs {c.reference}" if c.bottom_classes else None
    rows = []
    for method in by_miou(c):
        f = c.figures[method]
        if method == c.reference:
            better = ""
        else:
            value, reason = c.prob_better[method]
            better = f"{value:.2f}" if value is not None else f"n/a ({reason})"
        rows.append([
            method, str(len(f.seeds)), interval_text(f.miou, f.miou_ci, f.miou_std),
            "" if method == c.reference else delta_text(c.deltas[method]),
            *([interval_text(f.miou_last_k, None, f.miou_last_k_std),
               "" if method == c.reference else last_k_delta_text(c.deltas[method])] if last else []),
            interval_text(f.per_image_miou, f.per_image_miou_ci),
            "" if method == c.top else delta_text(c.versus_top[method]), c.groups.get(method) or "n/a", better,
            *[text.loc[method, column] for column in columns],
            *(["" if method == c.reference else bottom_delta_text(c.deltas[method])] if bottom else []),
        ])  # fmt: skip
    header = ["method", "seeds", LABELS["miou"], f"mIoU − {c.reference}",
              *([f"mIoU {last}", f"Δ {last} vs {c.reference}"] if last else []), "per-image mIoU",
              f"mIoU − top ({c.top})", "group", f"P(> {c.reference})",
              *[LABELS[column] for column in columns], *([bottom] if bottom else [])]  # fmt: skip
    under = [
        f"group 1: {c.top} (the top mIoU) and every method whose paired {100 * c.level:g}% interval of ΔmIoU "
        f"against it contains 0; 'below': the interval excludes 0; n/a: no per-image counts to pair, fewer "
        f"than {MIN_SEED_PAIRS} seed pairs, or too few groups of images",
        f"P(> {c.reference}): share of seed pairs (seeds paired by number: 0 with 0, 1 with 1, ...) where the "
        "method's mIoU is higher (ties count 1/2), with 3 seed pairs or more",
    ]
    if last:
        under.append(
            f"mIoU {last}: mean ± std over seeds of each run's mean mIoU over its {last} validations (n/a unless "
            f"every seed reports it); Δ {last} vs {c.reference}: mean of the differences over the seed pairs "
            f"[{100 * c.level:g}% interval of a paired t-test over the seed pairs, with 2 pairs or more], * its "
            f"p < {c.alpha:g}; over seeds only: the last validations of one run are not independent measurements, "
            "so no image bootstrap"
        )
    if bottom:
        under.append(
            f"{bottom}: mean IoU over {c.reference}'s worst {100 * c.fraction:g}% of the classes ("
            f"{', '.join(c.bottom_classes)}; the classes of 'bottom {100 * c.fraction:g}% (sorted by reference)', "
            f"fixed by {c.reference}'s mean IoU, the same on both sides), method − {c.reference}, paired by seed and "
            f"image like ΔmIoU [{100 * c.level:g}% percentile interval], * its p < {c.alpha:g} with at least "
            f"{MIN_SEED_PAIRS} seed pairs; without per-image counts to pair, the difference of the seed means"
        )
    return (f"Leaderboard (%), by mIoU; reference {c.reference}", header, rows, under)


def across_table(comparisons: dict[str, Comparison]) -> Table:
    """The methods of several comparisons (one per evaluation set, labelled by the keys; the first leads) as rows:
    each set's seeds, mIoU [interval], ΔmIoU and Δ bottom 25% against its reference, paired within the set.

    Methods are ordered by the first set's mIoU, then those missing from it; a method a set does not have shows
    "not run" there. Nothing is paired across sets (different images); each set's bottom 25% is its own
    reference's worst quarter of the classes, named under the table.

    Raises:
        ValueError: the comparisons have different references or classes.
    """
    first = next(iter(comparisons.values()))
    for label, c in comparisons.items():
        if c.reference != first.reference or c.classes != first.classes:
            raise ValueError(
                f"--across {label}: reference {c.reference!r} and classes {c.classes} differ from the first set's "
                f"({first.reference!r}, {first.classes}); compare the same methods on the same classes"
            )
    ref = first.reference
    order = list(dict.fromkeys([*by_miou(first), *(m for c in comparisons.values() for m in c.methods)]))
    rows = []
    for method in order:
        row = [method]
        for c in comparisons.values():
            if method not in c.figures:
                row += ["not run", "", "", ""]
                continue
            f, delta = c.figures[method], c.deltas.get(method)
            row += [str(len(f.seeds)), interval_text(f.miou, f.miou_ci, f.miou_std),
                    "" if delta is None else delta_text(delta), "" if delta is None else bottom_delta_text(delta)]  # fmt: skip
        rows.append(row)
    header = ["method"]
    for label in comparisons:
        header += [f"{label}: seeds", f"{label}: mIoU", f"{label}: mIoU − {ref}", f"{label}: Δ bottom 25% vs {ref}"]
    level = f"{100 * first.level:g}%"
    under = [
        f"each set compared on its own: mIoU over seeds [{level} interval over seeds and images], Δ = method − {ref} "
        "paired by seed and image within the set, * as in that set's leaderboard; nothing is paired across sets",
        *(f"{label}: bottom 25% = {ref}'s worst quarter there ({', '.join(c.bottom_classes) or 'none'})"
          for label, c in comparisons.items()),
    ]  # fmt: skip
    return (f"Across evaluation sets (%): {', '.join(comparisons)}; reference {ref}", header, rows, under)


def comparison_frames(comparison: Comparison, sort: str = "reference") -> dict[str, pd.DataFrame]:
    """The tables of `comparison_tables` as DataFrames of strings indexed by their first column, under the keys
    "per_class", "gains" (only with a method besides the reference), "summary" and "leaderboard"; each one's
    title and the lines under it in `attrs["title"]` and `attrs["notes"]`."""
    tables = comparison_tables(comparison, sort)
    keys = (
        ["per_class", "gains", "summary", "leaderboard"]
        if comparison.deltas
        else ["per_class", "summary", "leaderboard"]
    )
    frames = {}
    for key, (title, header, rows, under) in zip(keys, tables, strict=True):
        frame = pd.DataFrame(rows, columns=header).set_index(header[0])
        frame.attrs.update(title=title, notes=list(under))
        frames[key] = frame
    return frames
