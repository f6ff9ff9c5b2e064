"""One comparison of a set of runs, computed once: figures with intervals, paired Δ, significance, notes.

`build_comparison(sources)` finds and selects the runs (`tailseg.analysis.runs`), reads their reports and
per-image counts (`tailseg.analysis.per_image`) and computes everything `tailseg compare`, `tailseg matrix`
and the notebooks show, with the statistics of `tailseg.metrics.paired`; they only render the `Comparison`.

- Figures of a method (IoU in %): the point figures are the means over its seeds of the reports' per-class IoU
  and of each run's mIoU (the mean over its classes with an IoU); their 95% intervals resample seeds and,
  for all the drawn seeds at once, the images they were all evaluated on (`seed_and_image_interval`; why one
  image draw for all seeds: `tailseg.metrics.paired`). With one seed the interval is over images only.
- Δ against the reference (and against the top method): paired by seed number (runs without a known seed
  pair by their order within the method) and by image (`paired_bootstrap`); per-class p-values are
  Holm-corrected over the classes of one comparison, and a class is *significant* when its Holm p < `alpha`;
  ΔmIoU is one test of its own (its raw p). Significance needs at least 3 seed pairs (`MIN_SEED_PAIRS`, the
  project's rule: 3 seeds for any claim): with one the interval is over images only and says nothing about
  another training run, and a bootstrap over 2 seeds knows 3 seed combinations and no spread beyond them; with
  fewer than 3, intervals are shown, nothing is marked, and a note says so. Seeds that only one side has are
  left out of the paired Δ, with a note naming how many pairs it rests on.
  Without a seed pair holding per-image counts on both sides, Δ is the difference of the seed means with
  the std over the method's seeds, and no interval.
- Δ bottom 25% (sorted by reference): the mean IoU over a fixed set of classes, the reference's worst quarter -
  the same classes as the fairness summary's "bottom 25% (sorted by reference)" (`fairness.bottom_classes`: the
  reference's mean IoU over its seeds ranks the K classes that have one, the ⌈0.25 · K⌉ lowest are kept, ties by
  class id) - method − reference, the figure the TCE paper's claim "the worst classes go up" rests on. It is
  paired by seed and image exactly like ΔmIoU, from the same resampled per-image counts (the same draws): each
  side's mean over the set's classes that have an IoU (NaN left out, as in mIoU), differenced per drawn seed pair
  and averaged (`paired_bootstrap`'s `subsets`); percentile interval, bootstrap p, marked with the rules of
  ΔmIoU (its own p < `alpha`, at least 3 seed pairs). The set is chosen once, from the reference's point figures,
  and never re-sorted: a paired difference needs the same classes on both sides (each method's own worst
  classes would difference different classes), and re-sorting per resample would pick each draw's unluckiest
  classes - a different statistic, biased downwards against the point figure, so its interval would not be an
  interval of the Δ shown. Without a seed pair holding per-image counts: the difference of the seed means (each
  run's mean over the set), without an interval. `Comparison.bottom_classes` names the set; the Δ against the top
  method uses the same set (the reference's).
- The leaderboard's *group*: the top method (highest mIoU) and every method whose paired 95% interval of
  ΔmIoU against it contains 0 form group 1 (statistically tied with the top); the other methods are "below".
  The group is a significance call, so it follows the marks' rule: where the paired interval is unavailable or
  may not carry a mark (`Delta.markable`: fewer than 3 seed pairs, or too few groups), the group is unknown (None).
- P(method > reference) over seed pairs (`prob_better`), with at least 3 pairs, else None and the reason.
- The mean of the last k validations (the reports' `miou_last_k`, of runs configured with `last_k`): a method's
  figure is the mean over its seeds, None unless every seed has it; its Δ is the mean of the differences over the
  seed pairs (paired by seed as above), with at least 2 pairs the interval at `level` and the p of a paired
  t-test over the seed pairs (`scipy.stats.ttest_rel`), marked when p < `alpha` and there are at least 3 pairs;
  with one pair neither; with no
  seed in common the difference of the seed means. This interval is over seeds only: the last k validations of
  one run are not independent measurements, so there is no image bootstrap of this figure.
- Reports without per-image counts (older tailseg), or with counts of a single image (a resample of one image
  is that image), are compared on their point figures; every figure that would need their counts has no
  interval, and a note names them: never a zero-width interval.
- With R resamples the smallest bootstrap p is 2 / (R + 1), so Holm's smallest corrected p over C classes is
  C · 2 / (R + 1): when that is not below `alpha` no class can be marked, and a note says so (raise `resamples`).

The unit of resampling is the image (`unit="image"`, the default, as in the reports). `unit="group"` resamples
the groups of images instead (CamVid's videos, Cityscapes' cities: the cluster bootstrap), where every
evaluation's counts name the group of each image; it is never chosen on its own, because with few groups the
cluster bootstrap is far too sure of itself (with 2 or 3 videos every resample holds the same few clusters, and a
difference of the same sign in each is marked whatever its size; Cameron, Gelbach and Miller, "Bootstrap-based
improvements for inference with clustered errors", Review of Economics and Statistics, 2008, find it unreliable
below a few tens of clusters). With fewer than `MIN_GROUPS` groups the group intervals are shown and nothing is
marked, with a note; with fewer than 2 it is refused. Only evaluations of the same
images are resampled together or paired (an evaluation on the test split never pairs with a run's validation):
elsewhere Δ is the difference of the seed means, without an interval, and a note says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.stats import ttest_rel

from tailseg.analysis.aggregate import column_std, default_reference, iou_by_run, methods, pixel_frequency
from tailseg.analysis.fairness import bottom_classes, fairness_table
from tailseg.analysis.per_image import PerImage, load_per_image
from tailseg.analysis.runs import Run, find_runs, load_per_class, select_runs
from tailseg.metrics.bootstrap import DEFAULT_RESAMPLES, mean_iou
from tailseg.metrics.paired import holm, paired_bootstrap, prob_better, seed_and_image_interval, subset_mean

ALPHA = 0.05
#: Fewest seed pairs for a significance mark (and for the leaderboard's group): the project's 3 seeds for a claim.
MIN_SEED_PAIRS = 3
#: Fewest groups of images for a significance mark when groups are resampled (`unit="group"`, module docs).
MIN_GROUPS = 10
#: What a resample draws (`build_comparison`'s `unit`).
UNITS = ("image", "group")
#: Share of the classes in the fairness groups ("bottom 25% (sorted by reference)").
FRACTION = 0.25
TOP_GROUP, BELOW = "1", "below"


@dataclass(frozen=True)
class Figures:
    """One method's figures (IoU in %) over its seeds.

    Attributes:
        seeds: The seed keys of its runs (the seed, or "#i" for the i-th run without a known seed).
        per_class: (C,) mean over the seeds of each class's IoU.
        per_class_std: (C,) sample std over the seeds (NaN with one).
        miou: Mean over the seeds of each run's mIoU.
        miou_std: Their sample std (NaN with one seed).
        miou_by_seed: {seed key: the run's mIoU}.
        per_class_ci: (2, C) interval over seeds and images, None without per-image counts for every seed.
        miou_ci: (2,) likewise.
        per_image_miou: Mean over the seeds of the mean per-image mIoU; None without per-image counts.
        per_image_miou_ci: (2,) its interval, None without.
        miou_last_k: Mean over the seeds of each run's `miou_last_k` (the mean mIoU of its last k validations);
            None unless every seed has one.
        miou_last_k_std: Their sample std (NaN with one seed; None without the figure).
        miou_last_k_by_seed: {seed key: the run's `miou_last_k`} of the seeds that have one.
        per_class_last_k: (C,) mean over the seeds of each class's `per_class_iou_last_k` (nulls: NaN, left out
            of the mean); None without `miou_last_k`.
        last_k: The k of the figure when all its seeds agree on it, else None.
    """

    seeds: list
    per_class: np.ndarray
    per_class_std: np.ndarray
    miou: float
    miou_std: float
    miou_by_seed: dict
    per_class_ci: np.ndarray | None = None
    miou_ci: np.ndarray | None = None
    per_image_miou: float | None = None
    per_image_miou_ci: np.ndarray | None = None
    miou_last_k: float | None = None
    miou_last_k_std: float | None = None
    miou_last_k_by_seed: dict = field(default_factory=dict)
    per_class_last_k: np.ndarray | None = None
    last_k: int | None = None


@dataclass(frozen=True)
class Delta:
    """Δ = method − against (IoU points).

    Attributes:
        method, against: The two methods.
        pairs: Seed pairs with per-image counts on both sides (0: no interval).
        per_class: (C,) point Δ per class.
        per_class_std: (C,) std over the method's seeds of their Δ (only without pairs; else NaN).
        per_class_ci: (2, C) paired interval, None without pairs.
        p: (C,) raw bootstrap p-values, None without pairs.
        p_holm: (C,) Holm-corrected over the classes, None without pairs.
        markable: Whether its intervals may carry marks: at least 3 seed pairs (`MIN_SEED_PAIRS`), and at least
            `MIN_GROUPS` groups where groups of images are resampled (module docs).
        significant: (C,) Holm p < alpha, where `markable`.
        miou: Point ΔmIoU.
        miou_ci: (2,) its interval, None without pairs.
        miou_p: Its p-value, None without pairs.
        miou_significant: miou_p < alpha with at least 3 seed pairs.
        bottom: Point Δ of the mean IoU over `Comparison.bottom_classes` (the reference's worst quarter; module
            docs): with pairs, the mean over them of the whole-set Δ; without, the difference of the seed means.
            None when the reference ranks no class.
        bottom_ci: (2,) its paired interval (same resamples as ΔmIoU), None without pairs.
        bottom_p: Its bootstrap p-value, None without pairs.
        bottom_significant: bottom_p < alpha with at least 3 seed pairs.
        miou_last_k: Δ of the mean of the last k validations: the mean of the differences over the seed pairs (no
            pair: the difference of the seed means); None unless both methods have the figure.
        miou_last_k_pairs: Its seed pairs.
        miou_last_k_ci: (2,) the paired t-test's interval over the seed pairs (over seeds only: no image
            bootstrap, the last k validations of a run are not independent measurements); None with < 2 pairs.
        miou_last_k_p: The paired t-test's p; None with < 2 pairs.
        miou_last_k_significant: miou_last_k_p < alpha with at least 3 seed pairs.
    """

    method: str
    against: str
    pairs: int
    per_class: np.ndarray
    per_class_std: np.ndarray
    miou: float
    per_class_ci: np.ndarray | None = None
    p: np.ndarray | None = None
    p_holm: np.ndarray | None = None
    markable: bool = False
    significant: np.ndarray | None = None
    miou_ci: np.ndarray | None = None
    miou_p: float | None = None
    miou_significant: bool = False
    bottom: float | None = None
    bottom_ci: np.ndarray | None = None
    bottom_p: float | None = None
    bottom_significant: bool = False
    miou_last_k: float | None = None
    miou_last_k_pairs: int = 0
    miou_last_k_ci: np.ndarray | None = None
    miou_last_k_p: float | None = None
    miou_last_k_significant: bool = False


@dataclass
class Comparison:
    """Everything a comparison shows, computed once by `build_comparison` (see the module docs).

    Attributes:
        runs: The runs that count. left_out: (run name, reason) of the others.
        per_class: Their tidy per-class frame (`load_per_class`).
        reference: The reference method. methods: All methods, first-appearance order. classes: Id order.
        pixel_frequency: Share of the labelled training pixels per class (NaN where unknown).
        figures: {method: Figures}.
        deltas: {method: Delta against the reference} for every other method.
        top: The method with the highest mIoU. versus_top: {method: Delta against the top} for the others.
        groups: {method: "1" (tied with the top), "below", or None (unknown)}.
        prob_better: {method: (P(method > reference) or None, reason or None)} for every other method.
        fairness: `fairness_table` of the runs.
        bottom_classes: The classes of Δ bottom (`Delta.bottom`): the reference's worst ⌈fraction · K⌉, lowest first.
        fraction: Share of the classes in the fairness groups (0.25).
        notes: What the reader must know (missing counts, single seeds, resampling unit).
        resamples, seed, level, alpha, unit: The settings of the statistics.
    """

    runs: list[Run]
    left_out: list[tuple[str, str]]
    per_class: pd.DataFrame
    reference: str
    methods: list[str]
    classes: list[str]
    pixel_frequency: pd.Series
    figures: dict[str, Figures]
    deltas: dict[str, Delta]
    top: str
    versus_top: dict[str, Delta]
    groups: dict[str, str | None]
    prob_better: dict[str, tuple[float | None, str | None]]
    fairness: pd.DataFrame
    bottom_classes: list[str] = field(default_factory=list)
    fraction: float = FRACTION
    notes: list[str] = field(default_factory=list)
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    level: float = 0.95
    alpha: float = ALPHA
    unit: str = "image"


def _seed_keys(runs: list[Run]) -> list:
    """The seed of each run, or "#i" for the i-th run without a known seed."""
    unknown = iter(range(len(runs)))
    return [run.seed if run.seed is not None else f"#{next(unknown)}" for run in runs]


def _load_counts(runs: list[Run], classes: int, notes: list[str]) -> dict[str, PerImage]:
    """{run name: its per-image counts}, the counts of evaluations of the same images in one order (that of the
    first run read with those images). Runs without counts (or with counts of another number of classes,
    or of one image) are absent and noted."""
    loaded: dict[str, PerImage] = {}
    orders: dict[frozenset, list[str]] = {}
    missing = []
    for run in runs:
        counts = load_per_image(run.report, run.path)
        if counts is None or counts.intersection.shape[1] != classes:
            missing.append(run.name)
            continue
        if len(counts.names) < 2:
            notes.append(f"{run.name}: per-image counts of one image: intervals unavailable")
            continue
        order = orders.setdefault(frozenset(counts.names), counts.names)
        loaded[run.name] = counts.aligned(order)
    if missing:
        notes.append(f"{', '.join(missing)}: no per-image counts (older report): intervals unavailable")
    return loaded


def _same_images(counts: list[PerImage]) -> bool:
    return all(c.names == counts[0].names for c in counts)


def _settings(counts: list[PerImage], settings: dict, notes: list[str]) -> tuple[dict, bool]:
    """The keyword arguments of the resampling (`settings` less the unit, with the groups of the images when the
    unit is "group") and whether its intervals may carry marks (enough groups; module docs).

    Raises:
        ValueError: unit "group" and an evaluation without groups, or all its images in one group.
    """
    unit, kwargs = settings["unit"], {k: v for k, v in settings.items() if k != "unit"}
    if unit == "image":
        return {**kwargs, "groups": None}, True
    groups = [c.groups for c in counts]
    if any(g is None for g in groups) or len(set(groups[0])) < 2:
        raise ValueError("unit group: the evaluated images have no groups, or all share one; use unit image")
    count = len(set(groups[0]))
    notes.append(f"intervals resample the {count} groups of images (videos / cities)")
    if count < MIN_GROUPS:
        notes.append(f"only {count} groups of images: the group intervals are shown, no significance is marked "
                     f"(needs {MIN_GROUPS})")  # fmt: skip
    return {**kwargs, "groups": np.asarray(groups[0])}, count >= MIN_GROUPS


def _last_k(runs: list[Run], keys: list, classes: list[str]) -> dict:
    """The `Figures` fields of the mean of the last k validations, from the runs' reports (see the module docs)."""
    by_seed = {
        key: float(run.report["miou_last_k"])
        for key, run in zip(keys, runs, strict=True)
        if run.report.get("miou_last_k") is not None
    }
    if len(by_seed) < len(runs):
        return {"miou_last_k_by_seed": by_seed}
    values = np.array(list(by_seed.values()))
    per_class = np.array(
        [[np.nan if v is None else v for v in map((run.report.get("per_class_iou_last_k") or {}).get, classes)]
         for run in runs], dtype=np.float64,
    )  # fmt: skip
    ks = {(run.report.get("last_k") or {}).get("k") for run in runs}
    return {
        "miou_last_k": float(values.mean()), "miou_last_k_std": float(column_std(values[:, None])[0]),
        "miou_last_k_by_seed": by_seed, "per_class_last_k": mean_iou(per_class.T),
        "last_k": ks.pop() if len(ks) == 1 else None,
    }  # fmt: skip


