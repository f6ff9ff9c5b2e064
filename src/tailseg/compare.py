"""`tailseg compare`: the papers' tables for a set of runs.

    tailseg compare runs/demo [--reference base] [--format markdown|csv] [--sort reference|frequency]
                    [--output comparison.md] [--figure gains.png] [--evaluations]

Each argument is a `report.json`, a run directory, or a folder of runs at any depth (e.g. `runs/demo`,
holding `base/version_0/` and `lmp/version_0/`); `NAME=PATH` names the method of every run under PATH,
otherwise a run's method is its folder (`runs/demo/lmp/version_3`, `runs/demo/lmp/evaluations/test/version_0`
-> "lmp"). Runs are found, chosen and seeds told apart by `tailseg.analysis.runs` - the same code as the
notebooks and `tailseg matrix` use: the runs of a method are its seeds (mean ± sample std over them).

Only like is compared with like: the final reports of trained `fit` runs, on the validation split. Left out
are unfinished runs (no report), reports of untrained weights (an evaluation without a checkpoint, step 0),
the reports of `validate` and `test` (unless `--evaluations`: then each counts as a method of its own,
labelled with its split and checkpoint step, e.g. "base [test @ step 500]"), older repeats of a seed (the
newest finished run counts) and seeds whose config differs from the newest seed of their method. Every run
left out is listed under the tables with its reason ("Left out: RUN (REASON)").

Tables (all IoU in %), each built by `tailseg.analysis`:
1. per-class IoU, classes sorted by the reference's IoU (TCE paper, Table 1) or by pixel frequency, rarest
   first (`--sort frequency`), with the share of labelled training pixels (`per_class_table`);
2. per-class gain of every method over the reference (LMP paper, Fig. 3 / Table 3; `gain_table`);
3. summary: mIoU, the five rarest classes' mean IoU, worst class, std across classes, the reference-sorted
   bottom / top 25%, and the 25th / 75th percentile tuples (threshold, mIoU) of the TCE paper's Table 3
   (`fairness_table`);
4. leaderboard: the methods as rows, best mIoU first, with the main columns of the summary (`leaderboard`).
`--figure` also draws the per-class gains against the pixel share (`gain_figure`).
The reference is `--reference`, else the method named "base", else the first method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from tailseg.analysis.aggregate import (
    class_order,
    default_reference,
    mean_std_text,
    methods,
    per_class_table,
    seed_counts,
)
from tailseg.analysis.fairness import LABELS, fairness_table, format_mean_std
from tailseg.analysis.gains import gain_figure, gain_table
from tailseg.analysis.runs import find_runs, load_per_class, select_runs

Table = tuple[str, list[str], list[list[str]]]


def comparison_tables(per_class: pd.DataFrame, reference: str | None = None, sort: str = "reference") -> list[Table]:
    """(title, header, rows) of the per-class IoU, the gains and the summary tables of the module docs."""
    if per_class.empty:
        raise ValueError("no runs with a per-class IoU")
    by_run = per_class.groupby("run", sort=False)["class"].agg(list)
    for run, names in by_run.items():
        if names != by_run.iloc[0]:
            raise ValueError(f"runs disagree on the classes: {by_run.index[0]} has {by_run.iloc[0]}, {run} has {names}")
    reference = default_reference(per_class, reference)
    names = methods(per_class)
    seeds = ", ".join(f"{m}: {n}" for m, n in seed_counts(per_class).items())
    table = per_class_table(per_class, sort, reference, formatted=True)
    per_class_rows = [[name, *map(str, row)] for name, row in zip(table.index, table.to_numpy().tolist(), strict=True)]

    order = class_order(per_class, sort, reference)
    others = [m for m in names if m != reference]
    tables = {method: gain_table(per_class, method, reference) for method in others}
    gains = [
        [name, *(mean_std_text(t.loc[name, "gain"], t.loc[name, "gain_std"], signed=True) for t in tables.values())]
        for name in order
    ]

    fairness = format_mean_std(fairness_table(per_class, reference), labels=False).drop(columns="runs")
    summary = [
        [LABELS[metric], *fairness.loc[names, metric].tolist()]
        for metric in fairness.columns
        if metric != "rare5_miou" or (fairness[metric] != "n/a").any()
    ]
    by = "pixel frequency, rarest first" if sort == "frequency" else f"{reference}'s IoU"
    return [
        (f"Per-class IoU (%), sorted by {by}; seeds per method - {seeds}", ["class", *table.columns], per_class_rows),
        (f"Gain over {reference} (IoU points)", ["class", *others], gains),
        ("Summary (%)", ["metric", *names], summary),
        leaderboard(per_class, reference),
    ]


def leaderboard(per_class: pd.DataFrame, reference: str | None = None) -> Table:
    """The methods as rows, best mean mIoU first: seeds, mIoU, its difference to the reference, the five rarest
    classes' mIoU, worst class, std across classes and the reference-sorted bottom 25% (mean ± std over seeds)."""
    reference = default_reference(per_class, reference)
    numbers = fairness_table(per_class, reference)
    text = format_mean_std(numbers, labels=False)
    base = numbers.loc[reference, ("miou", "mean")]
    columns = ["miou", "rare5_miou", "worst", "std", "sorted_bottom"]
    if (text["rare5_miou"] == "n/a").all():
        columns.remove("rare5_miou")
    rows = []
    for method in numbers[("miou", "mean")].sort_values(ascending=False, kind="stable").index:
        delta = (
            ""
            if method == reference
            else mean_std_text(numbers.loc[method, ("miou", "mean")] - base, None, signed=True)
        )
        rows.append([method, str(text.loc[method, "runs"]), text.loc[method, "miou"], delta,
                     *[text.loc[method, c] for c in columns[1:]]])  # fmt: skip
    header = ["method", "seeds", LABELS["miou"], f"mIoU − {reference}", *[LABELS[c] for c in columns[1:]]]
    return (f"Leaderboard (%), by mIoU; mean ± std over seeds, reference {reference}", header, rows)


