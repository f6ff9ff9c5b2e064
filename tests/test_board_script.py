"""benchmarks/camvid_board.sh builds the matrix calls of each stage (run with `TAILSEG=echo`: the commands only)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "camvid_board.sh"


def _run(tmp_path: Path, *stages: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAMVID": "/data/camvid", "OUT": str(tmp_path), "TAILSEG": "echo"}
    return subprocess.run(["bash", str(SCRIPT), *stages], env=env, capture_output=True, text=True)


def _commands(tmp_path: Path, *stages: str) -> list[str]:
    done = _run(tmp_path, *stages)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _run_files_stage(out: Path, results: Path, stage: str) -> subprocess.CompletedProcess:
    """`results` or `restore`: copies between OUT and RESULTS, no data and no training."""
    env = {k: v for k, v in os.environ.items() if k != "CAMVID"}
    env.update(OUT=str(out), TAILSEG="echo", RESULTS=str(results))
    return subprocess.run(["bash", str(SCRIPT), stage], env=env, capture_output=True, text=True)


def _configs(line: str) -> list[str]:
    """The config files of one `matrix` command line."""
    words = line.split()
    return words[1 : words.index("--seeds")]


def _files(folder: Path) -> list[str]:
    """Every file under a folder, relative to it, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_the_synthetic_stage_runs_every_synthetic_config(tmp_path):
    (line,) = _commands(tmp_path, "synthetic")
    assert line.split()[0] == "matrix"
    configs = _configs(line)
    assert set(configs) == {str(p.relative_to(ROOT)) for p in (ROOT / "experiments" / "synthetic").glob("*.yaml")}
    assert line.endswith(f"--seeds 0 1 2 --out {tmp_path}/synthetic --jobs 2 --no-compare")


def test_the_held_out_fine_tunes_start_from_the_held_out_pretraining(tmp_path):
    report = tmp_path / "scratch-0006R0" / "base" / "seed0" / "report.json"
    report.parent.mkdir(parents=True)
    checkpoint = tmp_path / "held-out-base.ckpt"
    checkpoint.write_bytes(b"weights")
    report.write_text(json.dumps({"checkpoint": str(checkpoint)}))
    (line,) = _commands(tmp_path, "finetune-0006R0")
    configs = _configs(line)
    assert configs[:3] == [f"experiments/camvid/finetune/{m}.yaml" for m in ("base", "base_plus", "lmp")]
    assert all((ROOT / c).is_file() for c in configs)
    assert line.endswith(
        f"--out {tmp_path}/finetune-0006R0 --jobs 2 --no-compare -- "
        "--data.train.init_args.root /data/camvid --data.val.init_args.root /data/camvid "
        "--data.train.init_args.split train+val --data.train.init_args.exclude_videos [0006R0] "
        f"--data.val.init_args.split train --data.val.init_args.videos [0006R0] --model.init_from {checkpoint}"
    )


def test_the_fine_tuning_stages_run_every_fine_tuning_config_once_each(tmp_path):
    """finetune-val (the verdict's methods) and finetune-extra (the rest) together cover experiments/camvid/finetune/,
    and finetune-extra runs its configs on val and then on the held-out video, each from its own pretraining."""
    starts = {}
    for folder in ("scratch-val", "scratch-0006R0"):
        report = tmp_path / folder / "base" / "seed0" / "report.json"
        report.parent.mkdir(parents=True)
        starts[folder] = tmp_path / f"{folder}.ckpt"
        starts[folder].write_bytes(b"weights")
        report.write_text(json.dumps({"checkpoint": str(starts[folder])}))
    (verdict,) = _commands(tmp_path, "finetune-val")
    extra_val, extra_held_out = _commands(tmp_path, "finetune-extra")
    assert _configs(extra_val) == _configs(extra_held_out)
    assert not set(_configs(verdict)) & set(_configs(extra_val))
    every = {str(p.relative_to(ROOT)) for p in (ROOT / "experiments" / "camvid" / "finetune").glob("*.yaml")}
    assert set(_configs(verdict)) | set(_configs(extra_val)) == every
    assert f"--out {tmp_path}/finetune-val " in extra_val and "0006R0" not in extra_val
    assert extra_val.endswith(f"--model.init_from {starts['scratch-val']}")
    assert (
        f"--out {tmp_path}/finetune-0006R0 " in extra_held_out
        and "--data.val.init_args.videos [0006R0]" in extra_held_out
    )
    assert extra_held_out.endswith(f"--model.init_from {starts['scratch-0006R0']}")


