"""The comparison built once from report folders: intervals, paired Δ and marks, notes, the leaderboard group."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy.stats import ttest_rel

from tailseg.analysis.comparison import BELOW, build_comparison
from tailseg.cli import main
from tailseg.compare import comparison_tables, render
from tailseg.metrics.bootstrap import iou_from_counts, mean_iou

CLASSES = ["road", "car", "rider", "sky"]
FREQ = {"road": 0.5, "car": 0.2, "rider": 0.05, "sky": 0.25}
IMAGES = [f"img{i:02d}" for i in range(30)]


def counts(seed: int, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image counts on IMAGES: union fixed by the image, intersection = quality × union with per-seed noise."""
    union = np.random.default_rng(100).integers(200, 1000, size=(len(IMAGES), len(quality)))
    noise = np.random.default_rng(seed).normal(0, 0.02, size=union.shape)
    return (union * np.clip(quality + noise, 0, 1)).astype(np.int64), union


def write_report(
    folder, seed: int, per_image=None, iou=None, images=IMAGES, groups=None, extra=None, classes=CLASSES, freq=FREQ
):
    folder.mkdir(parents=True, exist_ok=True)
    report = {"class_frequency": freq, "config": {"seed_everything": seed}, "run_dir": str(folder), **(extra or {})}
    if per_image is not None:
        intersection, union = per_image
        iou = 100.0 * iou_from_counts(intersection.sum(0), union.sum(0))
        report["per_image"] = {"names": images, "groups": groups, "intersection": intersection.tolist(),
                               "union": union.tolist()}  # fmt: skip
    report["per_class_iou"] = dict(zip(classes, [float(v) for v in iou], strict=True))
    report["miou"] = float(np.mean(iou))
    (folder / "report.json").write_text(json.dumps(report))
    return folder


@pytest.fixture()
def runs(tmp_path):
    """base and lmp × 3 seeds with per-image counts (lmp far better on rider, equal on road), and an older lmp
    report without them under another method name."""
    base = np.array([0.9, 0.7, 0.2, 0.8])
    better = base + np.array([0.0, 0.01, 0.3, 0.0])
    for seed in range(3):
        write_report(tmp_path / "base" / f"seed{seed}", seed, counts(seed, base))
        write_report(tmp_path / "lmp" / f"seed{seed}", seed, counts(10 + seed, better))
    write_report(tmp_path / "old" / "version_0", 0, iou=[88.0, 69.0, 30.0, 79.0])
    return tmp_path


def test_build_once_intervals_deltas_and_groups(runs):
    c = build_comparison(runs, resamples=300, seed=0)
    assert c.reference == "base" and c.methods == ["base", "lmp", "old"] and c.top == "lmp"
    lmp, old = c.figures["lmp"], c.figures["old"]
    assert lmp.seeds == [0, 1, 2] and lmp.miou_ci[0] < lmp.miou < lmp.miou_ci[1]
    assert lmp.per_image_miou is not None and lmp.per_image_miou_ci[0] < lmp.per_image_miou_ci[1]
    assert old.miou_ci is None and old.per_class_ci is None and old.per_image_miou is None
    rider = c.classes.index("rider")
    d = c.deltas["lmp"]
    assert d.pairs == 3 and d.per_class_ci[0, rider] > 0 and d.significant[rider] and d.miou_significant
    assert not d.significant[c.classes.index("road")]
    assert d.p_holm[rider] >= d.p[rider]
    assert c.deltas["old"].pairs == 0 and c.deltas["old"].per_class_ci is None  # no counts: no interval
    assert c.prob_better["lmp"] == (1.0, None)
    assert c.prob_better["old"] == (None, "1 seed pair; needs 3")
    assert c.groups == {"lmp": "1", "base": "below", "old": None}
    assert any("old/version_0: no per-image counts (older report): intervals unavailable" in n for n in c.notes)


