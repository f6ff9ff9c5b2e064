"""`tailseg.analysis` and the `WandbMedia` callback: loading runs, the papers' figures and tables, predictions."""

from __future__ import annotations

import json
import math
import time
import types
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from tailseg import analysis as ta  # noqa: E402
from tailseg.analysis import wandb_offline  # noqa: E402
from tailseg.analysis.predictions import palette_for  # noqa: E402
from tailseg.callbacks.wandb_media import WandbMedia  # noqa: E402
from tailseg.metrics import fairness_report, worst_k_to_match  # noqa: E402

CLASSES = ["road", "car", "rider", "bus", "pole", "sky"]
FREQ = {"road": 0.5, "car": 0.2, "rider": 0.01, "bus": 0.0, "pole": 0.07, "sky": 0.22}
BASE = [90.0, 70.0, 0.0, None, 30.0, 80.0]
LMP_SEEDS = {1: [90.0, 72.0, 10.0, 5.0, 34.0, 80.0], 2: [92.0, 70.0, 20.0, None, 36.0, 82.0]}


def write_report(folder: Path, iou, seed: int, step: int = 100, **extra) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "stage": "fit", "per_class_iou": dict(zip(CLASSES, iou, strict=True)), "class_frequency": FREQ,
        "config": {"seed_everything": seed, "model": {"class_names": CLASSES}}, "run_dir": str(folder),
        "global_step": step, **extra,
    }  # fmt: skip
    (folder / "report.json").write_text(json.dumps(report))
    return report


def write_csv(folder: Path, rows: list[dict]) -> Path:
    """A Lightning-style metrics.csv: columns sorted by name, empty cells where a row has no value."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).reindex(columns=sorted({k for r in rows for k in r})).to_csv(folder / "metrics.csv", index=False)
    return folder / "metrics.csv"


@pytest.fixture
def demo_runs(tmp_path) -> Path:
    """runs/base/version_0 (+ the --report_path copy runs/base/report.json), runs/lmp/version_{0,1} (two seeds)."""
    root = tmp_path / "runs"
    report = write_report(root / "base" / "version_0", BASE, seed=0)
    (root / "base" / "report.json").write_text(json.dumps(report))
    for version, (seed, iou) in enumerate(LMP_SEEDS.items()):
        write_report(root / "lmp" / f"version_{version}", iou, seed=seed, step=120)
    return root


def values(iou):
    return np.array([np.nan if v is None else v for v in iou], dtype=np.float64)


# ---------------------------------------------------------------- loading


def test_per_class_from_a_runs_folder_counts_every_run_once(demo_runs):
    frame = ta.load_per_class(demo_runs)
    assert list(frame.columns) == ["run", "method", "seed", "class", "iou", "pixel_frequency", "step"]
    assert len(frame) == 3 * len(CLASSES)  # the report copy in runs/base is not a fourth run
    assert list(dict.fromkeys(frame["run"])) == ["base/version_0", "lmp/version_0", "lmp/version_1"]
    assert ta.methods(frame) == ["base", "lmp"] and ta.classes(frame) == CLASSES
    base = frame[frame["run"] == "base/version_0"]
    assert base["class"].tolist() == CLASSES
    np.testing.assert_array_equal(base["iou"].to_numpy(), values(BASE))
    assert base["pixel_frequency"].tolist() == [FREQ[c] for c in CLASSES]
    assert set(base["seed"]) == {0} and set(base["step"]) == {100}
    lmp1 = frame[frame["run"] == "lmp/version_1"]
    assert set(lmp1["seed"]) == {2} and set(lmp1["step"]) == {120}
    np.testing.assert_array_equal(lmp1["iou"].to_numpy(), values(LMP_SEEDS[2]))


def test_report_copies_stay_with_their_own_runs_in_a_matrix_layout(tmp_path):
    """`tailseg matrix` leaves OUT/<method>/seed<S>/report.json beside version_0/; the copy of one method's report
    (recorded before the folder was moved) must not be given to another method's unfinished run."""
    out = tmp_path / "matrix"
    report = write_report(out / "stce" / "seed0" / "version_0", [90, 70, 0, 20, 30, 80], seed=0)
    report["run_dir"] = "elsewhere/stce/seed0/version_0"  # the runs were moved after they finished
    for folder in (out / "stce" / "seed0", out / "stce" / "seed0" / "version_0"):  # the run's report and its copy
        (folder / "report.json").write_text(json.dumps(report))
    write_csv(out / "median_freq" / "seed0" / "version_0", [{"epoch": 0, "step": 4, "train/loss": 2.5}])
    frame = ta.load_per_class(out)
    assert frame["run"].unique().tolist() == ["stce/seed0/version_0"]
    listed = ta.describe_runs(out).set_index("run")
    assert listed.loc["median_freq/seed0/version_0", "sources"] == "csv"