def test_a_pretraining_whose_checkpoint_is_gone_stops_the_stage_by_name(tmp_path):
    """A report of BASE seed 0 without its weights (restored from benchmarks/results/): no fine-tune starts from a
    missing file; the message names the report, the checkpoint and what to do."""
    report = tmp_path / "scratch-val" / "base" / "seed0" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"checkpoint": str(tmp_path / "gone.ckpt")}))
    done = _run(tmp_path, "finetune-val")
    assert done.returncode != 0 and done.stdout == ""
    assert f"{report} names the checkpoint {tmp_path}/gone.ckpt, which is not there" in done.stderr
    assert f"move {tmp_path}/scratch-val/base/seed0 aside" in done.stderr


def test_restore_puts_the_results_back_where_the_matrices_look_and_keeps_what_is_there(tmp_path):
    """`restore` is `results` reversed: each stage's reports (and per-image files) go back to OUT/<stage>/, so a
    new machine trains only what benchmarks/results/ lacks; a report already in OUT is not overwritten."""
    out, results = tmp_path / "board", tmp_path / "results"
    for run in ("camvid-runs/0006R0/base/seed1", "camvid-runs/val/lmp/seed0", "camvid-finetune/val/base/seed2"):
        (results / run).mkdir(parents=True)
        (results / run / "report.json").write_text(json.dumps({"from": "results"}))
    (results / "camvid-runs/val/lmp/seed0/report.per_image.npz").write_bytes(b"counts")
    (results / "camvid-runs/0006R0/base/seed1/report.per_image.npz").write_bytes(b"counts")
    (out / "scratch-val/lmp/seed0").mkdir(parents=True)
    (out / "scratch-val/lmp/seed0/report.json").write_text(json.dumps({"from": "board"}))
    done = _run_files_stage(out, results, "restore")
    assert done.returncode == 0, done.stderr
    assert _files(out) == [
        "finetune-val/base/seed2/report.json",
        "scratch-0006R0/base/seed1/report.json",
        "scratch-0006R0/base/seed1/report.per_image.npz",
        "scratch-val/lmp/seed0/report.json",
    ]
    assert json.loads((out / "scratch-0006R0/base/seed1/report.json").read_text()) == {"from": "results"}
    assert json.loads((out / "scratch-val/lmp/seed0/report.json").read_text()) == {"from": "board"}


def test_a_missing_pretraining_is_trained_first_and_a_failed_one_stops_the_stage(tmp_path):
    """No report of BASE seed 0: the stage trains it (here `echo` stands for the training, which writes nothing),
    then stops with a message naming the missing report, before any fine-tune."""
    done = _run(tmp_path, "finetune-val")
    assert done.returncode != 0 and done.stdout == ""
    assert f"matrix experiments/camvid/base.yaml --seeds 0 --out {tmp_path}/scratch-val --jobs 1" in done.stderr
    assert f"no {tmp_path}/scratch-val/base/seed0/report.json after training BASE seed 0" in done.stderr


def test_an_unknown_stage_is_refused_by_name(tmp_path):
    done = _run(tmp_path, "scratch-test")
    assert done.returncode == 2 and "unknown stage scratch-test" in done.stderr


