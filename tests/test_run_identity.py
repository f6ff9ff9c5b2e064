"""What a report says it is, and an analysis that compares like with like: evaluations, untrained weights,
unfinished and repeated runs never replace or join the final reports of trained runs."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import tiny_synthetic_args
from tailseg import identity
from tailseg.analysis import describe_runs, load_per_class
from tailseg.analysis.runs import find_runs, method_of, select_runs
from tailseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"base": "base.yaml", "lmp_only": "lmp_only.yaml"}
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _args(method: str) -> list[str]:
    return ["--config", str(ROOT / "experiments" / "synthetic" / CONFIGS[method]), *tiny_synthetic_args(train=4, val=2),
            *QUIET]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread) -> Path:
    """runs/base and runs/lmp_only from `tailseg fit` with 2 steps, each with its --report_path copy
    runs/<method>/report.json beside version_0/ (as `make demo` leaves them)."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAILSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        for method in CONFIGS:
            main(["fit", *_args(method), "--trainer.max_steps", "2", "--trainer.check_val_every_n_epoch", "1",
                  "--trainer.default_root_dir", str(root / method),
                  "--report_path", str(root / method / "report.json")])  # fmt: skip
    return root


@pytest.fixture
def runs(trained, tmp_path) -> Path:
    """A copy of the trained runs (without the checkpoints, which stay where the reports name them)."""
    return Path(shutil.copytree(trained, tmp_path / "runs", ignore=shutil.ignore_patterns("*.ckpt")))


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def _write(folder: Path, report: dict, newer_than: Path | None = None) -> Path:
    """`report` as `folder/report.json`, written after every file under `newer_than`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.json"
    path.write_text(json.dumps(report))
    if newer_than is not None:
        latest = max(p.stat().st_mtime for p in newer_than.rglob("*") if p.is_file())
        os.utime(path, (latest + 10, latest + 10))
    return path


def _iou(frame, run: str) -> list[float]:
    return frame.loc[frame["run"] == run, "iou"].tolist()


def _values(report: dict) -> list[float]:
    return [np.nan if v is None else v for v in report["per_class_iou"].values()]


def _compare(capsys, *args: str) -> str:
    main(["compare", *args])
    return capsys.readouterr().out


def test_the_report_says_what_it_is(trained):
    base, lmp = _report(trained / "base" / "version_0"), _report(trained / "lmp_only" / "version_0")
    config = yaml.safe_load((trained / "base" / "version_0" / "config.yaml").read_text())
    assert (base["stage"], base["split"], base["trained"], base["global_step"]) == ("fit", "val", True, 2)
    assert base["fingerprint"] == identity.fingerprint(config) and re.fullmatch(r"[0-9a-f]{16}", base["fingerprint"])
    assert base["method_fields"] == identity.method_fields(config)
    assert base["method_fields"]["model.loss.class_path"] == "tailseg.losses.CrossEntropy"
    assert lmp["method_fields"]["model.loss.class_path"] == "tailseg.losses.LossMaxPooling"
    assert lmp["fingerprint"] != base["fingerprint"]
    assert identity.differences(base["method_fields"], lmp["method_fields"])[:1] == ["model.loss.class_path"]


def test_evaluations_never_replace_the_training_report(trained, runs, capsys):
    """`validate` of a checkpoint into BASE's root, and the report of an evaluation of untrained weights beside it
    (the newest file of all): compare still shows BASE's training numbers, and lists both evaluations as left out;
    with --evaluations the checkpoint's evaluation is a method of its own and the untrained one still stays out."""
    fit = _report(trained / "base" / "version_0")
    main(["validate", *_args("base"), "--ckpt_path", fit["checkpoint"], "--trainer.default_root_dir",
          str(runs / "base")])  # fmt: skip
    (evaluation,) = [p for p in runs.rglob("report.json") if json.loads(p.read_text())["stage"] == "validate"]
    validated = json.loads(evaluation.read_text())
    assert (validated["split"], validated["trained"], validated["global_step"]) == ("val", True, 2)
    assert validated["checkpoint"] == fit["checkpoint"]
    untrained = {**fit, "stage": "validate", "checkpoint": None, "global_step": None, "trained": False,
                 "per_class_iou": dict.fromkeys(fit["per_class_iou"], 99.99)}  # fmt: skip
    _write(runs / "base" / "evaluations" / "validate" / "version_7", untrained, newer_than=runs)

    frame = load_per_class(runs)
    assert frame["run"].unique().tolist() == ["base/version_0", "lmp_only/version_0"]
    np.testing.assert_allclose(_iou(frame, "base/version_0"), _values(fit))
    checkpoint_run = evaluation.parent.relative_to(runs).as_posix()
    out = _compare(capsys, str(runs))
    assert f"Left out: {checkpoint_run} (evaluation report (validate, val @ step 2; use --evaluations))" in out
    assert "Left out: base/evaluations/validate/version_7 (untrained: evaluated without a checkpoint)" in out
    assert "99.99" not in out and "[val @ step" not in out.split("Left out")[0]

    with_evaluations = load_per_class(runs, evaluations=True)
    assert with_evaluations["method"].unique().tolist() == ["base", "base [val @ step 2]", "lmp_only"]
    np.testing.assert_allclose(_iou(with_evaluations, checkpoint_run), _values(validated))
    out = _compare(capsys, str(runs), "--evaluations")
    assert "| class | pixels % | base | base [val @ step 2] | lmp_only |" in out and "99.99" not in out
    assert "Left out: base/evaluations/validate/version_7 (untrained: evaluated without a checkpoint)" in out
    listed = describe_runs(runs).set_index("run")
    assert listed.loc["base/version_0", "status"] == "counted"
    assert listed.loc["base/evaluations/validate/version_7", "status"] == "untrained: evaluated without a checkpoint"


