"""The model's GPU-path options on the CPU: channels-last and torch.compile give the eager model's results."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_ENCODER, tiny_synthetic_args
from tailseg.cli import main
from tailseg.losses import LossMaxPooling
from tailseg.model import SegmentationModel

ROOT = Path(__file__).resolve().parents[1]


def _model(**options) -> SegmentationModel:
    """A tiny model without dropout: a dropout mask is drawn in memory order, so NHWC and compiled kernels
    would draw other masks from the same seed and training outputs could not be compared."""
    torch.manual_seed(0)
    model = SegmentationModel(num_classes=5, encoder_name=TINY_ENCODER, loss=LossMaxPooling(), **options)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _outputs_and_grads(model: SegmentationModel, images: torch.Tensor, target: torch.Tensor):
    model.train()
    logits = model(images)
    loss = model.loss(logits, target)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.eval()
    with torch.no_grad():
        evaluated = model(images)
    return logits.detach(), loss.detach(), grads, evaluated


@pytest.mark.parametrize("option", ["channels_last", "compile"])
def test_option_matches_the_eager_model(option):
    """Same weights, same batch: logits, LMP loss and evaluation logits agree with the plain eager model to
    float32 reordering (fused / NHWC kernels sum in another order), and every gradient is within 1e-3 of the
    float64 gradient (relative to its norm), or at least as close to it as the eager float32 gradient within 2x
    (measured: eager float32 up to 7e-3, channels-last and compiled up to 2e-4)."""
    eager, other = _model(), _model(**{option: True})
    assert list(other.state_dict()) == list(eager.state_dict())  # checkpoints are interchangeable
    other.load_state_dict(eager.state_dict())
    if option == "compile":
        assert other.net._compiled_call_impl is not None
    else:
        conv = next(m for m in other.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 64, generator=g)
    target = torch.randint(0, 5, (2, 64, 64), generator=g)
    exact = _outputs_and_grads(copy.deepcopy(eager).double(), images.double(), target)  # float64 reference
    reference, got = _outputs_and_grads(eager, images, target), _outputs_and_grads(other, images, target)
    for ref, out in zip(reference[:2] + reference[3:], got[:2] + got[3:], strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert reference[2].keys() == got[2].keys() == exact[2].keys()
    total = torch.cat([grad.flatten() for grad in exact[2].values()]).norm().item()
    for name, grad in exact[2].items():  # relative to the gradient's norm (at least 1e-4 of the whole gradient's:
        scale = max(grad.norm().item(), 1e-4 * total)  # a bias before a batch norm has an exact gradient of 0)
        eager_error = (reference[2][name] - grad).norm().item() / scale
        error = (got[2][name] - grad).norm().item() / scale
        assert error <= max(2 * eager_error, 1e-3), f"{name}: {error:.1e} from float64, eager float32 {eager_error:.1e}"


def test_channels_last_from_the_cli(tmp_path):
    """`--model.channels_last true` trains and validates through the CLI (the option the GPU configs use)."""
    main(["fit", "--config", str(ROOT / "experiments/synthetic/lmp.yaml"), *tiny_synthetic_args(),
          "--model.channels_last", "true", "--trainer.max_steps", "3", "--trainer.check_val_every_n_epoch", "1",
          "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
          "--report_path", str(tmp_path / "report.json")])  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["global_step"] == 3 and report["config"]["model"]["channels_last"] is True