def test_the_val_board_runs_every_camvid_config_and_the_held_out_board_the_papers_and_peers(tmp_path):
    """scratch-val and scratch-val-new together run every CamVid config into one folder; the held-out board runs
    scratch-val's methods (the papers' and the peers'), the papers' two losses right after BASE and LMP, and
    scratch-0006R0-new the methods added since, on the held-out video, into the held-out board's folder."""

    lines = {}
    for stage in ("scratch-val", "scratch-val-new", "scratch-0006R0", "scratch-0006R0-new"):
        (lines[stage],) = _commands(tmp_path, stage)
        assert f"--out {tmp_path}/{stage.removesuffix('-new')} " in lines[stage]
        held_out_overrides = ("--data.train.init_args.exclude_videos [0006R0]", "--data.val.init_args.videos [0006R0]")
        if "0006R0" in stage:
            assert all(o in lines[stage] for o in held_out_overrides)
        else:
            assert "0006R0" not in lines[stage]

    board, new, held_out = (_configs(lines[s]) for s in ("scratch-val", "scratch-val-new", "scratch-0006R0"))
    assert _configs(lines["scratch-0006R0-new"]) == new
    assert set(board) | set(new) == {str(p.relative_to(ROOT)) for p in (ROOT / "experiments" / "camvid").glob("*.yaml")}
    assert not set(board) & set(new) and "experiments/camvid/logit_adjust.yaml" in new
    assert held_out == board and board[:4] == [
        f"experiments/camvid/{m}.yaml" for m in ("base", "lmp", "tce_class", "stce")
    ]


def test_results_copies_the_finished_reports_and_compares_each_folder(tmp_path):
    """`results`: report.json and its per-image file (never a checkpoint, never an unfinished seed) land in the
    folder BENCHMARKS.md cites, then one `tailseg compare` per folder that received reports."""
    out, results = tmp_path / "board", tmp_path / "results"
    finished = {"finetune-val/base/seed0": True, "finetune-val/lmp/seed2": False, "scratch-0006R0/base/seed1": False}
    for run, sidecar in finished.items():
        (out / run).mkdir(parents=True)
        (out / run / "report.json").write_text(json.dumps({"miou": 40.0, "run": run}))
        (out / run / "last.ckpt").write_bytes(b"weights")
        if sidecar:
            (out / run / "report.per_image.npz").write_bytes(b"counts")
    (out / "finetune-val" / "lmp" / "seed1").mkdir()  # unfinished: no report
    done = _run_files_stage(out, results, "results")
    assert done.returncode == 0, done.stderr
    assert _files(results) == [
        "camvid-finetune/val/base/seed0/report.json",
        "camvid-finetune/val/base/seed0/report.per_image.npz",
        "camvid-finetune/val/lmp/seed2/report.json",
        "camvid-runs/0006R0/base/seed1/report.json",
    ]
    assert (
        json.loads((results / "camvid-finetune/val/lmp/seed2/report.json").read_text())["run"]
        == "finetune-val/lmp/seed2"
    )
    assert done.stdout.splitlines() == [
        f"compare {results}/camvid-finetune/val --reference base --output {results}/camvid-finetune/val/comparison.md",
        f"compare {results}/camvid-runs/0006R0 --reference base --output {results}/camvid-runs/0006R0/comparison.md",
    ]
    # with the held-out fine-tunes there too, the val comparison sets them beside val's
    (out / "finetune-0006R0" / "base" / "seed0").mkdir(parents=True)
    (out / "finetune-0006R0" / "base" / "seed0" / "report.json").write_text("{}")
    done = _run_files_stage(out, results, "results")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"compare {results}/camvid-finetune/val --reference base --label val --across "
        f"0006R0={results}/camvid-finetune/0006R0 --output {results}/camvid-finetune/val/comparison.md"
    )


def test_a_training_stage_without_camvid_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CAMVID"}
    done = subprocess.run(
        ["bash", str(SCRIPT), "scratch-val"],
        env={**env, "OUT": str(tmp_path), "TAILSEG": "echo"},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and done.stdout == "" and "set CAMVID to the CamVid folder" in done.stderr