def _figures(
    per_class: pd.DataFrame, method: str, runs: list[Run], counts: dict[str, PerImage], settings: dict, notes: list[str]
) -> Figures:
    table = iou_by_run(per_class, method).reindex([run.name for run in runs])
    by_run = table.to_numpy()
    mious, per_class_mean = mean_iou(by_run), mean_iou(by_run.T)
    keys = _seed_keys(runs)
    figures = Figures(
        seeds=keys, per_class=per_class_mean, per_class_std=column_std(by_run), miou=float(mean_iou(mious)),
        miou_std=float(column_std(mious[:, None])[0]), miou_by_seed=dict(zip(keys, mious.tolist(), strict=True)),
        **_last_k(runs, keys, list(table.columns)),
    )  # fmt: skip
    if not all(run.name in counts for run in runs):
        return figures
    used = [counts[run.name] for run in runs]
    if not _same_images(used):
        notes.append(f"{method}: its seeds were evaluated on different images: intervals unavailable")
        return figures
    result = seed_and_image_interval([(c.intersection, c.union) for c in used], **_settings(used, settings, notes)[0])
    return replace(
        figures, per_class_ci=100.0 * result.per_class_iou_ci, miou_ci=100.0 * result.miou_ci,
        per_image_miou=100.0 * result.per_image_miou, per_image_miou_ci=100.0 * result.per_image_miou_ci,
    )  # fmt: skip


