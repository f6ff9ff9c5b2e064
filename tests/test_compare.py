"""`tailseg compare`: tables from reports, seeds as mean ± std, gains, sorting and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tailseg.cli import main
from tailseg.compare import Comparison, load_runs, render

CLASSES = ["road", "car", "rider", "bus", "pole", "sky"]
FREQ = {"road": 0.5, "car": 0.2, "rider": 0.01, "bus": 0.02, "pole": 0.07, "sky": 0.2}


def write_report(folder, iou):
    folder.mkdir(parents=True, exist_ok=True)
    report = {"per_class_iou": dict(zip(CLASSES, iou, strict=True)), "class_frequency": FREQ}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_seeds_gains_and_summary(tmp_path):
    write_report(tmp_path / "base" / "version_0", [90, 70, 0, 20, 30, 80])
    lmp1 = write_report(tmp_path / "s1" / "lmp", [90, 72, 10, 30, 34, 80])
    lmp2 = write_report(tmp_path / "s2" / "lmp", [92, 70, 20, 30, 36, 82])
    runs = load_runs([str(tmp_path / "base"), str(lmp1), str(lmp2)])
    assert list(runs) == ["base", "lmp"] and len(runs["lmp"]) == 2
    tables = Comparison(runs).tables(sort="frequency")
    per_class, gains, summary = tables
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


def test_reference_sorting_and_named_runs(tmp_path):
    write_report(tmp_path / "a", [90, 70, 0, 20, 30, 80])
    write_report(tmp_path / "b", [91, 60, 5, 25, 35, 85])
    runs = load_runs([f"MCCE={tmp_path / 'a'}", f"TCE={tmp_path / 'b' / 'report.json'}"])
    comparison = Comparison(runs, reference="TCE")
    table = comparison.tables()[0]
    assert [row[0] for row in table[2]] == ["rider", "bus", "pole", "car", "sky", "road"]  # by TCE's IoU
    text = render(comparison.tables(), "csv")
    assert text.startswith("# Per-class IoU") and "rider,1.000,0.00,5.00" in text


def test_cli_compare_writes_markdown(tmp_path, capsys):
    write_report(tmp_path / "base", [90, 70, 0, 20, 30, 80])
    write_report(tmp_path / "lmp", [90, 72, 10, 30, 34, 80])
    out = tmp_path / "comparison.md"
    main(["compare", str(tmp_path / "base"), str(tmp_path / "lmp"), "--sort", "frequency", "--output", str(out)])
    printed = capsys.readouterr().out
    assert "| rider | 1.000 | 0.00 | 10.00 |" in printed
    assert "| rider | +10.00 |" in out.read_text() and "| rider | 1.000 | 0.00 | 10.00 |" in out.read_text()


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="no report.json"):
        load_runs([str(tmp_path / "nothing")])
    write_report(tmp_path / "a", [90, 70, 0, 20, 30, 80])
    with pytest.raises(ValueError, match="--reference 'x'"):
        Comparison(load_runs([str(tmp_path / "a")]), reference="x")
    other = tmp_path / "b"
    other.mkdir()
    (other / "report.json").write_text(json.dumps({"per_class_iou": {"road": 1.0}}))
    with pytest.raises(ValueError, match="disagree on the classes"):
        Comparison(load_runs([str(tmp_path / "a"), str(other)]))
