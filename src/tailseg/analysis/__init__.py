"""Analysis of finished runs: tidy DataFrames and the papers' figures and tables (the notebooks call these).

- `runs`: find runs (report.json, run directories, metrics.csv, offline W&B folders) and load them into
  tidy frames: `load_per_class` (run, method, seed, class, iou, pixel_frequency, step) and `load_series`
  (run, method, seed, step, key, value);
- `aggregate`: per-method means / stds over seeds, class orders;
- `comparison`: `build_comparison`, one `Comparison` of a set of runs computed once - figures with intervals over
  seeds and images, paired Δ against the reference with Holm-marked classes, P(> reference), the leaderboard's
  top group and notes - that `tailseg compare`, `tailseg matrix` and the notebooks render;
  `comparison_tables` / `comparison_frames` format it;
- `gains`: per-class gain vs pixel share (LMP paper, Fig. 3; `tailseg compare --figure`), `worst_k_table`;
- `sorted_iou`: IoU sorted by the reference with bottom / top 25 % groups (TCE paper, Table 1);
- `fairness`: the TCE paper's Table 3, mean ± std over seeds; `bottom_classes`, the reference's worst quarter;
- `evolution`: sampler probabilities and Stochastic TCE weights over the steps;
- `predictions`: a model's confusion matrix and prediction overlays on fixed images;
- `wandb_offline`: reading offline W&B run folders.

Names are imported on first use (importing the package does not import pandas or matplotlib).
Functions return a pandas DataFrame or a matplotlib `Figure` (not registered with pyplot: show it by making
it a notebook cell's value, save it with `figure.savefig`).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "class_order": "aggregate",
    "classes": "aggregate",
    "default_reference": "aggregate",
    "iou_by_run": "aggregate",
    "mean_iou": "aggregate",
    "methods": "aggregate",
    "pixel_frequency": "aggregate",
    "seed_counts": "aggregate",
    "std_iou": "aggregate",
    "Comparison": "comparison",
    "build_comparison": "comparison",
    "comparison_frames": "comparison_tables",
    "comparison_tables": "comparison_tables",
    "class_series": "evolution",
    "evolution_figure": "evolution",
    "runs_with": "evolution",
    "bottom_classes": "fairness",
    "fairness_by_run": "fairness",
    "fairness_table": "fairness",
    "format_mean_std": "fairness",
    "gain_figure": "gains",
    "gain_table": "gains",
    "worst_k_table": "gains",
    "Prediction": "predictions",
    "confusion_figure": "predictions",
    "confusion_matrix": "predictions",
    "confusion_table": "predictions",
    "load_model": "predictions",
    "normalize_rows": "predictions",
    "overlay_figure": "predictions",
    "predict_images": "predictions",
    "Run": "runs",
    "describe_runs": "runs",
    "find_runs": "runs",
    "load_per_class": "runs",
    "load_series": "runs",
    "read_metrics_csv": "runs",
    "repository_root": "runs",
    "resolve_runs_dir": "runs",
    "sorted_iou_figure": "sorted_iou",
    "sorted_iou_table": "sorted_iou",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
