"""`tailseg matrix` on a tiny configuration: every config x seed trained in its own process, skipped when done,
resumed when interrupted, failures reported, SLURM-style single jobs, and the comparison at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_synthetic_args
from tailseg.cli import main
from tailseg.matrix import plan

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [str(ROOT / "experiments" / "synthetic" / f"{name}.yaml") for name in ("base", "lmp_only")]


def tiny(steps: int) -> list[str]:
    return ["--", *tiny_synthetic_args(), "--trainer.max_steps", str(steps), "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip


def report(out: Path, method: str, seed: int) -> dict:
    return json.loads((out / method / f"seed{seed}" / "report.json").read_text())


def test_matrix_trains_every_config_and_seed_then_compares(tmp_path, capsys):
    out = tmp_path / "matrix"
    main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--jobs", "2", *tiny(2)])
    printed = capsys.readouterr().out
    for method, loss in (("base", "CrossEntropy"), ("lmp_only", "LossMaxPooling")):
        for seed in (0, 1):
            run = report(out, method, seed)
            assert run["config"]["seed_everything"] == seed and run["global_step"] == 2
            assert run["config"]["model"]["loss"]["class_path"] == f"tailseg.losses.{loss}"
            assert (out / method / f"seed{seed}" / "log.txt").is_file()
    assert printed.count("start ") == 4 and printed.count("finish ") == 4
    comparison = (out / "comparison.md").read_text()
    assert "seeds per method - base: 2, lmp_only: 2" in comparison and "Gain over base" in comparison
    assert (out / "gains.png").read_bytes()[:4] == b"\x89PNG"

    # Again: everything is done, nothing is trained (no second run directory), the comparison is the same.
    main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--jobs", "2", *tiny(2)])
    assert capsys.readouterr().out.count("done ") == 4
    assert not list(out.glob("*/seed*/version_1"))
    assert (out / "comparison.md").read_text() == comparison


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "matrix"
    main(["matrix", CONFIGS[0], "--seeds", "3", "--out", str(out), "--no-compare", *tiny(2)])
    (out / "base" / "seed3" / "report.json").unlink()  # as if the run had been stopped before its end
    main(["matrix", CONFIGS[0], "--seeds", "3", "--out", str(out), "--no-compare", *tiny(4)])
    assert report(out, "base", 3)["global_step"] == 4
    log = (out / "base" / "seed3" / "log.txt").read_text()
    assert "--ckpt_path last: " in log and "step=2.ckpt" in log.split("--ckpt_path last: ")[-1].splitlines()[0]
    assert not (out / "comparison.md").exists()


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text(Path(CONFIGS[0]).read_text().replace("tailseg.losses.CrossEntropy", "tailseg.losses.NoSuchLoss"))
    out = tmp_path / "matrix"
    with pytest.raises(SystemExit) as stop:
        main(["matrix", str(broken), CONFIGS[1], "--seeds", "0", "--out", str(out), "--jobs", "2", *tiny(2)])
    assert stop.value.code == 1
    captured = capsys.readouterr()
    assert "FAILED  broken seed 0" in captured.out and str(out / "broken" / "seed0" / "log.txt") in captured.out
    assert "1 run(s) failed: broken seed 0" in captured.err
    assert report(out, "lmp_only", 0)["global_step"] == 2
    assert "lmp_only: 1" in (out / "comparison.md").read_text()


def test_slurm_list_and_only(tmp_path, capsys):
    out = tmp_path / "matrix"
    main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--list"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["0", "base", "0"], ["1", "base", "1"], ["2", "lmp_only", "0"], ["3", "lmp_only", "1"]
    ]  # fmt: skip
    main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--only", "2", *tiny(2)])
    assert [p.parent.relative_to(out).as_posix() for p in out.glob("*/seed*/report.json")] == ["lmp_only/seed0"]
    assert not (out / "comparison.md").exists()  # the array's last step compares
    with pytest.raises(SystemExit):
        main(["matrix", *CONFIGS, "--seeds", "0", "1", "--out", str(out), "--only", "4"])
    assert "--only 4 is not a job index (0..3)" in capsys.readouterr().err


def test_plan_refuses_ambiguous_or_missing_configs(tmp_path):
    other = tmp_path / "base.yaml"
    other.write_text(Path(CONFIGS[0]).read_text())
    with pytest.raises(ValueError, match="same name 'base'"):
        plan([CONFIGS[0], str(other)], [0], tmp_path)
    with pytest.raises(ValueError, match="is not a file"):
        plan([str(tmp_path / "missing.yaml")], [0], tmp_path)
    with pytest.raises(ValueError, match="repeats a seed"):
        plan([CONFIGS[0]], [1, 1], tmp_path)