def test_the_parts_of_a_resumed_run_are_named_as_such_also_through_a_link(tmp_path):
    """A seed stopped and resumed (`--ckpt_path last`) leaves version_0 (no report) and version_1 (the report):
    version_0 is listed as resumed in version_1, not as unfinished; a run whose checkpoint nobody resumed from,
    or one resumed only by another unfinished part, keeps its reason right; names keep the seed folder when the
    folder searched is a link to the runs."""
    out = tmp_path / "board"
    seed1 = out / "stce" / "seed1"
    for part in ("version_0", "version_1", "version_2"):
        write_csv(seed1 / part, [{"epoch": 0, "step": 4, "train/loss": 2.5}])
    (seed1 / "version_1" / "config.yaml").write_text(
        f"ckpt_path: {seed1 / 'version_0' / 'checkpoints' / 'last.ckpt'}\n"
    )
    write_report(
        seed1 / "version_2",
        [90, 70, 0, 20, 30, 80],
        seed=1,
        config={"seed_everything": 1, "ckpt_path": "gone/seed1/version_1/checkpoints/last.ckpt"},
    )  # recorded before the runs were moved
    write_csv(out / "stce" / "seed2" / "version_0", [{"epoch": 0, "step": 4, "train/loss": 2.5}])  # not resumed
    link = tmp_path / "link"
    link.mkdir()
    (link / "stce").symlink_to(out / "stce")
    for root in (out, link):
        listed = ta.describe_runs(root).set_index("run")["status"].to_dict()
        assert listed == {
            "stce/seed1/version_0": "resumed in stce/seed1/version_1",
            "stce/seed1/version_1": "resumed in stce/seed1/version_2",
            "stce/seed1/version_2": "counted",
            "stce/seed2/version_0": "unfinished: no report",
        }


def test_per_class_from_a_report_file_and_a_run_dir_and_named_sources(demo_runs):
    one = ta.load_per_class(demo_runs / "lmp" / "version_0" / "report.json")
    assert one["run"].unique().tolist() == ["lmp/version_0"] and one["method"].unique().tolist() == ["lmp"]
    np.testing.assert_array_equal(one["iou"].to_numpy(), values(LMP_SEEDS[1]))
    run_dir = ta.load_per_class(demo_runs / "base" / "version_0")
    assert run_dir["run"].unique().tolist() == ["base/version_0"] and len(run_dir) == len(CLASSES)
    copy_only = ta.load_per_class(demo_runs / "base" / "report.json")
    assert copy_only["method"].unique().tolist() == ["base"]
    named = ta.load_per_class([f"MCCE={demo_runs / 'base'}", f"TCE={demo_runs / 'lmp'}"])
    assert ta.methods(named) == ["MCCE", "TCE"] and named["run"].nunique() == 3
    with pytest.raises(FileNotFoundError):
        ta.find_runs(demo_runs / "missing")


