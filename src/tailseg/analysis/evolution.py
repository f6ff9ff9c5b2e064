"""How per-class training quantities evolve over the steps: the performance-aware sampler's class
probabilities (`sampler/p/<class>`, logged by `ClassIoUFeedback`) and Stochastic TCE's class weights
(`tce/w/<class>`, logged by `TiltedClassFeedback`), from the tidy frame of `load_series`."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

PREFIX_TITLES = {"sampler/p/": "sampler class probability", "tce/w/": "Stochastic TCE class weight"}


def runs_with(series: pd.DataFrame, prefix: str) -> list[str]:
    """The runs that logged keys starting with `prefix`, in order."""
    return list(dict.fromkeys(series.loc[series["key"].str.startswith(prefix), "run"]))


def class_series(series: pd.DataFrame, prefix: str, run: str) -> pd.DataFrame:
    """One run's values of `prefix` keys as a table: index step, one column per class (key order)."""
    rows = series[(series["run"] == run) & series["key"].str.startswith(prefix)]
    rows = rows.assign(**{"class": rows["key"].str.slice(len(prefix))})
    table = rows.pivot_table(index="step", columns="class", values="value", aggfunc="last", sort=False)
    table = table.reindex(columns=list(dict.fromkeys(rows["class"]))).sort_index()
    table.index = table.index.astype("int64")
    return table


def evolution_figure(
    series: pd.DataFrame, prefix: str = "sampler/p/", runs: list[str] | None = None, columns: int = 2
) -> Figure:
    """One panel per run (default: every run that logged `prefix` keys), one line per class: the value of
    `<prefix><class>` against the global step. Classes keep one colour across panels.

    Raises:
        ValueError: no run logged `prefix` keys (check with `runs_with` first).
    """
    available = runs_with(series, prefix)
    runs = available if runs is None else [r for r in runs if r in available]
    if not runs:
        raise ValueError(f"no run logged {prefix}<class> values")
    tables = {run: class_series(series, prefix, run) for run in runs}
    names = list(dict.fromkeys(name for table in tables.values() for name in table.columns))
    colors = {name: _color(i) for i, name in enumerate(names)}
    ncols = min(columns, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    figure = Figure(figsize=(5.5 * ncols + 1.8, 3.6 * nrows), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, run in zip(axes.flat, runs, strict=False):
        table = tables[run]
        for name in table.columns:
            values = table[name].dropna()
            ax.plot(values.index, values.to_numpy(), label=name, color=colors[name], lw=1.3,
                    marker="o" if len(values) < 12 else None, ms=3)  # fmt: skip
        ax.set_title(run, fontsize=10)
        ax.set_xlabel("global step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(runs) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(PREFIX_TITLES.get(prefix, prefix.rstrip("/")))
    handles = [Line2D([], [], color=colors[n], label=n) for n in names]
    figure.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False)
    figure.suptitle(f"{PREFIX_TITLES.get(prefix, prefix)} over training", fontsize=11)
    return figure


def _color(i: int):
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    return palette(i % 20)