def test_a_test_report_in_the_training_root_does_not_mix_with_validation_numbers(trained, runs):
    fit = _report(trained / "base" / "version_0")
    tested = {**fit, "stage": "test", "split": "test", "per_class_iou": dict.fromkeys(fit["per_class_iou"], 77.0)}
    _write(runs / "base" / "evaluations" / "test" / "version_0", tested, newer_than=runs)
    frame = load_per_class(runs)
    assert frame["method"].unique().tolist() == ["base", "lmp_only"] and 77.0 not in frame["iou"].tolist()
    np.testing.assert_allclose(_iou(frame, "base/version_0"), _values(fit))
    _, left_out = select_runs(find_runs(runs))
    assert left_out == [
        ("base/evaluations/test/version_0", "evaluation report (test, test @ step 2; use --evaluations)")
    ]
    both = load_per_class(runs, evaluations=True)
    test_rows = both[both["method"] == "base [test @ step 2]"]
    assert test_rows["run"].unique().tolist() == ["base/evaluations/test/version_0"]
    assert set(test_rows["iou"]) == {77.0} and 77.0 not in both.loc[both["method"] == "base", "iou"].tolist()


def test_a_newer_unfinished_run_does_not_hide_the_finished_one(trained, runs, capsys):
    """A second run of BASE with the same seed, stopped before its end (a CSV log, no report), is newer than the
    finished one: the finished one still counts, the unfinished one is listed."""
    unfinished = runs / "base" / "version_1"
    unfinished.mkdir()
    shutil.copy(runs / "base" / "version_0" / "config.yaml", unfinished / "config.yaml")
    (unfinished / "metrics.csv").write_text("epoch,step,train/loss\n0,1,2.5\n")
    os.utime(unfinished / "metrics.csv", (2e9, 2e9))
    frame = load_per_class(runs)
    assert frame["method"].unique().tolist() == ["base", "lmp_only"]
    np.testing.assert_allclose(_iou(frame, "base/version_0"), _values(_report(trained / "base" / "version_0")))
    out = _compare(capsys, str(runs))
    assert "Left out: base/version_1 (unfinished: no report)" in out
    assert "| method | seeds |" in out and re.search(r"^\| base \| 1 \|", out, re.MULTILINE)


