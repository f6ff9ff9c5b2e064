"""`tailseg compare`: the papers' tables for a set of runs, with intervals and paired significance.

    tailseg compare runs/demo [--reference base] [--format markdown|csv] [--sort reference|frequency]
                    [--output comparison.md] [--figure gains.png] [--evaluations] [--resamples 2000] [--seed 0]
                    [--ci_unit image|group] [--label val --across 0006R0=runs/held-out ...]

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

All numbers come from one `tailseg.analysis.comparison.Comparison`, built once (its docs define the
statistics); `tailseg.analysis.comparison_tables` formats it and this module writes it. Tables (all IoU in %):
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
   and the main columns of the summary; where some method's runs report the mean of their last k validations
   (`last_k`), also that figure (mean ± std over seeds) and its Δ to the reference paired by seed (a paired
   t-test over the seed pairs: over seeds only, never over images); last, Δ bottom 25% vs the reference: the
   mean IoU over the reference's worst quarter of the classes (a fixed set, named under the table), paired by
   seed and image like ΔmIoU, `+3.2 [2.9, 3.4]*`.
Notes under the tables say which figures have no interval and why (older reports, single seeds).
`--figure` also draws the per-class gains against the pixel share, with their paired intervals (`gain_figure`).
`--across NAME=PATH` (repeatable) compares the runs under PATH - the same methods evaluated on another set, e.g. a
held-out video - on their own, with the same reference, and adds one last table setting each method's seeds, mIoU,
ΔmIoU and Δ bottom 25% on every set side by side (`across_table`), the main set labelled `--label` (default
"main"); the notes and left-out runs of each other set follow, prefixed with its name.
The reference is `--reference`, else the method named "base", else the first method.
`--ci_unit group` resamples the groups of images (videos, cities) instead of images, as the report's option of the
same name; marks then need 10 groups or more (`tailseg.analysis.comparison`, module docs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tailseg.analysis.comparison import UNITS, Comparison, build_comparison
from tailseg.analysis.comparison_tables import SORTS, Table, across_table, comparison_tables
from tailseg.analysis.gains import gain_figure
from tailseg.metrics.bootstrap import DEFAULT_RESAMPLES


def render(
    comparison: Comparison, fmt: str = "markdown", sort: str = "reference", across: dict[str, Comparison] | None = None
) -> str:
    """The tables of `comparison` as markdown or CSV, each followed by its explanation, then the notes and one
    "Left out: RUN (REASON)" line per run left out (list items in markdown, comments in CSV). `across`: {label:
    comparison} of every evaluation set, the main one first, for `across_table` (the notes and left-out runs of the
    other sets are prefixed with their label)."""
    out = []
    tables: list[Table] = comparison_tables(comparison, sort)
    if across:
        tables.append(across_table(across))
    for title, header, rows, under in tables:
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
    for label, other in (across or {}).items():
        if other is not comparison:
            lines += [f"{label}: Note: {note}" for note in other.notes]
            lines += [f"{label}: {left_out_line(name, reason)}" for name, reason in other.left_out]
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
    across: dict[str, list] | None = None,
    label: str = "main",
    unit: str = "image",
) -> str:
    """The comparison of the runs of `sources` (paths or NAME=PATH) that count (see the module docs;
    `evaluations`: also the reports of `validate` and `test`; `unit`: what a resample draws, "image" or "group"),
    built once: its text, with the notes and the runs left out under the tables, also written to `output`, and the
    gain figure written to `figure` (with at least two methods). `across`: {label: sources} of the same methods on other evaluation sets, each compared on its own
    with the same reference and set beside this one (labelled `label`) in one more table. `make demo` and
    `tailseg matrix` call this.

    Raises:
        FileNotFoundError: a source does not exist. ValueError: no run that counts, or a bad reference.
    """
    statistics = {"evaluations": evaluations, "resamples": resamples, "seed": seed, "unit": unit}
    comparison = build_comparison(list(sources), reference=reference, **statistics)
    sets = None
    if across:
        if label in across:
            raise ValueError(f"--across {label}=...: {label!r} is already the main set's label (--label)")
        sets = {label: comparison}
        for name, other in across.items():
            sets[name] = build_comparison(list(other), reference=comparison.reference, **statistics)
    text = render(comparison, fmt, sort, sets)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)
    if figure is not None and len(comparison.methods) > 1:
        Path(figure).parent.mkdir(parents=True, exist_ok=True)
        gain_figure(comparison).savefig(figure, dpi=150)
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
    parser.add_argument(
        "--ci_unit",
        choices=UNITS,
        default="image",
        help="what a bootstrap resample draws: images, or the groups of images (videos, cities; marks need 10 or more)",
    )
    parser.add_argument(
        "--across",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="the same methods on another evaluation set (e.g. a held-out video), compared on their own and set beside "
        "the main set in one more table; repeatable",
    )
    parser.add_argument("--label", default="main", help="the main set's name in the --across table")
    args = parser.parse_args(argv)
    across: dict[str, list[str]] = {}
    for item in args.across:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--across {item!r}: give NAME=PATH, e.g. 0006R0=runs/board/scratch-0006R0")
        across.setdefault(name, []).append(path)
    try:
        text = write_comparison(
            args.runs, args.output, args.figure, args.reference, args.sort, args.format, args.evaluations,
            args.resamples, args.seed, across, args.label, args.ci_unit,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        print(f"tailseg compare: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(text)