def _last_k_delta(method: Figures, against: Figures, level: float, alpha: float) -> dict:
    """The `Delta` fields of the mean of the last k validations, paired by seed key (see the module docs): a
    paired t-test over the seed pairs, never an image bootstrap."""
    if method.miou_last_k is None or against.miou_last_k is None:
        return {}
    common = [key for key in against.miou_last_k_by_seed if key in method.miou_last_k_by_seed]
    if not common:
        return {"miou_last_k": method.miou_last_k - against.miou_last_k}
    ours = np.array([method.miou_last_k_by_seed[key] for key in common])
    theirs = np.array([against.miou_last_k_by_seed[key] for key in common])
    fields = {"miou_last_k": float(np.mean(ours - theirs)), "miou_last_k_pairs": len(common)}
    if len(common) < 2:
        return fields
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # equal differences: scipy warns of precision loss
        test = ttest_rel(ours, theirs)
        interval = test.confidence_interval(confidence_level=level)
    p = float(test.pvalue)
    return {**fields, "miou_last_k_ci": np.array([interval.low, interval.high], dtype=np.float64), "miou_last_k_p": p,
            "miou_last_k_significant": bool(len(common) >= MIN_SEED_PAIRS and p < alpha)}  # fmt: skip


def _seed_mean_subset(per_class: pd.DataFrame, method: str, classes: list[int]) -> float:
    """The mean over the method's seeds of each run's mean IoU over the classes `classes` (NaN left out)."""
    return float(mean_iou(subset_mean(iou_by_run(per_class, method).to_numpy(), classes)))