def render(tables: list[Table], fmt: str, left_out: list[tuple[str, str]] = ()) -> str:
    """The tables as markdown or CSV, followed by one "Left out: RUN (REASON)" line per run left out (a list item
    in markdown, a comment in CSV)."""
    out = []
    for title, header, rows in tables:
        if fmt == "csv":
            out.append(f"# {title}")
            out += [",".join(f'"{c}"' if "," in c else c for c in row) for row in [header, *rows]]
        else:
            out += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    if left_out:
        out += [f"{'#' if fmt == 'csv' else '-'} {left_out_line(name, reason)}" for name, reason in left_out] + [""]
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
) -> str:
    """The comparison of the runs of `sources` (paths or NAME=PATH) that count (see the module docs;
    `evaluations`: also the reports of `validate` and `test`): its text, with the runs left out listed under the
    tables, also written to `output`, and the gain figure written to `figure` (with at least two methods).
    `make demo` and `tailseg matrix` call this.

    Raises:
        FileNotFoundError: a source does not exist. ValueError: no run that counts, or a bad reference.
    """
    kept, left_out = select_runs(find_runs(list(sources)), evaluations)
    if not kept:
        reasons = "; ".join(left_out_line(name, reason) for name, reason in left_out)
        raise ValueError(f"no finished training run to compare in {', '.join(map(str, sources))}: {reasons}")
    per_class = load_per_class(kept, evaluations=evaluations)
    text = render(comparison_tables(per_class, reference, sort), fmt, left_out)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
    if figure is not None and len(methods(per_class)) > 1:
        Path(figure).parent.mkdir(parents=True, exist_ok=True)
        gain_figure(per_class, reference=reference).savefig(figure, dpi=150)
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
    parser.add_argument("--sort", choices=("reference", "frequency"), default="reference")
    parser.add_argument("--output", default=None, help="also write the tables to this file")
    parser.add_argument("--figure", default=None, help="also draw the per-class gains against pixel share here (PNG)")
    parser.add_argument(
        "--evaluations",
        action="store_true",
        help="also compare the reports of validate and test, each as its own method labelled with its split and "
        "checkpoint step (e.g. 'base [test @ step 500]')",
    )
    args = parser.parse_args(argv)
    try:
        text = write_comparison(
            args.runs, args.output, args.figure, args.reference, args.sort, args.format, args.evaluations
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"tailseg compare: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(text)