def test_point_figures_match_the_reports(runs):
    c = build_comparison(runs, resamples=50)
    reports = [json.loads((runs / "base" / f"seed{s}" / "report.json").read_text()) for s in range(3)]
    mious = [float(mean_iou(np.array(list(r["per_class_iou"].values())))) for r in reports]
    assert c.figures["base"].miou == pytest.approx(np.mean(mious))
    assert c.figures["base"].miou_by_seed == pytest.approx(dict(enumerate(mious)))


def test_rendered_tables_show_intervals_marks_notes_and_group(runs):
    c = build_comparison(runs, resamples=300)
    per_class, gains, summary, board = comparison_tables(c, sort="frequency")
    assert [row[0] for row in per_class[2]] == ["rider", "car", "sky", "road"]
    assert per_class[1] == ["class", "pixels %", "base", "lmp", "old"]
    rider = per_class[2][0]
    assert rider[1] == "5.000" and " [" in rider[3] and rider[3].endswith("]") and rider[4] == "30.00"
    assert gains[1] == ["class", "lmp", "old"]
    assert gains[2][0][1].startswith("+") and gains[2][0][1].endswith("]*") and not gains[2][0][2].endswith("*")
    assert gains[2][-1][0] == "mIoU" and gains[2][-1][1].endswith("*")
    assert "Holm-corrected p < 0.05" in gains[3][0]
    header = board[1]
    assert header[:8] == ["method", "seeds", "mIoU", "mIoU − base", "per-image mIoU", "mIoU − top (lmp)", "group",
                          "P(> base)"]  # fmt: skip
    rows = {row[0]: row for row in board[2]}
    assert [row[0] for row in board[2]][0] == "lmp" and rows["lmp"][6] == "1" and rows["base"][6] == "below"
    assert rows["lmp"][7] == "1.00" and rows["old"][7] == "n/a (1 seed pair; needs 3)" and rows["old"][6] == "n/a"
    assert rows["old"][4] == "n/a" and "[" not in rows["old"][2]
    text = render(c, "markdown", "frequency")
    assert "- Note: old/version_0: no per-image counts (older report): intervals unavailable" in text
    assert "group 1: lmp" in text
    assert render(c, "csv").startswith("# Per-class IoU")


def test_one_seed_gets_no_mark_and_a_note(tmp_path):
    base = np.array([0.9, 0.7, 0.2, 0.8])
    write_report(tmp_path / "base", 0, counts(0, base))
    write_report(tmp_path / "lmp", 0, counts(1, base + np.array([0.0, 0.0, 0.3, 0.0])))
    c = build_comparison(tmp_path, resamples=200)
    d = c.deltas["lmp"]
    assert d.pairs == 1 and d.per_class_ci[0, CLASSES.index("rider")] > 0  # clearly better over images...
    assert not d.significant.any() and not d.miou_significant  # ...but no mark across seeds
    assert c.bottom_classes == ["rider"] and d.bottom_ci[0] > 0 and d.bottom_p < 0.05  # likewise Δ bottom 25%
    assert not d.bottom_significant
    assert "lmp: one seed: intervals over images only, no significance across seeds" in c.notes
    assert "lmp vs base: one seed pair: intervals over images only, no significance across seeds" in c.notes
    assert "*" not in "".join(cell for row in comparison_tables(c)[1][2] for cell in row)
    header, rows, under = comparison_tables(c)[-1][1:]
    assert header[-1] == "Δ bottom 25% vs base" and "*" not in "".join(cell for row in rows for cell in row)
    low, high = d.bottom_ci
    assert {row[0]: row for row in rows}["lmp"][-1] == f"{d.bottom:+.1f} [{low:.1f}, {high:.1f}]"
    assert any(line.startswith("Δ bottom 25% vs base: mean IoU over base's worst 25% of the classes (rider;")
               for line in under)  # fmt: skip