def test_per_class_only_from_finished_runs(tmp_path):
    run = tmp_path / "runs" / "focal" / "version_0"
    rows = [{"epoch": 0, "step": 4, "train/loss": 2.5}]
    rows.append(
        {
            "epoch": 0,
            "step": 9,
            **{f"val/iou/{c}": v for c, v in zip(CLASSES, [0.5, 0.25, 0, 0.1, 0.2, 0.9], strict=True)},
        }
    )
    rows.append(
        {
            "epoch": 1,
            "step": 19,
            **{f"val/iou/{c}": v for c, v in zip(CLASSES, [0.6, 0.3, 0.05, math.nan, 0.2, 0.9], strict=True)},
        }
    )
    rows.append({"epoch": 1, "step": 19, "train/loss": 2.0})  # a later row without validation
    write_csv(run, rows)
    (run / "config.yaml").write_text("seed_everything: 7\nmodel:\n  class_names: [" + ", ".join(CLASSES) + "]\n")
    # No report: the run is unfinished, and its mid-training validations are no final numbers to compare.
    assert ta.load_per_class(tmp_path / "runs").empty
    listed = ta.describe_runs(tmp_path / "runs")
    assert listed[["run", "method", "seed", "sources", "status"]].values.tolist() == [
        ["focal/version_0", "focal", 7, "csv", "unfinished: no report"]
    ]
    write_report(run, [60.0, 30.0, 5.0, None, 20.0, 90.0], seed=7)  # what the end of fit writes
    frame = ta.load_per_class(tmp_path / "runs")
    assert frame["run"].unique().tolist() == ["focal/version_0"] and frame["class"].tolist() == CLASSES
    assert ta.describe_runs(tmp_path / "runs")[["stage", "step", "status"]].values.tolist() == [["fit", 100, "counted"]]
    np.testing.assert_allclose(frame["iou"].to_numpy(), [60.0, 30.0, 5.0, np.nan, 20.0, 90.0])


def test_series_from_metrics_csv(tmp_path):
    run = tmp_path / "lmp" / "version_0"
    p0 = {"road": 0.1, "car": 0.3, "rider": 0.6}
    p1 = {"road": 0.2, "car": 0.2, "rider": 0.6}
    write_csv(run, [
        {"epoch": 0, "step": 3, "train/loss": 3.0},
        {"epoch": 0, "step": 4, **{f"sampler/p/{c}": v for c, v in p0.items()}},
        {"epoch": 1, "step": 9, **{f"sampler/p/{c}": v for c, v in p1.items()}, "tce/w/road": 0.5},
    ])  # fmt: skip
    (run / "config.yaml").write_text("seed_everything: 3\nmodel:\n  class_names: [road, car, rider]\n")
    series = ta.load_series(tmp_path / "lmp")
    assert list(series.columns) == ["run", "method", "seed", "step", "key", "value"]
    assert len(series) == 7 and not series["value"].isna().any()
    assert set(series["run"]) == {"lmp/version_0"} and set(series["seed"]) == {3}
    sampler = series[series["key"].str.startswith("sampler/p/")]
    assert list(dict.fromkeys(sampler["key"])) == ["sampler/p/road", "sampler/p/car", "sampler/p/rider"]
    got = {(k, s): v for k, s, v in zip(sampler["key"], sampler["step"], sampler["value"], strict=True)}
    assert got == {
        **{(f"sampler/p/{c}", 4): v for c, v in p0.items()},
        **{(f"sampler/p/{c}", 9): v for c, v in p1.items()},
    }
    tce = series[series["key"] == "tce/w/road"]
    assert tce["step"].tolist() == [9] and tce["value"].tolist() == [0.5]
    only = ta.load_series(tmp_path / "lmp", prefixes="tce/w/")
    assert only["key"].unique().tolist() == ["tce/w/road"]
    table = ta.class_series(series, "sampler/p/", "lmp/version_0")
    assert table.index.tolist() == [4, 9] and table.columns.tolist() == ["road", "car", "rider"]
    assert table.loc[9, "car"] == 0.2


def test_runs_dir_resolves_against_the_repository_root(monkeypatch, tmp_path):
    root = ta.repository_root()
    assert (root / "pyproject.toml").is_file()
    monkeypatch.delenv("TAILSEG_RUNS", raising=False)
    assert ta.resolve_runs_dir() == root / "runs" / "demo"
    monkeypatch.setenv("TAILSEG_RUNS", "runs/other")
    monkeypatch.chdir(tmp_path)
    assert ta.resolve_runs_dir() == root / "runs" / "other"
    assert ta.resolve_runs_dir(str(tmp_path)) == tmp_path


# ---------------------------------------------------------------- figures and tables


