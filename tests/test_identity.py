"""The run fingerprint: which config fields define a method, checked on the repository's own configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tailseg.identity import (
    describe_differences,
    differences,
    fingerprint,
    method_fields,
    recorded_fields,
    recorded_fingerprint,
    same_experiment,
)

ROOT = Path(__file__).resolve().parents[1]


def config(name: str) -> dict:
    return yaml.safe_load((ROOT / "experiments" / "synthetic" / f"{name}.yaml").read_text())


def test_every_synthetic_method_has_its_own_fingerprint():
    paths = sorted((ROOT / "experiments" / "synthetic").glob("*.yaml"))
    prints = {p.stem: fingerprint(yaml.safe_load(p.read_text())) for p in paths}
    assert len(prints) >= 10 and len(set(prints.values())) == len(prints), prints
    assert all(len(value) == 16 and int(value, 16) >= 0 for value in prints.values())


def test_base_and_lmp_differ_in_the_loss_and_the_sampler_only():
    base, lmp = method_fields(config("base")), method_fields(config("lmp"))
    changed = differences(base, lmp)
    assert "model.loss.class_path" in changed and "data.train_sampler.class_path" in changed
    assert not [k for k in changed if k.startswith(("model.optimizer", "data.train.", "data.crop_size", "seed"))]
    line = describe_differences(base, lmp)
    assert "model.loss.class_path (was 'tailseg.losses.CrossEntropy', now 'tailseg.losses.LossMaxPooling')" in line


@pytest.mark.parametrize(
    ("key", "value", "counts"),
    [
        (("seed_everything",), 3, True),
        (("trainer", "max_steps"), 7, True),
        (("trainer", "accumulate_grad_batches"), 4, True),
        (("model", "optimizer", "init_args", "lr"), 0.5, True),
        (("data", "batch_size"), 3, True),
        (("data", "train", "init_args", "num_images"), 5, True),
        (("trainer", "default_root_dir"), "elsewhere", False),
        (("trainer", "log_every_n_steps"), 1, False),
        (("trainer", "precision"), "bf16-mixed", False),
        (("data", "num_workers"), 7, False),
        (("data", "eval_batch_size"), 1, False),
        (("data", "train", "init_args", "root"), "/mnt/other", False),
        (("model", "compile"), True, False),
        (("report_path",), "x.json", False),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else None,
)
def test_a_field_changes_the_fingerprint_only_if_it_defines_the_method(key, value, counts):
    original = config("lmp")
    changed = copy.deepcopy(original)
    node = changed
    for part in key[:-1]:
        node = node.setdefault(part, {})
    node[key[-1]] = value
    assert (fingerprint(changed) != fingerprint(original)) is counts


def test_the_feedback_callback_is_part_of_the_method_and_checkpointing_is_not():
    original = config("lmp")
    without_feedback = copy.deepcopy(original)
    without_feedback["trainer"]["callbacks"] = []
    assert fingerprint(without_feedback) != fingerprint(original)
    with_checkpoints = copy.deepcopy(original)
    with_checkpoints["trainer"]["callbacks"].append(
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"dirpath": "/tmp/x"}}
    )
    assert fingerprint(with_checkpoints) == fingerprint(original)


def test_key_order_and_tuples_do_not_matter():
    original = config("base")
    reordered = dict(reversed(list(copy.deepcopy(original).items())))
    reordered["data"]["crop_size"] = tuple(reordered["data"]["crop_size"])
    assert fingerprint(reordered) == fingerprint(original)


def test_a_null_argument_is_the_default_so_a_new_optional_argument_keeps_old_runs_identity():
    old = config("base")
    new = copy.deepcopy(old)
    new["model"]["init_from"] = None  # an argument added later, None by default
    new["data"]["train_sampler"] = None
    assert fingerprint(new) == fingerprint(old)
    assert "model.init_from" not in method_fields(new)


def test_a_record_of_an_older_version_with_nulls_in_its_fields_is_the_same_experiment():
    current = config("base")
    fields = dict(method_fields(current), **{"model.tiling": None, "data.train_sampler": None})
    import hashlib
    import json

    stale = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    record = {"fingerprint": stale, "method_fields": fields}  # digest computed with the nulls in, as before
    assert stale != fingerprint(current)
    assert recorded_fingerprint(record) == fingerprint(current) and same_experiment(record, current)
    assert recorded_fields(record) == method_fields(current)
    assert not differences(fields, method_fields(current))
    changed = copy.deepcopy(current)
    changed["model"]["optimizer"]["init_args"]["lr"] = 0.5
    assert not same_experiment(record, changed)
    # a record with neither fields nor config keeps its stored digest
    assert recorded_fingerprint({"fingerprint": "abc"}) == "abc"


def test_the_starting_weights_count_by_content_not_by_path(tmp_path):
    first, copied, other = tmp_path / "a.ckpt", tmp_path / "sub" / "b.ckpt", tmp_path / "c.ckpt"
    copied.parent.mkdir()
    first.write_bytes(b"weights one")
    copied.write_bytes(b"weights one")
    other.write_bytes(b"weights two")

    def run(path):
        cfg = config("base")
        cfg["model"]["init_from"] = str(path)
        return cfg

    assert method_fields(run(first))["model.init_from"].startswith("sha256:")
    assert fingerprint(run(first)) == fingerprint(run(copied))
    assert fingerprint(run(first)) != fingerprint(run(other))
    assert fingerprint(run(first)) != fingerprint(config("base"))
    other.write_bytes(b"weights three")  # the file replaced at the same path: another experiment
    import os

    os.utime(other, ns=(1, 1))
    assert method_fields(run(other))["model.init_from"] != method_fields(run(first))["model.init_from"]
    missing = tmp_path / "missing.ckpt"
    assert method_fields(run(missing))["model.init_from"] == str(missing)