def test_identical_methods_tie(tmp_path):
    same = np.array([0.9, 0.7, 0.2, 0.8])
    for seed in range(3):
        write_report(tmp_path / "base" / f"seed{seed}", seed, counts(seed, same))
        write_report(tmp_path / "copy" / f"seed{seed}", seed, counts(seed, same))
    c = build_comparison(tmp_path, resamples=100)
    d = c.deltas["copy"]
    np.testing.assert_array_equal(d.per_class_ci, 0.0)
    assert (d.p == 1.0).all() and not d.significant.any() and c.groups == {"base": "1", "copy": "1"}


def test_cli_compare_with_intervals(runs, capsys):
    main(["compare", str(runs), "--resamples", "100", "--output", str(runs / "comparison.md")])
    printed = capsys.readouterr().out
    assert "### Gain over base (IoU points)" in printed and "| group |" in printed
    assert (runs / "comparison.md").read_text() + "\n" == printed and "- Note: " in printed


def test_cli_compare_ci_unit_group_without_groups_is_refused_by_name(runs, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(runs), "--resamples", "50", "--ci_unit", "group"])
    assert stop.value.code == 2
    assert "tailseg compare: error: unit group: the evaluated images have no groups" in capsys.readouterr().err


def test_gain_figure_and_frames_from_the_comparison(runs):
    from tailseg.analysis import comparison_frames, gain_figure

    c = build_comparison(runs, resamples=100)
    figure = gain_figure(c, method="lmp")
    series = figure.axes[0].collections
    points = next(s for s in series if s.get_label() == "lmp − base").get_offsets()
    rider = c.classes.index("rider")
    assert points[0].tolist() == pytest.approx([0.05, c.deltas["lmp"].per_class[rider]])  # rarest first
    frames = comparison_frames(c, sort="frequency")
    assert list(frames) == ["per_class", "gains", "summary", "leaderboard"]
    board = frames["leaderboard"]
    assert board.loc["lmp", "group"] == "1" and board.attrs["notes"][0].startswith("group 1: lmp")


def test_partial_counts_and_unpaired_seeds_are_noted(tmp_path):
    base = np.array([0.9, 0.7, 0.2, 0.8])
    for seed in range(3):
        write_report(tmp_path / "base" / f"seed{seed}", seed, counts(seed, base))
    write_report(tmp_path / "lmp" / "seed0", 0, counts(10, base))
    write_report(tmp_path / "lmp" / "seed1", 1, counts(11, base))
    write_report(tmp_path / "lmp" / "seed2", 2, iou=[90.0, 70.0, 20.0, 80.0])  # an older report
    write_report(tmp_path / "tce" / "seed7", 7, counts(17, base))
    other = [name.upper() for name in IMAGES]  # another split
    for seed in range(3):
        write_report(tmp_path / "test" / f"seed{seed}", seed, counts(20 + seed, base), images=other)
    c = build_comparison(tmp_path, resamples=50)
    assert c.figures["test"].miou_ci is not None and c.deltas["test"].miou_ci is None
    assert "test vs base: evaluated on different images: Δ of the seed means, without an interval" in c.notes
    assert c.deltas["lmp"].pairs == 2 and c.figures["lmp"].miou_ci is None  # not every seed has counts
    assert "lmp vs base: Δ and its interval from the 2 of 3 seed pairs with per-image counts on both sides" in c.notes
    assert c.deltas["tce"].pairs == 0 and c.deltas["tce"].miou_ci is None
    assert "tce vs base: no seed in common: Δ of the seed means, without an interval" in c.notes