def _delta(
    comparison_inputs: tuple, method: str, against: str, notes: list[str], alpha: float, settings: dict
) -> Delta:
    per_class, runs_of, counts, figures, bottom = comparison_inputs
    last_k = _last_k_delta(figures[method], figures[against], settings["level"], alpha)
    keys = {m: dict(zip(_seed_keys(runs_of[m]), runs_of[m], strict=True)) for m in (method, against)}
    common = [key for key in keys[against] if key in keys[method]]
    pairs = [
        (keys[method][key], keys[against][key])
        for key in common
        if keys[method][key].name in counts and keys[against][key].name in counts
    ]
    if pairs and not _same_images([counts[run.name] for pair in pairs for run in pair]):
        notes.append(f"{method} vs {against}: evaluated on different images: Δ of the seed means, without an interval")
        pairs = []
    elif not common:
        notes.append(f"{method} vs {against}: no seed in common: Δ of the seed means, without an interval")
    elif len(common) < max(len(keys[method]), len(keys[against])):
        notes.append(f"{method} vs {against}: Δ from the {len(common)} seed{'s' * (len(common) > 1)} both have (seeds "
                     f"{', '.join(map(str, common))}); {method} has {len(keys[method])}, {against} "
                     f"{len(keys[against])}")  # fmt: skip
    if 0 < len(pairs) < len(common):
        notes.append(f"{method} vs {against}: Δ and its interval from the {len(pairs)} of {len(common)} seed pairs "
                     "with per-image counts on both sides")  # fmt: skip
    if not pairs:
        gains = iou_by_run(per_class, method).to_numpy() - figures[against].per_class[None, :]
        seed_means = (
            {"bottom": _seed_mean_subset(per_class, method, bottom) - _seed_mean_subset(per_class, against, bottom)}
            if bottom else {}
        )  # fmt: skip
        return Delta(method, against, 0, figures[method].per_class - figures[against].per_class, column_std(gains),
                     figures[method].miou - figures[against].miou, **seed_means, **last_k)  # fmt: skip
    resampling, enough_groups = _settings([counts[m.name] for m, _ in pairs], settings, notes)
    result = paired_bootstrap(
        [(counts[m.name].intersection, counts[m.name].union) for m, _ in pairs],
        [(counts[r.name].intersection, counts[r.name].union) for _, r in pairs],
        **resampling,
        subsets={"bottom": bottom} if bottom else None,
    )
    if len(pairs) == 1:
        notes.append(f"{method} vs {against}: one seed pair: intervals over images only, no significance across seeds")
    elif len(pairs) < MIN_SEED_PAIRS:
        notes.append(f"{method} vs {against}: {len(pairs)} seed pairs: a pilot, no significance marked "
                     f"(needs {MIN_SEED_PAIRS})")  # fmt: skip
    p_holm = holm(result.p)
    markable = len(pairs) >= MIN_SEED_PAIRS and enough_groups
    subset = result.subsets.get("bottom")
    bottom_fields = {} if subset is None else {
        "bottom": 100.0 * subset.delta, "bottom_ci": 100.0 * subset.ci, "bottom_p": subset.p,
        "bottom_significant": bool(markable and subset.p < alpha),
    }  # fmt: skip
    return Delta(
        method, against, len(pairs), 100.0 * result.delta, np.full(result.delta.shape, np.nan), 100.0 * result.miou,
        per_class_ci=100.0 * result.delta_ci, p=result.p, p_holm=p_holm, markable=markable,
        significant=markable & (np.nan_to_num(p_holm, nan=1.0) < alpha), miou_ci=100.0 * result.miou_ci,
        miou_p=result.miou_p, miou_significant=bool(markable and result.miou_p < alpha), **bottom_fields, **last_k,
    )  # fmt: skip


