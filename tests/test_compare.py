"""`tailseg compare` on older reports (no per-image counts): seeds as mean ± std, repeats of a seed, gains, sorting,
bad input. The intervals and marks of reports with per-image counts: tests/test_comparison.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tailseg.analysis.comparison import build_comparison
from tailseg.analysis.runs import find_runs, load_per_class, select_runs
from tailseg.cli import main
from tailseg.compare import comparison_tables, render

CLASSES = ["road", "car", "rider", "bus", "pole", "sky"]
FREQ = {"road": 0.5, "car": 0.2, "rider": 0.01, "bus": 0.02, "pole": 0.07, "sky": 0.2}


def write_report(folder, iou, seed=None):
    folder.mkdir(parents=True, exist_ok=True)
    report = {"per_class_iou": dict(zip(CLASSES, iou, strict=True)), "class_frequency": FREQ}
    if seed is not None:
        report["config"] = {"seed_everything": seed}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_seeds_gains_and_summary(tmp_path):
    write_report(tmp_path / "base" / "version_0", [90, 70, 0, 20, 30, 80])
    lmp1 = write_report(tmp_path / "s1" / "lmp", [90, 72, 10, 30, 34, 80])
    lmp2 = write_report(tmp_path / "s2" / "lmp", [92, 70, 20, 30, 36, 82])
    comparison = build_comparison([str(tmp_path / "base"), str(lmp1), str(lmp2)])
    per_class, gains, summary, board = comparison_tables(comparison, sort="frequency")
    assert per_class[1] == ["class", "pixels %", "base", "lmp"] and "base: 1, lmp: 2" in per_class[0]
    assert [row[0] for row in per_class[2]] == ["rider", "bus", "pole", "car", "sky", "road"]  # rarest first
    rider = per_class[2][0]
    assert rider[1] == "1.000" and rider[2] == "0.00" and rider[3] == f"15.00 ± {np.std([10, 20], ddof=1):.2f}"
    assert gains[2][0] == ["rider", f"+15.00 ± {np.std([10, 20], ddof=1):.2f}"]
    rows = {row[0]: row for row in summary[2]}
    # five rarest by frequency: rider, bus, pole, car, sky (sky and car tie at 0.2; stable order keeps car first)
    assert rows["5 rarest classes' mIoU"][1] == f"{np.mean([0, 20, 30, 70, 80]):.2f}"
    lmp_miou = [np.mean([90, 72, 10, 30, 34, 80]), np.mean([92, 70, 20, 30, 36, 82])]
    assert rows["mIoU"][2] == f"{np.mean(lmp_miou):.2f} ± {np.std(lmp_miou, ddof=1):.2f}"
    assert rows["worst class"][1] == "0.00"
    # the leaderboard: best mIoU first, the difference to the reference's mean mIoU
    assert [row[:2] for row in board[2]] == [["lmp", "2"], ["base", "1"]]
    assert board[2][0][3] == f"{np.mean(lmp_miou) - np.mean([90, 70, 0, 20, 30, 80]):+.2f}" and board[2][1][3] == ""


def test_reference_sorting_and_named_runs(tmp_path):
    write_report(tmp_path / "a", [90, 70, 0, 20, 30, 80])
    write_report(tmp_path / "b", [91, 60, 5, 25, 35, 85])
    comparison = build_comparison([f"MCCE={tmp_path / 'a'}", f"TCE={tmp_path / 'b' / 'report.json'}"], reference="TCE")
    tables = comparison_tables(comparison)
    assert [row[0] for row in tables[0][2]] == ["rider", "bus", "pole", "car", "sky", "road"]  # by TCE's IoU
    text = render(comparison, "csv")
    assert text.startswith("# Per-class IoU") and "rider,1.000,0.00,5.00" in text


def test_cli_compare_writes_markdown_and_figure(tmp_path, capsys):
    write_report(tmp_path / "base", [90, 70, 0, 20, 30, 80])
    write_report(tmp_path / "lmp", [90, 72, 10, 30, 34, 80])
    out, figure = tmp_path / "comparison.md", tmp_path / "gains.png"
    main(["compare", str(tmp_path / "base"), str(tmp_path / "lmp"), "--sort", "frequency", "--output", str(out),
          "--figure", str(figure)])  # fmt: skip
    printed = capsys.readouterr().out
    assert "| rider | 1.000 | 0.00 | 10.00 |" in printed
    assert "- Note: base, lmp: no per-image counts (older report): intervals unavailable" in printed
    assert "| lmp | 1 | 52.67 | +4.33 | n/a |" in printed  # no interval, no per-image mIoU: never a zero width
    assert "| rider | +10.00 |" in out.read_text() and "| rider | 1.000 | 0.00 | 10.00 |" in out.read_text()
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_repeated_seed_counts_once_and_the_same_everywhere(tmp_path):
    """A second `make demo` leaves base/version_0 and base/version_1 with the same seed: compare, the gains and
    the notebooks' frames all take the newer one only; different seeds are all kept."""
    import os

    from tailseg.analysis import gain_table

    old = write_report(tmp_path / "demo" / "base" / "version_0", [10, 10, 10, 10, 10, 10], seed=0)
    os.utime(old / "report.json", (1_000_000, 1_000_000))
    write_report(tmp_path / "demo" / "base" / "version_1", [90, 70, 0, 20, 30, 80], seed=0)
    write_report(tmp_path / "demo" / "lmp" / "version_0", [90, 72, 10, 30, 34, 80], seed=0)
    write_report(tmp_path / "demo" / "lmp" / "version_1", [92, 70, 20, 30, 36, 82], seed=1)
    frame = load_per_class(str(tmp_path / "demo"))
    assert sorted(frame["run"].unique()) == ["base/version_1", "lmp/version_0", "lmp/version_1"]
    tables = comparison_tables(build_comparison(str(tmp_path / "demo")), sort="frequency")
    assert "base: 1, lmp: 2" in tables[0][0]
    assert tables[0][2][0][2] == "0.00"  # rider of base: the newer run's 0, not the older run's 10
    assert gain_table(frame, "lmp").loc["rider", "gain"] == pytest.approx(15.0)
    assert select_runs(find_runs(tmp_path / "demo"))[1] == [
        ("base/version_0", "superseded by base/version_1, a newer finished run of seed 0")
    ]


def test_bad_input(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_per_class([str(tmp_path / "nothing")])
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(tmp_path / "nothing")])
    assert stop.value.code == 2 and "tailseg compare: error:" in capsys.readouterr().err
    write_report(tmp_path / "a", [90, 70, 0, 20, 30, 80])
    with pytest.raises(ValueError, match="reference method 'x'"):
        build_comparison([str(tmp_path / "a")], reference="x")
    other = tmp_path / "b"
    other.mkdir()
    (other / "report.json").write_text(json.dumps({"per_class_iou": {"road": 1.0}}))
    with pytest.raises(ValueError, match="disagree on the classes"):
        build_comparison([str(tmp_path / "a"), str(other)])
    unfinished = tmp_path / "c" / "version_0"
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.csv").write_text("epoch,step,train/loss\n0,1,2.5\n")
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path / "c")])
    assert capsys.readouterr().err.strip() == (
        f"tailseg compare: error: no finished training run to compare in {tmp_path / 'c'}: "
        "Left out: c/version_0 (unfinished: no report)"
    )