def test_gain_figure_points_are_the_iou_differences_at_the_pixel_shares(demo_runs):
    frame = ta.load_per_class(demo_runs)
    figure = ta.gain_figure(frame, "lmp", reference="base")
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    (series,) = [c for c in ax.collections if c.get_label() == "lmp − base"]
    lmp_mean = np.nanmean([values(v) for v in LMP_SEEDS.values()], axis=0)
    gain = lmp_mean - values(BASE)
    shown = [i for i, c in enumerate(CLASSES) if not np.isnan(gain[i]) and FREQ[c] > 0]  # bus: no base IoU, 0 share
    shown.sort(key=lambda i: FREQ[CLASSES[i]])  # rarest first
    np.testing.assert_allclose(series.get_offsets()[:, 0], [FREQ[CLASSES[i]] for i in shown])
    np.testing.assert_allclose(series.get_offsets()[:, 1], gain[shown])
    assert [t.get_text() for t in ax.texts] == [CLASSES[i] for i in shown]
    assert "bus" in ax.get_title()
    table = ta.gain_table(frame, "lmp")
    assert table.loc["rider", "gain"] == pytest.approx(15.0)
    assert table.loc["rider", "gain_std"] == pytest.approx(np.std([10.0, 20.0], ddof=1))
    assert math.isnan(table.loc["bus", "gain"])  # no base IoU
    assert table.loc["road", "gain_std"] == pytest.approx(np.std([0.0, 2.0], ddof=1))


def test_gain_figure_of_many_methods_keeps_its_legend_off_the_points(demo_runs):
    """Beyond `LEGEND_INSIDE` methods the legend stands right of the axes (a board of 20 hid its points with it)."""
    from tailseg.analysis.gains import LEGEND_INSIDE

    for k in range(LEGEND_INSIDE + 1):
        write_report(demo_runs / f"m{k}" / "version_0", [None if v is None else v + k for v in BASE], seed=0)
    frame = ta.load_per_class(demo_runs)
    many = ta.gain_figure(frame, reference="base")
    few = ta.gain_figure(frame, ["lmp", "m0"], reference="base")
    for figure, outside in ((many, True), (few, False)):
        figure.canvas.draw()  # constrained layout places the axes and the legend
        ax = figure.axes[0]
        legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert len(ax.get_legend().get_texts()) == (len(ta.methods(frame)) - 1 if outside else 2)
        assert (legend.x0 >= axes_box.x1) == outside
        assert legend.x1 <= figure.bbox.x1 + 1  # and within the figure


def test_sorted_iou_table_order_and_groups(demo_runs):
    frame = ta.load_per_class(demo_runs)
    table = ta.sorted_iou_table(frame, "base")
    # base IoU: road 90, car 70, rider 0, bus n/a, pole 30, sky 80 -> lowest first, no IoU last
    assert table["class"].tolist() == ["rider", "pole", "car", "sky", "road", "bus"]
    assert table.index.tolist() == [1, 2, 3, 4, 5, 6]
    n = math.ceil(0.25 * 5)  # 5 classes have a base IoU
    assert table.attrs["group_size"] == n == 2
    assert table.loc[table["bottom"], "class"].tolist() == ["rider", "pole"]
    assert table.loc[table["top"], "class"].tolist() == ["sky", "road"]
    assert table.loc[1, "lmp"] == pytest.approx(15.0) and table.loc[6, "lmp"] == pytest.approx(5.0)
    figure = ta.sorted_iou_figure(frame, "base")
    (bars,) = [c for c in figure.axes[0].containers if c.get_label() == "lmp"]
    np.testing.assert_allclose([b.get_height() for b in bars], table["lmp"].to_numpy())
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == table["class"].tolist()


