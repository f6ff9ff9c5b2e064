"""`tailseg compare`: the papers' tables for a set of runs, with intervals and paired significance.

    tailseg compare runs/demo [--reference base] [--format markdown|csv] [--sort reference|frequency]
                    [--output comparison.md] [--figure gains.png] [--evaluations] [--resamples 2000] [--seed 0]

Each argument is a `report.json`, a run directory, or a folder of runs at any depth (e.g. `runs/demo`,
holding `base/version_0/` and `lmp/version_0/`); `NAME=PATH` names the method of every run under PATH,
otherwise a run's method is its folder (`runs/demo/lmp/version_3`, `runs/demo/lmp/evaluations/test/version_0`
-> "lmp"). Runs are found, chosen and seeds told apart by `tailseg.analysis.runs` - the same code as the
notebooks and `tailseg matrix` use: the runs of a method are its seeds.

Only like is compared with like: the final reports of trained `fit` runs, on the validation split. Left out
are unfinished runs (no report), reports of untrained weights (an evaluation without a checkpoint, step 0),
the reports of `validate` and `test` (unless `--evaluations`: then each counts as a method of its own,
labelled with its split and checkpoint step, e.g. "base [test @ step 500]"), older repeats of a seed (the
newest finished run counts) and seeds whose config differs from the newest seed of their method. Every run
left out is listed under the tables with its reason ("Left out: RUN (REASON)").

All numbers come from one `tailseg.analysis.comparison.Comparison` (its docs define the statistics); this
module only formats it. Tables (all IoU in %):
1. per-class IoU, classes sorted by the reference's IoU (TCE paper, Table 1) or by pixel frequency, rarest
   first (`--sort frequency`), with the share of labelled training pixels: `49.9 [47.1, 52.3]`, the mean over
   the seeds and its 95% interval over seeds and images; `49.90 ± 1.20` (mean ± std over seeds) where the
   reports carry no per-image counts;
2. per-class Δ of every method over the reference (LMP paper, Fig. 3 / Table 3), paired by seed and image:
   `+2.1 [0.4, 3.9]*`, `*` where the Holm-corrected p < 0.05 (explained under the table), and ΔmIoU;
3. summary: mIoU, the five rarest classes' mean IoU, worst class, std across classes, the reference-sorted
   bottom / top 25%, and the 25th / 75th percentile tuples (threshold, mIoU) of the TCE paper's Table 3,
   mean ± std over seeds;
4. leaderboard: the methods as rows, best mIoU first: seeds, mIoU, Δ to the reference, mean per-image mIoU,
   ΔmIoU to the top method, the group (1: tied with the top method), P(> reference) (with 3 seeds or more)
   and the main columns of the summary.
Notes under the tables say which figures have no interval and why (older reports, single seeds).
`--figure` also draws the per-class gains against the pixel share (`gain_figure`).
The reference is `--reference`, else the method named "base", else the first method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tailseg.analysis.aggregate import mean_std_text
from tailseg.analysis.comparison import Comparison, Delta, build_comparison
from tailseg.analysis.fairness import LABELS, format_mean_std
from tailseg.analysis.gains import gain_figure
from tailseg.metrics.bootstrap import DEFAULT_RESAMPLES

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
            f"bootstrap resamples]; * Holm-corrected p < {c.alpha:g} over the {len(c.classes)} classes of a column "
            f"(the mIoU row: its own p < {c.alpha:g}); marks need at least 2 seed pairs"
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


def leaderboard(comparison: Comparison) -> Table:
    """The methods as rows, best mIoU first (see the module docs for the columns)."""
    c = comparison
    text = format_mean_std(c.fairness, labels=False)
    columns = ["rare5_miou", "worst", "std", "sorted_bottom"]
    if (text["rare5_miou"] == "n/a").all():
        columns.remove("rare5_miou")
    rows = []
    for method in sorted(c.methods, key=lambda m: -np.nan_to_num(c.figures[m].miou, nan=-np.inf)):
        f = c.figures[method]
        if method == c.reference:
            better = ""
        else:
            value, reason = c.prob_better[method]
            better = f"{value:.2f}" if value is not None else f"n/a ({reason})"
        rows.append([
            method, str(len(f.seeds)), interval_text(f.miou, f.miou_ci, f.miou_std),
            "" if method == c.reference else delta_text(c.deltas[method]),
            interval_text(f.per_image_miou, f.per_image_miou_ci),
            "" if method == c.top else delta_text(c.versus_top[method]), c.groups.get(method) or "n/a", better,
            *[text.loc[method, column] for column in columns],
        ])  # fmt: skip
    header = ["method", "seeds", LABELS["miou"], f"mIoU − {c.reference}", "per-image mIoU", f"mIoU − {c.top}",
              "group", f"P(> {c.reference})", *[LABELS[column] for column in columns]]  # fmt: skip
    under = [
        f"group 1: {c.top} (the top mIoU) and every method whose paired {100 * c.level:g}% interval of ΔmIoU "
        f"against it contains 0; 'below': the interval excludes 0; n/a: no per-image counts to pair",
        f"P(> {c.reference}): share of seed pairs where the method's mIoU is higher (ties count 1/2), with 3 "
        "seed pairs or more",
    ]
    return (f"Leaderboard (%), by mIoU; reference {c.reference}", header, rows, under)


def render(comparison: Comparison, fmt: str = "markdown", sort: str = "reference") -> str:
    """The tables of `comparison` as markdown or CSV, each followed by its explanation, then the notes and one
    "Left out: RUN (REASON)" line per run left out (list items in markdown, comments in CSV)."""
    out = []
    for title, header, rows, under in comparison_tables(comparison, sort):
        if fmt == "csv":
            out.append(f"# {title}")
            out += [",".join(f'"{c}"' if "," in c else c for c in row) for row in [header, *rows]]
            out += [f"# {line}" for line in under]
        else:
            out += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(row) + " |" for row in rows]
            out += ["", *under]
        out.append("")
    mark = "#" if fmt == "csv" else "-"
    lines = [f"Note: {note}" for note in comparison.notes]
    lines += [left_out_line(name, reason) for name, reason in comparison.left_out]
    if lines:
        out += [f"{mark} {line}" for line in lines] + [""]
    return "\n".join(out)


def left_out_line(name: str, reason: str) -> str:
    """ "Left out: lmp/version_2 (unfinished: no report)"."""
    return f"Left out: {name} ({reason})"


def write_comparison(
    sources,
    output: str | Path | None = None,
    figure: str | Path | None = None,
    reference: str | None = None,
    sort: str = "frequency",
    fmt: str = "markdown",
    evaluations: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> str:
    """The comparison of the runs of `sources` (paths or NAME=PATH) that count (see the module docs;
    `evaluations`: also the reports of `validate` and `test`), built once: its text, with the notes and the runs
    left out under the tables, also written to `output`, and the gain figure written to `figure` (with at least
    two methods). `make demo` and `tailseg matrix` call this.

    Raises:
        FileNotFoundError: a source does not exist. ValueError: no run that counts, or a bad reference.
    """
    comparison = build_comparison(
        list(sources), reference=reference, evaluations=evaluations, resamples=resamples, seed=seed
    )
    text = render(comparison, fmt, sort)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
    if figure is not None and len(comparison.methods) > 1:
        Path(figure).parent.mkdir(parents=True, exist_ok=True)
        gain_figure(comparison.per_class, reference=comparison.reference).savefig(figure, dpi=150)
    return text


def compare_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="tailseg compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs", nargs="+", help="report.json files, run folders or folders of runs, optionally NAME=PATH"
    )
    parser.add_argument(
        "--reference", default=None, help="the method the others are compared to (default: base, else the first)"
    )
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--sort", choices=SORTS, default="reference")
    parser.add_argument("--output", default=None, help="also write the tables to this file")
    parser.add_argument("--figure", default=None, help="also draw the per-class gains against pixel share here (PNG)")
    parser.add_argument(
        "--evaluations",
        action="store_true",
        help="also compare the reports of validate and test, each as its own method labelled with its split and "
        "checkpoint step (e.g. 'base [test @ step 500]')",
    )
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples of the intervals")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (the same seed, the same intervals)")
    args = parser.parse_args(argv)
    try:
        text = write_comparison(
            args.runs, args.output, args.figure, args.reference, args.sort, args.format, args.evaluations,
            args.resamples, args.seed,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        print(f"tailseg compare: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(text)
