"""`tailseg compare`: the papers' tables for a set of runs.

    tailseg compare runs/demo/base runs/demo/lmp [--reference base] [--format markdown|csv]
                    [--sort reference|frequency] [--output comparison.md]

Each argument is a `report.json`, a run directory holding one, or a folder of `version_*` runs
(the newest report is taken); `NAME=PATH` names a method explicitly, otherwise the name is the
run's folder (`runs/demo/lmp/version_3/report.json` -> "lmp"). Several reports with the same
name are seeds of one method: their numbers are shown as mean ± std (sample std over seeds).

Tables (all IoU in %):
1. per-class IoU, classes sorted by the reference's IoU (TCE paper, Table 1) or by pixel
   frequency, rarest first (`--sort frequency`), with the share of labelled training pixels;
2. per-class gain of every method over the reference (LMP paper, Fig. 3 / Table 3);
3. summary: mIoU, the five rarest classes' mean IoU, worst class, std across classes, the
   reference-sorted bottom / top 25%, and the 25th / 75th percentile tuples (threshold, mIoU)
   of the TCE paper's Table 3.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from tailseg.metrics import fairness_report

RARE_K = 5


def find_report(path: Path) -> Path:
    """The report.json for a path: the file itself, `<dir>/report.json`, or the newest `<dir>/version_*/report.json`."""
    if path.is_file():
        return path
    if (path / "report.json").is_file():
        return path / "report.json"
    versions = sorted(path.glob("version_*/report.json"), key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    if versions:
        return versions[-1]
    raise FileNotFoundError(f"{path}: no report.json there (nor in {path}/version_*/)")


def method_name(report_path: Path) -> str:
    folder = report_path.parent
    return folder.parent.name if folder.name.startswith("version_") else folder.name


def load_runs(arguments: list[str]) -> OrderedDict[str, list[dict]]:
    """{method name: [report, ...]} in the order the methods first appear."""
    runs: OrderedDict[str, list[dict]] = OrderedDict()
    for argument in arguments:
        name, _, path = argument.rpartition("=") if "=" in argument else ("", "", argument)
        report_path = find_report(Path(path))
        report = json.loads(report_path.read_text())
        if "per_class_iou" not in report:
            raise ValueError(f"{report_path}: not a tailseg report (no per_class_iou)")
        if report["per_class_iou"] is None:
            raise ValueError(f"{report_path}: holds no metrics (the run had no validation data); validate it first")
        runs.setdefault(name or method_name(report_path), []).append(report)
    return runs


def _iou_matrix(reports: list[dict], classes: list[str]) -> np.ndarray:
    rows = []
    for report in reports:
        if list(report["per_class_iou"]) != classes:
            raise ValueError(f"reports disagree on the classes: {list(report['per_class_iou'])} vs {classes}")
        rows.append([np.nan if v is None else float(v) for v in report["per_class_iou"].values()])
    return np.asarray(rows, dtype=np.float64)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else math.nan


def _cell(mean: float, std: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if math.isnan(std) else f"{text} ± {std:.2f}"


class Comparison:
    """Per-class IoU of several methods (each one or more seeds) against a reference method."""

    def __init__(self, runs: OrderedDict[str, list[dict]], reference: str | None = None) -> None:
        if not runs:
            raise ValueError("compare: no runs given")
        self.methods = list(runs)
        self.reference = reference or self.methods[0]
        if self.reference not in runs:
            raise ValueError(f"compare: --reference {self.reference!r} is none of the methods {self.methods}")
        first = runs[self.methods[0]][0]
        self.classes = list(first["per_class_iou"])
        self.iou = {m: _iou_matrix(reports, self.classes) for m, reports in runs.items()}
        freq = first.get("class_frequency") or {}
        self.frequency = np.array([freq.get(c, np.nan) for c in self.classes], dtype=np.float64)
        self.mean = {m: np.nanmean(v, axis=0) if (~np.isnan(v)).any() else v[0] for m, v in self.iou.items()}

    def order(self, sort: str) -> list[int]:
        if sort == "frequency" and not np.isnan(self.frequency).all():
            return list(np.argsort(np.nan_to_num(self.frequency, nan=np.inf), kind="stable"))
        reference = np.nan_to_num(self.mean[self.reference], nan=np.inf)
        return list(np.argsort(reference, kind="stable"))

    def rare_classes(self) -> list[int]:
        if np.isnan(self.frequency).all():
            return []
        return list(np.argsort(np.nan_to_num(self.frequency, nan=np.inf), kind="stable")[:RARE_K])

    def per_seed_summary(self, method: str) -> dict[str, np.ndarray]:
        """Summary numbers for each seed of `method`: {key: (seeds,) array}."""
        rows: dict[str, list[float]] = {}
        rare = self.rare_classes()
        for iou in self.iou[method]:
            report = fairness_report(iou, reference=self.mean[self.reference])
            if rare:
                report["rare5_miou"] = float(np.nanmean(iou[rare]))
            for key, value in report.items():
                rows.setdefault(key, []).append(value)
        return {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}

    def tables(self, sort: str = "reference") -> list[tuple[str, list[str], list[list[str]]]]:
        """(title, header, rows) of the per-class IoU, the gains and the summary tables."""
        order = self.order(sort)
        header = ["class", "pixels %"] + self.methods
        per_class = []
        for c in order:
            share = "" if np.isnan(self.frequency[c]) else f"{100 * self.frequency[c]:.3f}"
            per_class.append([self.classes[c], share] + [_cell(*_mean_std(self.iou[m][:, c])) for m in self.methods])
        others = [m for m in self.methods if m != self.reference]
        gains = []
        for c in order:
            ref = self.mean[self.reference][c]
            gains.append([self.classes[c]] + [_cell(*_mean_std(self.iou[m][:, c] - ref), signed=True) for m in others])
        labels = OrderedDict(
            [("miou", "mIoU"), ("rare5_miou", f"{RARE_K} rarest classes' mIoU"), ("worst", "worst class"),
             ("std", "std across classes"), ("sorted_bottom", "bottom 25% (sorted by reference)"),
             ("sorted_top", "top 25% (sorted by reference)"), ("p25_threshold", "25th percentile"),
             ("p25_miou", "mIoU at or below it"), ("p75_threshold", "75th percentile"),
             ("p75_miou", "mIoU at or above it")]
        )  # fmt: skip
        summaries = {m: self.per_seed_summary(m) for m in self.methods}
        summary = []
        for key, label in labels.items():
            if key not in summaries[self.methods[0]]:
                continue
            summary.append([label] + [_cell(*_mean_std(summaries[m][key])) for m in self.methods])
        seeds = ", ".join(f"{m}: {len(self.iou[m])}" for m in self.methods)
        by = "pixel frequency, rarest first" if sort == "frequency" else f"{self.reference}'s IoU"
        return [
            (f"Per-class IoU (%), sorted by {by}; seeds per method - {seeds}", header, per_class),
            (f"Gain over {self.reference} (IoU points)", ["class"] + others, gains),
            ("Summary (%)", ["metric"] + self.methods, summary),
        ]


def render(tables, fmt: str) -> str:
    out = []
    for title, header, rows in tables:
        if fmt == "csv":
            out.append(f"# {title}")
            out += [",".join(f'"{c}"' if "," in c else c for c in row) for row in [header, *rows]]
        else:
            out += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)


def compare_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="tailseg compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="report.json files or run folders, optionally NAME=PATH")
    parser.add_argument("--reference", default=None, help="the method the others are compared to (default: the first)")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--sort", choices=("reference", "frequency"), default="reference")
    parser.add_argument("--output", default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    text = render(Comparison(load_runs(args.runs), args.reference).tables(args.sort), args.format)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