def _group(delta: Delta) -> str | None:
    """Group "1" (tied with the top), "below", or None where the interval is missing or may not carry a mark."""
    if delta.miou_ci is None or not delta.markable:
        return None
    return TOP_GROUP if delta.miou_ci[0] <= 0.0 <= delta.miou_ci[1] else BELOW


def build_comparison(
    *sources,
    reference: str | None = None,
    evaluations: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    alpha: float = ALPHA,
    unit: str = "image",
) -> Comparison:
    """The comparison of the runs of `sources` (paths, NAME=PATH strings, or `Run`s from `find_runs`) that count.

    Args:
        sources: What `find_runs` takes, or its runs.
        reference: The method the others are compared with (default: "base", else the first method).
        evaluations: Also the reports of `validate` and `test`, each as a method of its own.
        resamples: Bootstrap resamples R of every interval.
        seed: Seed of the resampling (the same seed gives the same intervals).
        level: Coverage of the intervals.
        alpha: Level of the significance marks (Holm-corrected over the classes).
        unit: What a resample draws: "image" or "group" (groups of images; module docs).

    Raises:
        FileNotFoundError: a source that does not exist. ValueError: no run that counts, runs that disagree on
        the classes, a bad reference, a bad `unit`, or unit "group" for images without 2 groups.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    flat = [s for source in sources for s in (source if isinstance(source, (list, tuple)) else [source])]
    found = flat if flat and all(isinstance(s, Run) for s in flat) else find_runs(flat)
    kept, left_out = select_runs(found, evaluations)
    kept = [run for run in kept if run.report is not None]
    if not kept:
        reasons = "; ".join(f"Left out: {name} ({reason})" for name, reason in left_out)
        raise ValueError(f"no finished training run to compare in {', '.join(map(str, flat))}: {reasons}")
    per_class = load_per_class(kept, evaluations=evaluations)
    by_run = per_class.groupby("run", sort=False)["class"].agg(list)
    for run, names in by_run.items():
        if names != by_run.iloc[0]:
            raise ValueError(f"runs disagree on the classes: {by_run.index[0]} has {by_run.iloc[0]}, {run} has {names}")
    reference = default_reference(per_class, reference)
    names = methods(per_class)
    runs_of = {m: [run for run in kept if run.label == m] for m in names}
    notes: list[str] = []
    counts = _load_counts(kept, len(by_run.iloc[0]), notes)
    settings = {"resamples": resamples, "seed": seed, "level": level, "unit": unit}
    figures = {m: _figures(per_class, m, runs_of[m], counts, settings, notes) for m in names}
    for m in names:
        if len(runs_of[m]) == 1 and figures[m].miou_ci is not None:
            notes.append(f"{m}: one seed: intervals over images only, no significance across seeds")
    bottom_names = bottom_classes(per_class, reference, FRACTION)
    all_classes = list(by_run.iloc[0])
    floor = len(all_classes) * 2 / (resamples + 1)  # Holm's smallest corrected p (module docs)
    if counts and floor >= alpha:
        notes.append(f"{resamples} resamples: Holm over {len(all_classes)} classes cannot go below {floor:.2g}, so "
                     "no class can be marked; raise --resamples")  # fmt: skip
    inputs = (per_class, runs_of, counts, figures, [all_classes.index(name) for name in bottom_names])
    deltas = {m: _delta(inputs, m, reference, notes, alpha, settings) for m in names if m != reference}
    top = max(names, key=lambda m: (np.nan_to_num(figures[m].miou, nan=-np.inf), -names.index(m)))
    versus_top = {
        m: deltas[m] if top == reference else _delta(inputs, m, top, [], alpha, settings) for m in names if m != top
    }
    groups_of = {top: TOP_GROUP, **{m: _group(d) for m, d in versus_top.items()}}
    better = {m: prob_better(figures[m].miou_by_seed, figures[reference].miou_by_seed) for m in deltas}
    return Comparison(
        runs=kept, left_out=left_out, per_class=per_class, reference=reference, methods=names,
        classes=all_classes, pixel_frequency=pixel_frequency(per_class), figures=figures, deltas=deltas,
        top=top, versus_top=versus_top, groups=groups_of, prob_better=better,
        fairness=fairness_table(per_class, reference, FRACTION), bottom_classes=bottom_names, fraction=FRACTION,
        notes=list(dict.fromkeys(notes)), resamples=resamples,
        seed=seed, level=level, alpha=alpha, unit=unit,
    )  # fmt: skip