def test_groups_of_images_are_resampled_only_on_request_and_marked_only_with_ten(tmp_path):
    """Images carry their video: the default still resamples images; unit "group" resamples the 3 videos, shows
    the intervals and marks nothing (fewer than 10 groups), even where the image bootstrap marks the gain."""
    base = np.array([0.9, 0.7, 0.2, 0.8])
    videos = [f"video{i % 3}" for i in range(len(IMAGES))]
    for seed in range(3):
        write_report(tmp_path / "base" / f"seed{seed}", seed, counts(seed, base), groups=videos)
        write_report(tmp_path / "lmp" / f"seed{seed}", seed, counts(10 + seed, base + np.array([0, 0, 0.3, 0])),
                     groups=videos)  # fmt: skip
    by_image = build_comparison(tmp_path, resamples=400)
    assert by_image.unit == "image" and not any("groups of images" in note for note in by_image.notes)
    assert by_image.deltas["lmp"].miou_significant and by_image.groups["base"] == BELOW
    by_group = build_comparison(tmp_path, resamples=400, unit="group")
    assert "intervals resample the 3 groups of images (videos / cities)" in by_group.notes
    assert "only 3 groups of images: the group intervals are shown, no significance is marked (needs 10)" in (
        by_group.notes
    )
    d = by_group.deltas["lmp"]
    assert d.miou_ci is not None and d.miou_ci[0] > 0 and by_group.figures["lmp"].miou_ci is not None
    assert not d.miou_significant and not d.significant.any() and not d.bottom_significant
    assert by_group.groups["base"] is None and not d.markable  # the group is a significance call: unknown too
    assert not np.array_equal(d.miou_ci, by_image.deltas["lmp"].miou_ci)


def test_unit_group_is_refused_without_groups_and_an_unknown_unit_by_name(tmp_path):
    base = np.array([0.9, 0.7, 0.2, 0.8])
    for seed in range(3):
        write_report(tmp_path / "base" / f"seed{seed}", seed, counts(seed, base))
        write_report(tmp_path / "lmp" / f"seed{seed}", seed, counts(10 + seed, base))
    with pytest.raises(ValueError, match="unit group: the evaluated images have no groups"):
        build_comparison(tmp_path, resamples=50, unit="group")
    with pytest.raises(ValueError, match="unit must be one of image, group, got 'video'"):
        build_comparison(tmp_path, resamples=50, unit="video")


def test_two_seed_pairs_are_a_pilot_without_marks_or_group(tmp_path):
    """A gain the image bootstrap finds with 3 seed pairs is not marked with 2: the intervals are shown, the note
    says why, and the leaderboard's group is unknown."""
    base = np.array([0.9, 0.7, 0.2, 0.8])
    better = base + np.array([0.0, 0.0, 0.3, 0.0])
    for seed in range(3):
        write_report(tmp_path / "base" / f"seed{seed}", seed, counts(seed, base))
        write_report(tmp_path / "lmp" / f"seed{seed}", seed, counts(10 + seed, better))
    three = build_comparison(tmp_path, resamples=400)
    assert three.deltas["lmp"].miou_significant and three.deltas["lmp"].significant.any()
    shutil.rmtree(tmp_path / "lmp" / "seed2")
    shutil.rmtree(tmp_path / "base" / "seed2")
    two = build_comparison(tmp_path, resamples=400)
    d = two.deltas["lmp"]
    assert d.pairs == 2 and d.miou_ci[0] > 0
    assert not d.miou_significant and not d.significant.any() and not d.bottom_significant
    assert "lmp vs base: 2 seed pairs: a pilot, no significance marked (needs 3)" in two.notes
    assert two.groups == {"lmp": "1", "base": None}
    assert "*" not in "".join(cell for row in comparison_tables(two)[1][2] for cell in row)


def test_seeds_on_one_side_only_are_left_out_of_the_paired_delta_with_a_note(tmp_path):
    base = np.array([0.9, 0.7, 0.2, 0.8])
    for seed in (0, 1, 2):
        write_report(tmp_path / "base" / f"seed{seed}", seed, counts(seed, base))
    for seed in (1, 2, 5):
        write_report(tmp_path / "lmp" / f"seed{seed}", seed, counts(10 + seed, base))
    c = build_comparison(tmp_path, resamples=50)
    assert c.deltas["lmp"].pairs == 2 and c.figures["lmp"].seeds == [1, 2, 5]
    assert "lmp vs base: Δ from the 2 seeds both have (seeds 1, 2); lmp has 3, base 3" in c.notes