def test_bottom_classes_are_the_sorted_bottom_group(demo_runs):
    frame = ta.load_per_class(demo_runs)
    # base IoU: rider 0, pole 30, car 70, sky 80, road 90 (bus: none) -> ⌈0.25 · 5⌉ = 2, lowest first
    assert ta.bottom_classes(frame, "base") == ["rider", "pole"]
    table = ta.sorted_iou_table(frame, "base")
    assert ta.bottom_classes(frame, "base") == table.loc[table["bottom"], "class"].tolist()
    assert ta.bottom_classes(frame, "base", fraction=0.5) == ["rider", "pole", "car"]
    # lmp's seeds have an IoU in both: their sorted_bottom is the mean over exactly these classes
    by_run = ta.fairness_by_run(frame, reference="base").set_index("run")
    for run, iou in ta.iou_by_run(frame, "lmp").iterrows():
        assert by_run.loc[run, "sorted_bottom"] == pytest.approx(iou[["rider", "pole"]].mean())


def test_fairness_table_is_mean_and_std_over_seeds(demo_runs):
    frame = ta.load_per_class(demo_runs)
    table = ta.fairness_table(frame, reference="base")
    reference = values(BASE)  # one base run: its mean is itself
    per_seed = [fairness_report(values(iou), reference=reference) for iou in LMP_SEEDS.values()]
    for metric in ("miou", "worst", "std", "sorted_bottom", "sorted_top", "p25_threshold", "p75_miou"):
        numbers = [r[metric] for r in per_seed]
        assert table.loc["lmp", (metric, "mean")] == pytest.approx(np.mean(numbers))
        assert table.loc["lmp", (metric, "std")] == pytest.approx(np.std(numbers, ddof=1))
    mious = [np.nanmean(values(iou)) for iou in LMP_SEEDS.values()]
    assert table.loc["lmp", ("miou", "mean")] == pytest.approx(np.mean(mious))
    assert table.loc["base", ("miou", "mean")] == pytest.approx(np.nanmean(reference))
    assert math.isnan(table.loc["base", ("miou", "std")])  # a single run
    assert table.attrs["seeds"] == {"base": 1, "lmp": 2}
    text = ta.format_mean_std(table)
    assert text.loc["lmp", "mIoU"] == f"{np.mean(mious):.2f} ± {np.std(mious, ddof=1):.2f}"
    assert text.loc["base", "mIoU"] == f"{np.nanmean(reference):.2f}" and text.loc["lmp", "runs"] == 2


def test_worst_k_table_and_the_comparison_per_class_table(demo_runs):
    frame = ta.load_per_class(demo_runs)
    table = ta.worst_k_table(frame, "base", steps=(3, 5))
    miou = np.mean([np.nanmean(values(v)) for v in LMP_SEEDS.values()])
    assert table.loc["lmp", "miou"] == pytest.approx(miou)
    assert table.loc["lmp", "k@3"] == worst_k_to_match(values(BASE), miou, 3)
    assert table.loc["lmp", "k@5"] == worst_k_to_match(values(BASE), miou, 5) and table.loc["lmp", "classes"] == 5
    comparison = ta.build_comparison(demo_runs)
    assert comparison.figures["lmp"].per_class[comparison.classes.index("rider")] == pytest.approx(15.0)
    per_class = ta.comparison_frames(comparison, sort="frequency")["per_class"]
    assert per_class.index.tolist() == ["bus", "rider", "pole", "car", "sky", "road"]  # rarest first
    assert per_class.loc["rider", "lmp"] == f"15.00 ± {np.std([10.0, 20.0], ddof=1):.2f}"  # no per-image counts
    assert per_class.loc["bus", "base"] == "n/a" and per_class.loc["rider", "pixels %"] == "1.000"


