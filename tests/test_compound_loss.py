"""`tailseg.losses.Sum`: a weighted sum of losses given by class_path, each term logged.

The sum's value and gradient are the weighted sums of its terms' (in float64; in float32 with smp's Lovász, which
has no float64; under bf16 autocast); the class statistics reach a term inside it and its buffers travel in state
dicts and checkpoints; the ignore labels of the terms and the weights are checked with errors naming the field; the
terms' names; through the real CLI, the per-term values logged in metrics.csv weigh up to the logged loss, and
`--print_config` round-trips the terms; the every-config test's check of the nested terms.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import torch
import yaml

from conftest import TINY_ENCODER, tiny_synthetic_args
from tailseg.cli import main
from tailseg.losses import CrossEntropy, FocalLoss, LossMaxPooling, MedianFrequencyCrossEntropy, Sum
from tailseg.losses.compound import term_name, unique_names
from tailseg.losses.focal import inverse_frequency_weights
from tailseg.model import SegmentationModel
from test_cli import assert_built_as_configured

ROOT = Path(__file__).resolve().parents[1]
CE_LOVASZ = ROOT / "experiments" / "synthetic" / "ce_lovasz.yaml"
C = 5


def _batch(dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, C, 8, 8, generator=generator, dtype=torch.float64).to(dtype)
    target = torch.randint(0, C, (2, 8, 8), generator=generator)
    target[0, :2] = 255  # some ignored pixels
    return logits, target


def _lovasz():
    return smp.losses.LovaszLoss(mode="multiclass", ignore_index=255)


def _dice():
    return smp.losses.DiceLoss(mode="multiclass", ignore_index=255)


def _value_and_grad(loss, logits, target):
    leaf = logits.detach().clone().requires_grad_(True)
    value = loss(leaf, target)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


@pytest.mark.parametrize(
    ("dtype", "second", "tolerance"),
    [
        # float64: the sums agree to float64 rounding (smp's Lovász computes in float32 only, so Dice stands in)
        (torch.float64, _dice, {"rtol": 1e-12, "atol": 1e-12}),
        # float32 with smp's Lovász: to float32 rounding (autograd adds the terms' gradients in its own order)
        (torch.float32, _lovasz, {"rtol": 1e-5, "atol": 1e-7}),
    ],
    ids=["float64-dice", "float32-lovasz"],
)
def test_value_and_gradient_are_the_weighted_sums_of_the_terms(dtype, second, tolerance):
    logits, target = _batch(dtype)
    terms = [CrossEntropy(), second(), LossMaxPooling(p=1.3, ratio=0.25)]
    weights = [0.7, 1.3, 0.5]
    loss = Sum(terms, weights)
    value, grad = _value_and_grad(loss, logits, target)
    parts = [_value_and_grad(term, logits, target) for term in terms]
    assert value.dtype == dtype and grad.dtype == dtype
    expected = sum(w * v for w, (v, _) in zip(weights, parts, strict=True))
    expected_grad = sum(w * g for w, (_, g) in zip(weights, parts, strict=True))
    torch.testing.assert_close(value, expected, **tolerance)
    torch.testing.assert_close(grad, expected_grad, **tolerance)
    # every term contributes a gradient of its own, unlike the others' (none is lost or doubled in the sum)
    assert all(g.abs().sum() > 0 for _, g in parts)
    assert not torch.allclose(parts[0][1], parts[1][1]) and not torch.allclose(parts[0][1], parts[2][1])
    # the kept per-term values are the unweighted, detached values of the terms
    assert list(loss.term_values) == ["cross_entropy", term_name(terms[1]), "loss_max_pooling"]
    for kept, (v, _) in zip(loss.term_values.values(), parts, strict=True):
        assert not kept.requires_grad
        torch.testing.assert_close(kept, v, **tolerance)


def test_under_bf16_autocast_each_term_computes_in_float32():
    logits, target = _batch(torch.bfloat16)
    terms = [CrossEntropy(), _lovasz()]
    loss = Sum(terms, [0.7, 1.3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits, target)
    assert value.dtype == torch.float32
    expected = 0.7 * terms[0](logits.float(), target) + 1.3 * terms[1](logits.float(), target)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)


def test_default_weights_are_one():
    logits, target = _batch(torch.float32)
    loss = Sum([CrossEntropy(), _lovasz()])
    assert loss.weights == [1.0, 1.0]
    torch.testing.assert_close(loss(logits, target), CrossEntropy()(logits, target) + _lovasz()(logits, target))


class _Constant(torch.nn.Module):
    """A term whose value is a fixed number (inf, NaN), with a gradient path to the logits."""

    def __init__(self, number: float) -> None:
        super().__init__()
        self.number = number

    def forward(self, logits, target):
        return logits.sum() * 0 + self.number


@pytest.mark.parametrize("number", [math.inf, math.nan])
def test_a_term_of_weight_0_is_logged_but_left_out_of_the_loss_and_its_gradient(number):
    logits, target = _batch()
    loss = Sum([CrossEntropy(), _Constant(number)], [0.7, 0.0])
    value, grad = _value_and_grad(loss, logits, target)
    ce_value, ce_grad = _value_and_grad(CrossEntropy(), logits, target)
    torch.testing.assert_close(value, 0.7 * ce_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, 0.7 * ce_grad, rtol=1e-12, atol=1e-12)
    kept = loss.term_values[term_name(loss.terms[1])]
    assert math.isnan(kept.item()) if math.isnan(number) else kept.item() == number


def test_class_statistics_reach_a_term_and_its_buffers_travel_in_the_state_dict():
    counts = torch.tensor([[40, 30, 20, 10, 25], [50, 0, 30, 15, 20], [10, 5, 0, 0, 60]])
    logits, target = _batch()
    loss = Sum([CrossEntropy(), FocalLoss(gamma=2.0, alpha="inverse_frequency"), MedianFrequencyCrossEntropy()])
    with pytest.raises(RuntimeError, match="FocalLoss: class weights are not set"):
        loss(logits, target)
    loss.set_class_statistics(counts)
    torch.testing.assert_close(loss.terms[1].class_weights, inverse_frequency_weights(counts))
    assert loss.terms[2].class_weights is not None
    state = loss.state_dict()
    assert set(state) == {"terms.1.class_weights", "terms.2.class_weights"}

    fresh = Sum([CrossEntropy(), FocalLoss(gamma=2.0, alpha="inverse_frequency"), MedianFrequencyCrossEntropy()])
    assert fresh.terms[1].class_weights is None
    fresh.load_state_dict(state)
    for k in (1, 2):
        torch.testing.assert_close(fresh.terms[k].class_weights, loss.terms[k].class_weights)
    torch.testing.assert_close(fresh(logits, target), loss(logits, target))


def test_the_model_state_dict_holds_the_term_buffers():
    counts = torch.tensor([[40, 30, 20, 10, 25], [50, 5, 30, 15, 20]])
    model = SegmentationModel(C, encoder_name=TINY_ENCODER, loss=Sum([CrossEntropy(), FocalLoss()]))
    model.loss.set_class_statistics(counts)  # what the model's setup does (through the CLI: the last test)
    state = model.state_dict()
    assert "loss.terms.1.class_weights" in state
    fresh = SegmentationModel(C, encoder_name=TINY_ENCODER, loss=Sum([CrossEntropy(), FocalLoss()]))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.loss.terms[1].class_weights, inverse_frequency_weights(counts))
    # the per-term validation means are not checkpoint state
    assert not any(key.startswith("eval_loss_terms") for key in state)
    assert set(model.eval_loss_terms) == {"val_cross_entropy", "val_focal", "test_cross_entropy", "test_focal"}


def test_terms_that_disagree_on_ignore_index_are_named():
    with pytest.raises(ValueError, match=r"disagree on ignore_index: cross_entropy \(255\), lovasz \(None\)"):
        Sum([CrossEntropy(), smp.losses.LovaszLoss(mode="multiclass")])
    with pytest.raises(ValueError, match=r"cross_entropy \(255\), dice \(0\)"):
        Sum([CrossEntropy(), smp.losses.DiceLoss(mode="multiclass", ignore_index=0)])


class MeanLogit(torch.nn.Module):
    """A loss without an ignore_index attribute."""

    def forward(self, logits, target):
        return logits.mean()


def test_ignore_index_is_the_terms_and_the_model_checks_it():
    assert (
        Sum([CrossEntropy(ignore_index=3), smp.losses.LovaszLoss(mode="multiclass", ignore_index=3)]).ignore_index == 3
    )
    assert Sum([MeanLogit(), CrossEntropy()]).ignore_index == 255  # only the terms that have one count
    assert not hasattr(Sum([MeanLogit()]), "ignore_index")  # the model then takes the data's
    SegmentationModel(C, encoder_name=TINY_ENCODER, loss=Sum([MeanLogit()]))
    with pytest.raises(ValueError, match=r"loss's ignore_index \(0\) differs from the data's \(255\)"):
        SegmentationModel(C, encoder_name=TINY_ENCODER, loss=Sum([CrossEntropy(ignore_index=0)]))


@pytest.mark.parametrize(
    ("terms", "weights", "message"),
    [
        ([], None, r"Sum: terms must hold at least one loss"),
        (["cross_entropy"], None, r"Sum: terms\[0\] must be an nn.Module"),
        ([CrossEntropy(), CrossEntropy()], [1.0], r"Sum: weights has 1 entries but terms has 2"),
        ([CrossEntropy(), CrossEntropy()], [1.0, -0.5], r"Sum: weights\[1\] must be a finite number >= 0, got -0.5"),
        ([CrossEntropy()], [math.nan], r"Sum: weights\[0\] must be a finite number >= 0, got nan"),
        ([CrossEntropy()], [math.inf], r"Sum: weights\[0\] must be a finite number >= 0, got inf"),
        ([CrossEntropy()], ["1"], r"Sum: weights\[0\] must be a finite number >= 0, got '1'"),
        ([CrossEntropy(), CrossEntropy()], [0.0, 0], r"Sum: weights must not all be 0"),
    ],
)
def test_bad_terms_or_weights_name_the_field(terms, weights, message):
    with pytest.raises(ValueError, match=message):
        Sum(terms, weights)


def test_a_term_that_returns_no_scalar_is_named():
    loss = Sum([CrossEntropy(), torch.nn.CrossEntropyLoss(reduction="none", ignore_index=255)])
    with pytest.raises(ValueError, match=r"term cross_entropy_2 \(CrossEntropyLoss\) must return a scalar"):
        loss(*_batch())


def test_term_names():
    assert term_name(CrossEntropy()) == "cross_entropy"
    assert term_name(LossMaxPooling()) == "loss_max_pooling"
    assert term_name(_lovasz()) == "lovasz"
    assert term_name(smp.losses.DiceLoss(mode="multiclass")) == "dice"
    assert term_name(torch.nn.BCEWithLogitsLoss()) == "bce_with_logits"
    dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=255)
    assert Sum([dice, CrossEntropy(), smp.losses.DiceLoss(mode="multiclass", ignore_index=255)]).names == [
        "dice_1", "cross_entropy", "dice_2"
    ]  # fmt: skip
    assert unique_names(["a", "a", "a_1"]) == ["a_1", "a_2", "a_1_2"]
    assert unique_names(["a", "a_2", "a"]) == ["a_1", "a_2", "a_2_2"]


def test_nested_terms_are_checked_as_configured():
    built = Sum([CrossEntropy(), _lovasz()], [0.7, 1.3])
    entry = {
        "class_path": "tailseg.losses.Sum",
        "init_args": {
            "terms": [
                {"class_path": "tailseg.losses.CrossEntropy", "init_args": {"ignore_index": 255}},
                {"class_path": "segmentation_models_pytorch.losses.LovaszLoss",
                 "init_args": {"mode": "multiclass", "ignore_index": 255}},
            ],
            "weights": [0.7, 1.3],
        },
    }  # fmt: skip
    assert_built_as_configured(entry, built, "", "model.loss")

    wrong_class = yaml.safe_load(yaml.safe_dump(entry))
    wrong_class["init_args"]["terms"][1]["class_path"] = "segmentation_models_pytorch.losses.DiceLoss"
    with pytest.raises(AssertionError, match=r"model.loss.terms\[1\]: built .*LovaszLoss, the YAML asks for "
                                             r"segmentation_models_pytorch.losses.DiceLoss"):  # fmt: skip
        assert_built_as_configured(wrong_class, built, "", "model.loss")

    wrong_argument = yaml.safe_load(yaml.safe_dump(entry))
    wrong_argument["init_args"]["terms"][1]["init_args"]["mode"] = "binary"
    with pytest.raises(AssertionError, match=r"model.loss.terms\[1\].mode: built 'multiclass', the YAML says 'binary'"):
        assert_built_as_configured(wrong_argument, built, "", "model.loss")

    one_more = yaml.safe_load(yaml.safe_dump(entry))
    one_more["init_args"]["terms"].append({"class_path": "tailseg.losses.CrossEntropy"})
    with pytest.raises(AssertionError, match=r"model.loss.terms: built 2 entries, the YAML has 3"):
        assert_built_as_configured(one_more, built, "", "model.loss")

    wrong_weights = yaml.safe_load(yaml.safe_dump(entry))
    wrong_weights["init_args"]["weights"] = [1.0, 1.0]
    with pytest.raises(AssertionError, match=r"model.loss.weights: built \[0.7, 1.3\]"):
        assert_built_as_configured(wrong_weights, built, "", "model.loss")


def _terms_weigh_up_to_the_loss(frame: pd.DataFrame, stage: str, weights: dict[str, float]) -> int:
    """Check, on every row of metrics.csv holding `<stage>/loss`, that the weighted sum of the logged terms is the
    logged loss; return the number of such rows."""
    rows = frame[frame[f"{stage}/loss"].notna()]
    for _, row in rows.iterrows():
        total = sum(weight * row[f"{stage}/loss/{name}"] for name, weight in weights.items())
        assert total == pytest.approx(row[f"{stage}/loss"], rel=1e-5, abs=1e-6), f"{stage}, step {row['step']}"
    return len(rows)


def test_cli_fit_logs_each_term_and_they_weigh_up_to_the_loss(tmp_path, one_thread):
    """A short fit of ce_lovasz.yaml (weights set to 0.7, 1.3 so that a sum that ignores them fails) logs
    train/loss/cross_entropy and train/loss/lovasz at every logged step and val/loss/... at the validation; the
    checkpoint rebuilds the same sum."""
    cli = main(["fit", "--config", str(CE_LOVASZ), *tiny_synthetic_args(), "--model.loss.init_args.weights",
                "[0.7, 1.3]", "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1",
                "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert isinstance(cli.model.loss, Sum) and cli.model.loss.weights == [0.7, 1.3]
    weights = dict(zip(cli.model.loss.names, cli.model.loss.weights, strict=True))
    assert weights == {"cross_entropy": 0.7, "lovasz": 1.3}
    frame = pd.read_csv(tmp_path / "version_0" / "metrics.csv")
    for stage in ("train", "val"):
        assert {f"{stage}/loss/{name}" for name in weights} <= set(frame.columns)
    assert _terms_weigh_up_to_the_loss(frame, "train", weights) == 4
    assert _terms_weigh_up_to_the_loss(frame, "val", weights) == 1

    (checkpoint,) = (tmp_path / "version_0" / "checkpoints").glob("*.ckpt")
    model = SegmentationModel.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    assert isinstance(model.loss, Sum) and model.loss.names == ["cross_entropy", "lovasz"]
    assert model.loss.weights == [0.7, 1.3] and model.loss.ignore_index == 255


def test_print_config_round_trips_the_terms(tmp_path, capsys, one_thread):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CE_LOVASZ), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    loss = printed["model"]["loss"]
    assert loss["class_path"] == "tailseg.losses.Sum" and loss["init_args"]["weights"] == [1.0, 1.0]
    assert [t["class_path"] for t in loss["init_args"]["terms"]] == [
        "tailseg.losses.CrossEntropy", "segmentation_models_pytorch.losses.LovaszLoss"
    ]  # fmt: skip
    path = tmp_path / "printed.yaml"
    path.write_text(yaml.safe_dump(printed))
    cli = main(["fit", "--config", str(path), *tiny_synthetic_args(), "--trainer.fast_dev_run", "true",
                "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert_built_as_configured(loss, cli.model.loss, "", "model.loss")


def test_cli_fit_sets_and_checkpoints_the_class_statistics_of_a_term(tmp_path, one_thread):
    """Through the model's own channel (its setup at fit start), the DataModule's class pixel counts reach a focal
    term inside a Sum; the checkpoint holds the term's class weights and loading it restores them."""
    loss = {
        "class_path": "tailseg.losses.Sum",
        "init_args": {
            "terms": [
                {"class_path": "tailseg.losses.CrossEntropy"},
                {"class_path": "tailseg.losses.FocalLoss", "init_args": {"gamma": 2.0, "alpha": "inverse_frequency"}},
            ],
            "weights": [1.0, 0.5],
        },
    }
    cli = main(["fit", "--config", str(ROOT / "experiments" / "synthetic" / "base.yaml"), *tiny_synthetic_args(),
                "--model.loss", json.dumps(loss), "--trainer.max_steps", "4", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    expected = inverse_frequency_weights(torch.as_tensor(cli.datamodule.class_pixel_counts))
    torch.testing.assert_close(cli.model.loss.terms[1].class_weights.cpu(), expected)
    assert_built_as_configured(loss, cli.model.loss, "", "model.loss")
    (checkpoint,) = (tmp_path / "version_0" / "checkpoints").glob("*.ckpt")
    assert "loss.terms.1.class_weights" in torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    model = SegmentationModel.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    torch.testing.assert_close(model.loss.terms[1].class_weights, expected)
