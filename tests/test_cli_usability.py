"""The `tailseg` command as people use it: its help, one-line configuration errors, and evaluations that
run one after another in one folder with the logger off. The command runs in this process as the console script
runs it (`cli_runner.tailseg`), except for the console script's own help and a traceback on request."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli_runner import tailseg, tailseg_subprocess
from conftest import tiny_synthetic_args
from tailseg.cli import SUBCOMMANDS, TailsegCLI, main

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = str(ROOT / "experiments" / "synthetic" / "base.yaml")


def test_help_lists_every_subcommand(tmp_path, capsys):
    assert set(TailsegCLI.subcommands()) | {"describe", "compare", "matrix"} == set(SUBCOMMANDS)
    result = tailseg_subprocess("--help", cwd=tmp_path)  # the command itself, in its own process
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(SUBCOMMANDS)
    main(["-h"])
    assert capsys.readouterr().out.strip() == result.stdout.strip()

    bare = tailseg(cwd=tmp_path)  # no subcommand (in this process): the same text, as a usage error
    assert bare.returncode == 2 and bare.stdout == ""
    assert bare.stderr.strip() == result.stdout.strip()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["fit", "--help"], "--trainer.max_steps", id="fit"),  # LightningCLI's own help
        pytest.param(["describe", "--help"], "tailseg describe", id="describe"),
        pytest.param(["compare", "--help"], "--reference", id="compare"),
        pytest.param(["matrix", "--help"], "--seeds", id="matrix"),
    ],
)
def test_each_subcommand_keeps_its_own_help(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    assert expected in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.batch_size", "0"], ["batch_size", "0"]),  # SegmentationDataModule raises ValueError
        (["--model.encoder_output_stride", "5"], ["encoder_output_stride", "5"]),  # SegmentationModel does
        (["--data.train.init_args.num_images", "-3"], ["num_images", "-3"]),  # a data set, inside a Union type
        (["--data.batch_size", "abc"], ["data.batch_size", "abc"]),  # a wrong type: a parse error
        (["--data.batch_sise", "2"], ["--data.batch_sise", "did you mean --data.batch_size?"]),  # an unknown key
        (["--model.loss", "tailseg.losses.Nope"], ["model.loss", "tailseg.losses.Nope"]),
        (["--config", "missing.yaml"], ["config", "missing.yaml"]),
    ],
    ids=["batch-size-zero", "output-stride-5", "num-images-negative", "batch-size-not-int", "unknown-key",
         "unknown-loss-class", "missing-config"],
)  # fmt: skip
def test_config_error_is_one_line(args, expected, tmp_path):
    result = tailseg("fit", "--config", SYNTHETIC, *tiny_synthetic_args(), "--trainer.default_root_dir",
                     str(tmp_path), *args, cwd=tmp_path)  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) <= 3, result.stderr
    assert lines[-1].startswith("tailseg fit: error: ") and all(text in lines[-1] for text in expected), lines[-1]
    assert not (tmp_path / "version_0").exists()


def test_unknown_subcommand_is_one_line(tmp_path):
    result = tailseg("fitt", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "tailseg: error: unknown subcommand 'fitt' (choose from fit, validate, test, predict, describe, compare, "
        "matrix; see tailseg --help)"
    ]


def test_traceback_on_request_and_for_errors_of_the_run(tmp_path):
    # The interpreter prints the traceback: a process of its own.
    shown = tailseg_subprocess("fit", "--config", SYNTHETIC, *tiny_synthetic_args(), "--data.batch_size", "0",
                               cwd=tmp_path, TAILSEG_TRACEBACK="1")  # fmt: skip
    assert shown.returncode != 0 and "Traceback" in shown.stderr
    assert "ValueError: SegmentationDataModule: batch_size must be >= 1, got 0" in shown.stderr

    # A missing checkpoint is a configuration error, named before anything runs.
    missing = tailseg("validate", "--config", SYNTHETIC, *tiny_synthetic_args(), "--ckpt_path", "missing.ckpt",
                      "--trainer.logger", "false", cwd=tmp_path)  # fmt: skip
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == "tailseg validate: error: ckpt_path: missing.ckpt is not a file"

    # An error of the run itself (a NaN loss at step 0) keeps its traceback.
    run = tailseg("fit", "--config", SYNTHETIC, *tiny_synthetic_args(), "--model.loss", "test_cli.NaNLoss",
                  "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 1 and "Traceback" in run.stderr and "NonFiniteLossError" in run.stderr


def test_evaluations_with_the_logger_off_share_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--config", SYNTHETIC, *tiny_synthetic_args(train=4), "--trainer.logger", "false",
              "--trainer.enable_progress_bar", "false"]  # fmt: skip
    main(["fit", *common, "--trainer.max_steps", "2", "--trainer.check_val_every_n_epoch", "1"])
    folder = tmp_path / "runs" / "synthetic" / "base"  # the config's trainer.default_root_dir
    (ckpt,) = folder.glob("checkpoints/*.ckpt")  # the final weights, one file
    fit_config = (folder / "config.yaml").read_text()

    for subcommand in ("validate", "predict", "validate"):
        main([subcommand, *common, "--ckpt_path", str(ckpt)])

    assert (folder / "config.validate.yaml").is_file() and (folder / "config.predict.yaml").is_file()
    assert (folder / "config.yaml").read_text() == fit_config  # the training config is left alone
    assert "ckpt_path" in (folder / "config.predict.yaml").read_text()


def _checkpoint_of(path: Path, num_classes: int) -> str:
    """A file with what `tailseg` reads of a checkpoint before loading it: the model's saved hyper-parameters."""
    import torch

    torch.save({"hyper_parameters": {"num_classes": num_classes}, "state_dict": {}}, path)
    return str(path)