def test_evolution_figure_draws_one_line_per_class(tmp_path):
    rows = [{"epoch": e, "step": s, "sampler/p/road": a, "sampler/p/car": 1 - a}
            for e, (s, a) in enumerate([(4, 0.5), (9, 0.4), (14, 0.3)])]  # fmt: skip
    write_csv(tmp_path / "lmp" / "version_0", rows)
    write_csv(tmp_path / "base" / "version_0", [{"epoch": 0, "step": 4, "train/loss": 1.0}])
    series = ta.load_series(tmp_path)
    assert ta.runs_with(series, "sampler/p/") == ["lmp/version_0"] and ta.runs_with(series, "tce/w/") == []
    figure = ta.evolution_figure(series, "sampler/p/")
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert set(lines) == {"road", "car"}
    np.testing.assert_array_equal(lines["road"].get_xdata(), [4, 9, 14])
    np.testing.assert_allclose(lines["car"].get_ydata(), [0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="tce/w/"):
        ta.evolution_figure(series, "tce/w/")


# ---------------------------------------------------------------- predictions


def test_confusion_table_by_hand():
    # truth / prediction over 3 classes, 255 = void (left out)
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = np.array([[0, 1, 1, 1], [1, 2, 0, 0]])
    item = ta.Prediction(0, "a", np.zeros((2, 4, 3), np.uint8), truth, pred)
    counts = ta.confusion_table([item], ["x", "y", "z"], normalize=False).to_numpy()
    np.testing.assert_array_equal(counts, [[2, 1, 0], [0, 2, 0], [0, 1, 1]])
    table = ta.confusion_table([item, item], ["x", "y", "z", "w"])
    expected = np.array([[2 / 3, 1 / 3, 0, 0], [0, 1, 0, 0], [0, 0.5, 0.5, 0]])
    np.testing.assert_allclose(table.to_numpy()[:3], expected)
    np.testing.assert_allclose(table.to_numpy()[:3].sum(axis=1), 1.0)
    assert np.isnan(table.to_numpy()[3]).all()  # no "w" pixels in the truth
    assert table.index.name == "truth" and table.columns.tolist() == ["x", "y", "z", "w"]


class ConstantModel(nn.Module):
    """Predicts a fixed label map for every image (through `predict_logits`, like `SegmentationModel`)."""

    def __init__(self, labels: np.ndarray, num_classes: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.labels = torch.as_tensor(labels)
        self.class_names, self.ignore_index, self.num_classes = ["x", "y", "z"][:num_classes], 255, num_classes
        self.latest_iou: dict = {}
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = nn.functional.one_hot(self.labels.long(), self.num_classes).permute(2, 0, 1).float()
        return logits[None].expand(len(images), -1, -1, -1) + 0 * self.weight


class MaskSet(torch.utils.data.Dataset):
    """Evaluation-style samples: normalised image tensors, fixed masks."""

    def __init__(self, masks: list[np.ndarray], draws_random: bool = False) -> None:
        self.masks, self.draws_random = masks, draws_random

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> dict:
        h, w = self.masks[index].shape
        image = torch.linspace(-1, 1, 3 * h * w).reshape(3, h, w)
        if self.draws_random:  # like TransformedDataset, which draws an augmentation seed for a bare index
            torch.randint(0, 10, ())
        return {"image": image, "mask": torch.as_tensor(self.masks[index]), "name": f"img{index}", "index": index}


def test_confusion_matrix_and_overlays_from_a_model_and_a_data_set():
    pred = np.array([[0, 1], [2, 2]])
    masks = [np.array([[0, 1], [1, 2]]), np.array([[0, 0], [255, 2]]), np.array([[1, 1], [1, 1]])]
    model = ConstantModel(pred)
    table = ta.confusion_matrix(model, MaskSet(masks), [0, 1])  # image 2 is not used
    # counts: image 0 -> (0,0) (1,1) (1,2) (2,2); image 1 -> (0,0) (0,1) (2,2)
    np.testing.assert_allclose(table.to_numpy(), [[2 / 3, 1 / 3, 0], [0, 0.5, 0.5], [0, 0, 1]])
    assert model.calls == 2
    figure = ta.overlay_figure(model, MaskSet(masks), [0, 2])
    axes = [ax for ax in figure.axes if ax.get_images()]
    assert len(axes) == 6  # 2 images x (image, truth, prediction)
    image = axes[0].get_images()[0].get_array()
    assert image.shape == (2, 2, 3) and image.dtype == np.uint8
    palette = palette_for(None, 3)
    truth_panel = axes[4].get_images()[0].get_array()  # image 2's truth: class 1 everywhere
    expected = 0.45 * axes[3].get_images()[0].get_array() + 0.55 * palette[1]
    np.testing.assert_allclose(truth_panel, expected, atol=1)
    assert {t.get_text() for t in figure.legends[0].get_texts()} == {"x", "y", "z"}


# ---------------------------------------------------------------- W&B


def _trainer(loggers, dataset, step: int = 7, sanity: bool = False):
    datamodule = types.SimpleNamespace(val_dataloader=lambda: torch.utils.data.DataLoader(dataset, batch_size=2))
    return types.SimpleNamespace(loggers=loggers, sanity_checking=sanity, is_global_zero=True, global_step=step,
                                 datamodule=datamodule)  # fmt: skip


def test_wandb_media_does_nothing_without_a_wandb_logger(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    model = ConstantModel(np.zeros((2, 2), np.int64))
    model.latest_iou["val"] = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    callback = WandbMedia(num_images=2)
    callback.on_validation_end(_trainer([CSVLogger(tmp_path)], MaskSet([np.zeros((2, 2), np.int64)] * 3)), model)
    callback.on_validation_end(_trainer([], MaskSet([np.zeros((2, 2), np.int64)] * 3)), model)
    assert model.calls == 0 and callback._samples is None
    with pytest.raises(ValueError):
        WandbMedia(every_n_validations=0)


def _wait_for(condition, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError("W&B did not write its log in time")


def test_wandb_media_logs_tables_fairness_and_masks_offline(tmp_path, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = tmp_path / "base" / "version_0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed_everything: 5\n")
    logger = WandbLogger(save_dir=str(run_dir), offline=True, project="tailseg-test", name="base-version_0")
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    masks = [np.array([[0, 1, 2], [2, 255, 0]]), np.array([[1, 1, 1], [0, 0, 0]]), np.zeros((2, 3), np.int64)]
    model = ConstantModel(pred)
    iou = torch.tensor([0.5, math.nan, 0.25], dtype=torch.float64)
    model.latest_iou["val"] = iou
    callback = WandbMedia(num_images=2, every_n_validations=2)
    try:
        callback.on_validation_end(_trainer([logger], MaskSet(masks), sanity=True), model)  # sanity check: skipped
        assert model.calls == 0
        state = torch.get_rng_state()
        for step in (7, 14, 21):  # validations 1 and 3 are logged
            callback.on_validation_end(_trainer([logger], MaskSet(masks, draws_random=True), step=step), model)
        assert model.calls == 4  # 2 images per logged validation
        assert torch.equal(torch.get_rng_state(), state)  # training's random stream is untouched
        logger.log_metrics({"val/iou/x": 0.5, "val/iou/y": math.nan, "val/iou/z": 0.25, "sampler/p/x": 0.2}, step=21)
        folder = Path(logger.experiment.dir).parent
    finally:
        logger.experiment.finish()
    rows = _wait_for(lambda: (h := wandb_offline.read_history(folder)) and "sampler/p/x" in h[-1] and h)
    media = [r for r in rows if "val/predictions" in r]
    assert [r["trainer/global_step"] for r in media] == [7, 21]
    row = media[-1]
    expected = fairness_report(iou.numpy() * 100)
    for key, value in expected.items():
        assert row[f"val/fairness/{key}"] == pytest.approx(value)
    assert "val/iou_chart_table" in row and row["val/iou_table"]["_type"] == "table-file"
    table = json.loads((folder / "files" / row["val/iou_table"]["path"]).read_text())
    assert table["columns"] == ["class", "iou"] and table["data"] == [["x", 50.0], ["y", None], ["z", 25.0]]
    images = row["val/predictions"]
    assert images["captions"] == ["img0", "img1"] and images["count"] == 2
    masks_logged = images["all_masks"][0]
    truth = np.asarray(Image.open(folder / "files" / masks_logged["ground_truth"]["path"]))
    predicted = np.asarray(Image.open(folder / "files" / masks_logged["predictions"]["path"]))
    np.testing.assert_array_equal(truth, masks[0])
    np.testing.assert_array_equal(predicted, pred)
    # The same offline folder read back by the loaders (W&B only: no report, no metrics.csv): its series; no
    # per-class numbers, which come from finished runs' reports only.
    assert ta.load_per_class(run_dir / "wandb").empty
    series = ta.load_series(run_dir)
    assert series[["key", "value"]].values.tolist() == [["sampler/p/x", 0.2]] and series["step"].tolist() == [21]