def test_too_few_resamples_for_any_class_mark_are_noted(tmp_path):
    """Holm over 4 classes with R resamples cannot go below 4 · 2 / (R + 1): 0.16 at R = 50, 0.004 at 2000."""
    base = np.array([0.9, 0.7, 0.2, 0.8])
    for seed in range(3):
        write_report(tmp_path / "base" / f"seed{seed}", seed, counts(seed, base))
        write_report(tmp_path / "lmp" / f"seed{seed}", seed, counts(10 + seed, base))
    few = build_comparison(tmp_path, resamples=50)
    assert "50 resamples: Holm over 4 classes cannot go below 0.16, so no class can be marked; raise --resamples" in (
        few.notes
    )
    assert not any("cannot go below" in note for note in build_comparison(tmp_path, resamples=2000).notes)


def last_k(miou: float, per_class: dict | None = None, k: int = 2) -> dict:
    """The report fields of the mean of the last k validations (`tailseg.callbacks.report`)."""
    per_class = per_class or dict.fromkeys(CLASSES, miou)
    return {"miou_last_k": miou, "per_class_iou_last_k": per_class, "last_k": {"k": k, "steps": [8, 10][-k:]}}


@pytest.fixture()
def last_k_runs(tmp_path):
    """base, lmp and tce × 3 seeds with per-image counts and `miou_last_k`: lmp − base = 1, 2, 3 over the seeds (a
    t-test p of 0.07: no mark), tce − base = 5.0, 5.1, 4.9 (marked); rider's IoU is null in base's seed 0 and sky's
    in every seed of base."""
    base, better = np.array([0.9, 0.7, 0.2, 0.8]), np.array([0.9, 0.75, 0.4, 0.8])
    for seed in range(3):
        classes = {"road": 90.0 + seed, "car": 70.0, "rider": None if seed == 0 else 20.0 + seed, "sky": None}
        write_report(tmp_path / "base" / f"seed{seed}", seed, counts(seed, base), extra=last_k(50.0 + seed, classes))
        write_report(tmp_path / "lmp" / f"seed{seed}", seed, counts(10 + seed, better),
                     extra=last_k(51.0 + 2 * seed))  # fmt: skip
        write_report(tmp_path / "tce" / f"seed{seed}", seed, counts(20 + seed, base),
                     extra=last_k(55.0 + seed + [0.0, 0.1, -0.1][seed]))  # fmt: skip
    return tmp_path


def test_last_k_figures_are_the_means_over_seeds(last_k_runs):
    c = build_comparison(last_k_runs, resamples=50)
    base, lmp = c.figures["base"], c.figures["lmp"]
    assert base.miou_last_k == pytest.approx(51.0) and base.miou_last_k_std == pytest.approx(1.0)
    assert base.miou_last_k_by_seed == {0: 50.0, 1: 51.0, 2: 52.0} and base.last_k == 2
    np.testing.assert_allclose(base.per_class_last_k, [91.0, 70.0, 21.5, np.nan])  # nulls left out; none: NaN
    assert lmp.miou_last_k == pytest.approx(53.0) and lmp.miou_last_k_std == pytest.approx(2.0)
    np.testing.assert_allclose(lmp.per_class_last_k, [53.0] * 4)
    assert lmp.miou_last_k != pytest.approx(lmp.miou)  # the figure of the reports, not the final mIoU