@pytest.mark.parametrize(
    ("subcommand", "args", "expected"),
    [
        ("test", [], ["data.test", "--data.test.class_path"]),
        ("test", ["--data.test.init_args.root", "x"], ["the config sets no data.test", "--data.test.class_path"]),
        ("validate", [], ["ckpt_path", "random weights", "--ckpt_path last"]),
        ("test", ["--data.test", "{class_path: tailseg.data.SyntheticStreets, init_args: {split: test, num_images: 2}}"],
         ["ckpt_path", "random weights"]),
        ("validate", ["--ckpt_path", "{three}"], ["ckpt_path", "3 classes", "the data has 19"]),
        ("predict", ["--ckpt_path", "{three}"], ["3 classes", "the data has 19"]),
        ("fit", ["--trainer.default_root_dir", "{file}/runs"], ["trainer.default_root_dir", "is not a folder"]),
        ("fit", ["--model.optimizer.init_args.lr", "-0.1"], ["model.optimizer", "-0.1"]),
    ],
    ids=["test-without-data-test", "test-root-without-class", "validate-without-ckpt", "test-without-ckpt", "validate-ckpt-of-3-classes",
         "predict-ckpt-of-3-classes", "root-under-a-file", "negative-lr"],
)  # fmt: skip
def test_user_mistakes_are_one_line(subcommand, args, expected, tmp_path):
    """Mistakes that used to end in a traceback, or worse in a run that scores random weights: one line, status 2,
    before anything is written."""
    (tmp_path / "a-file").write_text("")
    values = {"{three}": _checkpoint_of(tmp_path / "three.ckpt", 3), "{file}/runs": str(tmp_path / "a-file" / "runs")}
    args = [values.get(a, a) for a in args]
    result = tailseg(subcommand, "--config", SYNTHETIC, *tiny_synthetic_args(), "--trainer.default_root_dir",
                     str(tmp_path / "runs"), *args, cwd=tmp_path)  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith(f"tailseg {subcommand}: error: ") and all(t in lines[-1] for t in expected), lines[-1]
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_one_line(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    result = tailseg("fit", "--config", SYNTHETIC, *tiny_synthetic_args(), "--trainer.default_root_dir",
                     str(tmp_path / "ro" / "runs"), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(f"({tmp_path / 'ro'} is not writable)")


def test_a_run_folder_under_a_file_is_one_line(tmp_path):
    """The check of the run folder's parent, exercised as root too (root may write into read-only folders)."""
    (tmp_path / "a-file").write_text("")
    root = tmp_path / "a-file" / "deeper" / "runs"
    result = tailseg("fit", "--config", SYNTHETIC, *tiny_synthetic_args(), "--trainer.default_root_dir", str(root),
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"tailseg fit: error: trainer.default_root_dir: {root}: the run folder cannot be created there "
        f"({tmp_path / 'a-file'} is not a folder)"
    )
    assert (tmp_path / "a-file").read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_describe_with_a_missing_root_is_one_line(tmp_path):
    result = tailseg("describe", "--config", str(ROOT / "experiments" / "camvid" / "base.yaml"),
                     "--data.train.init_args.root", str(tmp_path / "nowhere"), cwd=tmp_path)  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("tailseg describe: error: ") and str(tmp_path / "nowhere") in lines[0], lines[0]


def test_evaluations_do_not_add_run_folders_to_the_training_root(tmp_path, monkeypatch):
    """With the default loggers, validate writes its run folder under evaluations/validate/, not version_<N>."""
    monkeypatch.chdir(tmp_path)
    common = ["--config", SYNTHETIC, *tiny_synthetic_args(train=4, val=2), "--trainer.default_root_dir",
              str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false"]  # fmt: skip
    main(["fit", *common, "--trainer.max_steps", "1"])
    main(["validate", *common, "--ckpt_path", "last"])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["evaluations", "version_0"]
    report = json.loads((tmp_path / "runs" / "evaluations" / "validate" / "version_0" / "report.json").read_text())
    assert report["stage"] == "validate" and report["num_images"] == 2
