"""benchmarks/bench_training.py stays runnable: every part on a tiny model, with what each row must hold.

No timing is asserted (speed targets live in BENCHMARKS.md); the test checks that the script runs on the
CPU unchanged - the same code a GPU run uses - and reports every variant it promises.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_training  # noqa: E402
from conftest import TINY_ENCODER  # noqa: E402


@pytest.mark.usefixtures("one_thread")
def test_every_part_reports_every_variant(capsys):
    bench_training.main(["--device", "cpu", "--preset", "cpu", "--encoder", TINY_ENCODER, "--crop", "32", "64",
                         "--batch", "2", "--steps", "2", "--workers", "0", "1", "--loop-workers", "0",
                         "--images", "4", "--repeats", "1", "--parts", "step", "loop", "losses", "data"])  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    parts = {}
    for row in rows:
        parts.setdefault(row["part"], []).append(row)
    assert parts["machine"][0]["settings"]["encoder"] == TINY_ENCODER
    steps = {(r["loss"], r["precision"], r["channels_last"]) for r in parts["step"]}
    assert steps == {(loss, precision, layout) for loss in bench_training.LOSSES
                     for precision in ("32", "bf16-mixed") for layout in (False, True)}  # fmt: skip
    for row in parts["step"]:
        assert row["steps"] == 2 and row["step_s"] > 0 and row["peak_memory_mib"] > 0
        if row["loss"] == "cross-entropy":
            assert row["ratio_to_ce"] == 1.0
    assert [r["method"] for r in parts["loop"]] == list(bench_training.LOOPS)
    assert all(r["steps"] == 2 and r["ratio_to_model_step"] > 0 for r in parts["loop"])
    assert {(r["logits"], r["loss"]) for r in parts["losses"]} >= {("float32", "LossMaxPooling(p=1.3)"),
                                                                  ("bfloat16", "LossMaxPooling(p=1.3)")}  # fmt: skip
    assert [r["workers"] for r in parts["data"]] == [0, 1]
    assert all(r["ratio_to_model"] > 0 for r in parts["data"])