def test_last_k_delta_is_a_paired_t_test_over_the_seeds(last_k_runs):
    c = build_comparison(last_k_runs, resamples=50)
    d = c.deltas["lmp"]
    # differences 1, 2, 3: mean 2, std 1, t(0.975, df 2) = 4.302653
    assert d.miou_last_k == pytest.approx(2.0) and d.miou_last_k_pairs == 3
    np.testing.assert_allclose(d.miou_last_k_ci, [2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)], rtol=1e-6)
    test = ttest_rel([51.0, 53.0, 55.0], [50.0, 51.0, 52.0])
    interval = test.confidence_interval(0.95)
    np.testing.assert_allclose(d.miou_last_k_ci, [interval.low, interval.high], rtol=1e-9)
    assert d.miou_last_k_p == pytest.approx(test.pvalue) and 0.05 < d.miou_last_k_p < 0.1
    assert not d.miou_last_k_significant
    tce = c.deltas["tce"]
    assert tce.miou_last_k == pytest.approx(5.0) and tce.miou_last_k_p < 0.05 and tce.miou_last_k_significant
    tce_test = ttest_rel([55.0, 56.1, 56.9], [50.0, 51.0, 52.0])
    np.testing.assert_allclose(tce.miou_last_k_ci, list(tce_test.confidence_interval()), rtol=1e-9)
    assert c.top == "lmp" and c.versus_top["base"].miou_last_k == pytest.approx(-2.0)
    assert c.versus_top["tce"].miou_last_k == pytest.approx(3.0)
    level = build_comparison(last_k_runs, resamples=50, level=0.9).deltas["lmp"]
    np.testing.assert_allclose(level.miou_last_k_ci, list(test.confidence_interval(0.9)), rtol=1e-9)


def test_last_k_columns_in_the_leaderboard(last_k_runs):
    c = build_comparison(last_k_runs, resamples=50)
    title, header, rows, under = comparison_tables(c)[-1]
    assert header[:6] == ["method", "seeds", "mIoU", "mIoU − base", "mIoU last 2", "Δ last 2 vs base"]
    rows = {row[0]: row for row in rows}
    low, high = c.deltas["lmp"].miou_last_k_ci
    assert rows["lmp"][4] == "53.00 ± 2.00" and rows["lmp"][5] == f"+2.0 [{low:.1f}, {high:.1f}]"
    assert rows["tce"][5].startswith("+5.0 [") and rows["tce"][5].endswith("]*")
    assert rows["base"][4] == "51.00 ± 1.00" and rows["base"][5] == ""
    assert any("paired t-test over the seed pairs" in line and "over seeds only" in line for line in under)
    assert "| mIoU last 2 | Δ last 2 vs base |" in render(c)
    assert comparison_tables(c)[2][1] == ["metric", "base", "lmp", "tce"]  # the summary is unchanged


def test_last_k_one_pair_missing_seeds_and_other_k(tmp_path):
    base = np.array([0.9, 0.7, 0.2, 0.8])
    write_report(tmp_path / "base", 0, counts(0, base), extra=last_k(50.0))
    write_report(tmp_path / "lmp", 0, counts(1, base), extra=last_k(52.5, k=3))
    write_report(tmp_path / "old" / "seed0", 0, counts(2, base), extra=last_k(40.0))
    write_report(tmp_path / "old" / "seed1", 1, counts(3, base))  # no miou_last_k: the method has no figure
    c = build_comparison(tmp_path, resamples=50)
    d = c.deltas["lmp"]
    assert d.miou_last_k == pytest.approx(2.5) and d.miou_last_k_pairs == 1
    assert d.miou_last_k_ci is None and d.miou_last_k_p is None and not d.miou_last_k_significant
    old = c.figures["old"]
    assert old.miou_last_k is None and old.per_class_last_k is None and old.miou_last_k_by_seed == {0: 40.0}
    assert c.deltas["old"].miou_last_k is None
    header, rows = comparison_tables(c)[-1][1:3]
    assert header[4:6] == ["mIoU last k", "Δ last k vs base"]  # the runs disagree on k
    rows = {row[0]: row for row in rows}
    assert rows["lmp"][4:6] == ["52.50", "+2.50"] and rows["old"][4:6] == ["n/a", "n/a"]