def test_a_fit_that_trained_no_step_is_left_out(trained, runs, capsys):
    lmp = _report(trained / "lmp_only" / "version_0")
    zero = {**lmp, "global_step": 0, "trained": False, "per_class_iou": dict.fromkeys(lmp["per_class_iou"], 55.0)}
    _write(runs / "lmp_only" / "version_1", zero, newer_than=runs)  # same seed, newer
    _, left_out = select_runs(find_runs(runs))
    assert left_out == [("lmp_only/version_1", "untrained: global_step 0")]
    frame = load_per_class(runs, evaluations=True)
    np.testing.assert_allclose(_iou(frame, "lmp_only/version_0"), _values(lmp))
    assert 55.0 not in frame["iou"].tolist()
    assert "Left out: lmp_only/version_1 (untrained: global_step 0)" in _compare(capsys, str(runs))
    # an older report without `trained`: a fit at step 0 is untrained all the same
    del zero["trained"]
    _write(runs / "lmp_only" / "version_1", zero, newer_than=runs)
    assert select_runs(find_runs(runs))[1] == [("lmp_only/version_1", "untrained: global_step 0")]


def test_validate_refuses_a_report_path_holding_a_training_report(trained, tmp_path):
    target = trained / "base" / "report.json"
    before = (target.read_bytes(), target.stat().st_mtime_ns)
    checkpoint = _report(trained / "base" / "version_0")["checkpoint"]
    expected = f"report_path {target} holds the training report of {trained / 'base' / 'version_0'}; write the evaluation elsewhere"
    with pytest.raises(ValueError, match=re.escape(expected)):
        main(["validate", *_args("base"), "--ckpt_path", checkpoint, "--trainer.default_root_dir",
              str(tmp_path / "val"), "--report_path", str(target)])  # fmt: skip
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before
    assert not list(tmp_path.rglob("report.json")) and not list(tmp_path.rglob("config.yaml"))  # nothing ran


def _fake_fit(folder: Path, seed: int, iou: float, ratio: float = 0.25, mtime: float = 1e9) -> None:
    config = {"seed_everything": seed, "model": {"loss": {"class_path": "tailseg.losses.LossMaxPooling",
                                                          "init_args": {"p": 1.3, "ratio": ratio}}}}  # fmt: skip
    report = {"stage": "fit", "global_step": 100, "per_class_iou": {"road": iou, "car": iou}, "config": config}
    os.utime(_write(folder, report), (mtime, mtime))


def test_seeds_of_a_method_with_another_config_are_left_out_naming_the_field(tmp_path):
    _fake_fit(tmp_path / "lmp" / "seed0" / "version_0", 0, 10.0, ratio=0.5, mtime=1e9)  # before a config change
    _fake_fit(tmp_path / "lmp" / "seed1" / "version_0", 1, 20.0, mtime=2e9)
    _fake_fit(tmp_path / "lmp" / "seed2" / "version_0", 2, 30.0, mtime=3e9)
    kept, left_out = select_runs(find_runs(tmp_path))
    assert [run.name for run in kept] == ["lmp/seed1/version_0", "lmp/seed2/version_0"]
    assert left_out == [("lmp/seed0/version_0", "a different config from lmp/seed2/version_0, the newest run of lmp: "
                         "model.loss.init_args.ratio (was 0.5, now 0.25)")]  # fmt: skip
    _fake_fit(tmp_path / "lmp" / "seed0" / "version_0", 0, 10.0, mtime=1e9)  # rerun with the current config
    assert select_runs(find_runs(tmp_path))[1] == []


def test_the_method_of_an_evaluation_folder_is_its_training_root():
    assert method_of(Path("runs/demo/lmp/evaluations/test/version_0")) == "lmp"
    assert method_of(Path("runs/matrix/lmp/seed1/evaluations/validate/version_2")) == "lmp"
    assert method_of(Path("runs/matrix/lmp/seed1/version_0")) == "lmp"