def test_no_last_k_no_column(runs):
    c = build_comparison(runs, resamples=50)
    assert all(f.miou_last_k is None and f.per_class_last_k is None for f in c.figures.values())
    assert c.deltas["lmp"].miou_last_k is None and c.deltas["lmp"].miou_last_k_ci is None
    header, rows, under = comparison_tables(c)[-1][1:]
    assert not any("last" in column for column in header) and len(header) == len(rows[0]) == 13
    assert not any("t-test" in line for line in under) and "last" not in render(c)


SIX = ["road", "car", "rider", "sky", "pole", "sign"]
SIX_FREQ = {"road": 0.4, "car": 0.2, "rider": 0.05, "sky": 0.25, "pole": 0.04, "sign": 0.06}


def test_bottom_delta_by_hand(tmp_path):
    """6 classes: base's worst quarter is ⌈1.5⌉ = 2 classes, pole and rider (pole lowest); lmp gains on both, tce
    (the top mIoU) on sign (not in the set) only; old has no per-image counts."""
    base = np.array([0.9, 0.7, 0.3, 0.8, 0.15, 0.5])
    lmp = base + np.array([0.0, 0.0, 0.2, 0.0, 0.1, 0.0])
    tce = base + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.45])
    made = {"base": [counts(s, base) for s in range(3)], "lmp": [counts(10 + s, lmp) for s in range(3)],
            "tce": [counts(20 + s, tce) for s in range(3)]}  # fmt: skip
    for method, per_seed in made.items():
        for seed, per_image in enumerate(per_seed):
            write_report(tmp_path / method / f"seed{seed}", seed, per_image, classes=SIX, freq=SIX_FREQ)
    old = [[90.0, 70.0, 40.0, 80.0, 30.0, 50.0], [90.0, 70.0, 44.0, 80.0, 20.0, 50.0]]
    for seed, iou in enumerate(old):
        write_report(tmp_path / "old" / f"seed{seed}", seed, iou=iou, classes=SIX, freq=SIX_FREQ)
    c = build_comparison(tmp_path, resamples=300, seed=0)
    assert c.bottom_classes == ["pole", "rider"] and c.fraction == 0.25
    subset = [SIX.index("pole"), SIX.index("rider")]

    def bottom_by_seed(method):
        return [100.0 * np.mean(iou_from_counts(i.sum(0), u.sum(0))[subset]) for i, u in made[method]]

    d = c.deltas["lmp"]
    by_hand = np.mean(np.array(bottom_by_seed("lmp")) - np.array(bottom_by_seed("base")))
    assert d.bottom == pytest.approx(by_hand) and by_hand > 10.0
    assert d.bottom == pytest.approx(np.mean(d.per_class[subset]))  # no absent class: the mean of the per-class Δ
    table = c.fairness  # the summary's "bottom 25% (sorted by reference)" of the same classes
    assert d.bottom == pytest.approx(table.loc["lmp", ("sorted_bottom", "mean")] -
                                     table.loc["base", ("sorted_bottom", "mean")])  # fmt: skip
    assert d.bottom_ci[0] < d.bottom < d.bottom_ci[1] and d.bottom_ci[0] > 0 and d.bottom_significant
    assert d.bottom_p < 0.05 and d.miou_significant
    t = c.deltas["tce"]
    assert t.bottom == pytest.approx(np.mean(np.array(bottom_by_seed("tce")) - np.array(bottom_by_seed("base"))))
    assert abs(t.bottom) < 2.0 and t.miou > 5.0 and t.bottom_ci[0] < 0 < t.bottom_ci[1] and not t.bottom_significant
    o = c.deltas["old"]  # no counts: the difference of the seed means, no interval
    assert o.pairs == 0 and o.bottom_ci is None and o.bottom_p is None and not o.bottom_significant
    assert o.bottom == pytest.approx(np.mean([np.mean([30.0, 40.0]), np.mean([20.0, 44.0])]) -
                                     np.mean(bottom_by_seed("base")))  # fmt: skip
    assert c.top == "tce"  # against the top: the same classes, base's
    assert c.versus_top["lmp"].bottom == pytest.approx(d.bottom - t.bottom)
    assert c.versus_top["base"].bottom == pytest.approx(-t.bottom)
    header, rows, under = comparison_tables(c)[-1][1:]
    rows = {row[0]: row for row in rows}
    assert header[-2:] == ["bottom 25% (sorted by reference)", "Δ bottom 25% vs base"]
    low, high = d.bottom_ci
    assert rows["lmp"][-1] == f"{d.bottom:+.1f} [{low:.1f}, {high:.1f}]*" and rows["base"][-1] == ""
    assert not rows["tce"][-1].endswith("*") and rows["old"][-1] == f"{o.bottom:+.2f}"
    legend = [line for line in under if line.startswith("Δ bottom 25% vs base:")]
    assert len(legend) == 1 and "(pole, rider;" in legend[0] and "paired by seed and image" in legend[0]
    assert "| Δ bottom 25% vs base |" in render(c)


def test_across_sets_sets_each_sets_own_figures_side_by_side(runs, tmp_path_factory, capsys):
    """`--across`: each set compared on its own (its cells equal that set's own leaderboard), methods in the first
    set's mIoU order, "not run" where a set lacks a method, the other set's notes prefixed with its name."""
    tmp_path = tmp_path_factory.mktemp("across")
    held_out = tmp_path / "held-out"
    base = np.array([0.6, 0.5, 0.1, 0.7])
    for seed in range(3):
        write_report(held_out / "base" / f"seed{seed}", seed, counts(20 + seed, base))
        write_report(held_out / "lmp" / f"seed{seed}", seed, counts(30 + seed, base))  # no better there
    write_report(held_out / "focal" / "seed0", 0, counts(40, base))
    out = tmp_path / "comparison.md"
    main(["compare", str(runs), "--label", "val", "--across", f"held-out={held_out}", "--resamples", "200",
          "--output", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert text == out.read_text() + "\n"
    title = "### Across evaluation sets (%): val, held-out; reference base"
    assert title in text
    lines = text[text.index(title) :].splitlines()
    header = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert header == ["method", "val: seeds", "val: mIoU", "val: mIoU − base", "val: Δ bottom 25% vs base",
                      "held-out: seeds", "held-out: mIoU", "held-out: mIoU − base",
                      "held-out: Δ bottom 25% vs base"]  # fmt: skip
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|").split("|")] for line in lines[4:8]}
    assert list(rows) == ["lmp", "old", "base", "focal"]  # val mIoU order (old 66.5, base 65), then held-out only
    for label, folder, column in (("val", runs, 1), ("held-out", held_out, 5)):
        alone = {row[0]: row for row in comparison_tables(build_comparison(folder, resamples=200))[-1][2]}
        for method, row in rows.items():
            if method in alone:
                expected = [alone[method][1], alone[method][2], alone[method][3], alone[method][-1]]  # Δ bottom last
                assert row[column : column + 4] == expected, label
            else:
                assert row[column] == "not run" and row[column + 1 : column + 4] == ["", "", ""]
    assert rows["lmp"][3].endswith("*") and not rows["lmp"][7].endswith("*")  # better on val only
    assert "- held-out: Note: focal: one seed: intervals over images only" in text
    assert "- Note: old/version_0: no per-image counts" in text and "held-out: Note: old" not in text


def test_across_refuses_bad_input_by_name(runs, tmp_path_factory, capsys):
    """A value without NAME=, a set without the reference, a name taken by the main set: one line, status 2."""
    other = tmp_path_factory.mktemp("across") / "other"
    write_report(other / "lmp" / "seed0", 0, counts(0, np.array([0.9, 0.7, 0.2, 0.8])))
    for argv, message in (
        (["--across", str(other)], f"--across '{other}': give NAME=PATH"),
        (["--across", f"held-out={other}"], "base"),
        (["--label", "val", "--across", f"val={runs}"], "'val' is already the main set's label"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(["compare", str(runs), *argv])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and "Traceback" not in err, err
