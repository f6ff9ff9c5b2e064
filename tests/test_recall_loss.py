"""Recall loss (Tian et al., ICRA 2022): hand-computed values, ignored pixels, perfect predictions, the moving average
(hand-computed state, state_dict round trip, exact resume through the real CLI), gradients, DDP counts and autocast."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import test_resume
from conftest import TINY_ENCODER
from tailseg.losses import RecallCrossEntropy, recall_cross_entropy
from tailseg.losses.recall import recall_counts, recall_weights
from tailseg.model import SegmentationModel
from test_baseline_losses import random_batch as baseline_random_batch

ROOT = Path(__file__).resolve().parents[1]
IGNORE = 255

# One image, C = 3, H = 2, W = 3 (pixels in row-major order): per pixel its logits (z_0, z_1, z_2) and its label.
PIXELS = [
    ([2.0, 0.5, -1.0], 0),  # argmax 0: a true positive of class 0
    ([0.1, 1.5, 0.3], 0),  # argmax 1: a false negative of class 0
    ([0.0, 0.2, 2.5], 2),  # argmax 2: a true positive of class 2
    ([1.2, 0.4, 0.9], 1),  # argmax 0: a false negative of class 1
    ([-0.5, 2.2, 0.1], 1),  # argmax 1: a true positive of class 1
    ([0.3, -0.2, 1.1], 0),  # argmax 2: a false negative of class 0
]
# By hand: class 0 has 3 pixels, 1 right -> recall 1/3, weight 2/3; class 1: 2 pixels, 1 right -> weight 1/2;
# class 2: 1 pixel, right -> weight 0.
HAND_WEIGHTS = [2 / 3, 1 / 2, 0.0]


def as_inputs(pixels, height, width, dtype=torch.float32):
    """[(logits, label)] in row-major order -> logits (1, C, H, W), target (1, H, W)."""
    logits = torch.tensor([z for z, _ in pixels], dtype=dtype).T.reshape(1, len(pixels[0][0]), height, width)
    return logits.contiguous(), torch.tensor([y for _, y in pixels]).reshape(1, height, width)


def hand_recall_loss(pixels, weights=None):
    """In float64 with math.log and loops: recall per class of the valid pixels, then -(1/N) sum w_y log p_y."""
    valid = [(z, y) for z, y in pixels if y != IGNORE]
    if weights is None:
        num_classes = len(pixels[0][0])
        weights = []
        for c in range(num_classes):
            labelled = [z for z, y in valid if y == c]
            right = [z for z in labelled if max(range(num_classes), key=lambda k: z[k]) == c]
            weights.append(1 - len(right) / len(labelled) if labelled else 0.0)
    total = 0.0
    for z, y in valid:
        log_p = z[y] - math.log(sum(math.exp(v) for v in z))
        total += -weights[y] * log_p
    return total / len(valid), weights


#: test_baseline_losses' random batch, 5x6 pixels a quarter of them ignored.
random_batch = functools.partial(baseline_random_batch, h=5, w=6, ignore_fraction=0.25)


# --- the value of the paper's loss ----------------------------------------------------------------------------------


def test_hand_computed_recall_and_loss():
    expected, weights = hand_recall_loss(PIXELS)
    assert weights == pytest.approx(HAND_WEIGHTS)  # the hand count agrees with the comments above
    logits, target = as_inputs(PIXELS, 2, 3, torch.float64)
    tp, n = recall_counts(logits, target, IGNORE)
    assert tp.tolist() == [1, 1, 1] and n.tolist() == [3, 2, 1]
    torch.testing.assert_close(recall_weights(tp, n), torch.tensor(HAND_WEIGHTS), rtol=0, atol=1e-7)
    assert recall_cross_entropy(logits, target, IGNORE).item() == pytest.approx(expected, rel=1e-7)
    module = RecallCrossEntropy()
    for x in (logits, logits.float()):
        out = module(x, target)
        assert out.dtype == x.dtype and out.item() == pytest.approx(expected, rel=1e-6)
    # Not the mean cross-entropy, nor the weights' normalisation: the sum over pixels divided by their number.
    assert expected != pytest.approx(hand_recall_loss(PIXELS, [1.0, 1.0, 1.0])[0], rel=1e-3)


def test_ignored_pixels_change_nothing():
    """Two more columns of ignored pixels, with arbitrary logits: one whose argmax is class 2 (a false positive of 2
    and, were it counted as class 0 or 1, a false negative of that class) and one whose argmax is class 0."""
    ignored = [([0.0, 0.0, 9.0], IGNORE), ([5.0, -3.0, 0.0], IGNORE)]
    expected, _ = hand_recall_loss(PIXELS)
    wide = [p for row in range(2) for p in PIXELS[3 * row : 3 * row + 3] + [ignored[row], ignored[1 - row]]]
    logits, target = as_inputs(wide, 2, 5, torch.float64)
    tp, n = recall_counts(logits, target, IGNORE)
    assert tp.tolist() == [1, 1, 1] and n.tolist() == [3, 2, 1]
    logits.requires_grad_(True)
    out = RecallCrossEntropy(ignore_index=IGNORE)(logits, target)
    assert out.item() == pytest.approx(expected, rel=1e-7)
    out.backward()
    assert (logits.grad[0, :, :, 3:] == 0).all()  # no gradient at ignored pixels


@pytest.mark.parametrize("seed", range(5))
def test_the_logits_of_ignored_pixels_do_not_matter(seed):
    logits, target = random_batch(seed=seed)
    other = torch.where((target == IGNORE).unsqueeze(1), torch.randn_like(logits) * 10, logits)
    loss = RecallCrossEntropy()
    assert loss(other, target).item() == loss(logits, target).item()


def test_a_batch_without_valid_pixels_gives_zero():
    logits, target = random_batch()
    logits.requires_grad_(True)
    out = RecallCrossEntropy(momentum=0.5)(logits, torch.full_like(target, IGNORE))
    out.backward()
    assert out.item() == 0 and (logits.grad == 0).all()


def test_perfect_predictions_have_weight_zero():
    """Recall 1 for every class: weights 0, loss 0, no gradient (the authors' code would give each class 1 / N_c)."""
    logits, target = random_batch(ignore_fraction=0.2)
    perfect = logits + 50 * torch.nn.functional.one_hot(target.clamp_max(3), 4).permute(0, 3, 1, 2)
    tp, n = recall_counts(perfect, target, IGNORE)
    assert (tp == n).all() and (n > 0).all()
    assert (recall_weights(tp, n) == 0).all()
    perfect.requires_grad_(True)
    out = RecallCrossEntropy()(perfect, target)
    out.backward()
    assert out.item() == 0 and (perfect.grad == 0).all()


def test_a_class_absent_from_the_batch_has_weight_zero_and_no_effect():
    logits, target = random_batch(c=5)
    target[target == 4] = 0  # class 4 absent
    tp, n = recall_counts(logits, target, IGNORE)
    assert n[4] == 0 and recall_weights(tp, n)[4] == 0
    fixed = recall_weights(tp, n).clone()
    fixed[4] = 7.0  # whatever its weight, the loss is the same
    assert (
        recall_cross_entropy(logits, target, IGNORE, fixed).item()
        == recall_cross_entropy(logits, target, IGNORE).item()
    )


def test_a_class_with_every_pixel_missed_has_weight_one():
    logits, target = as_inputs(PIXELS, 2, 3)
    target[0, 0, 2] = 1  # the pixel predicted 2 is now labelled 1: class 1 has 3 pixels, 1 right
    target[0, 0, 0] = 2  # the pixel predicted 0 is now labelled 2: class 2's one pixel is missed
    assert recall_weights(*recall_counts(logits, target, IGNORE))[2].item() == 1.0


def test_gradient_check_in_float64():
    """The weights are constants (computed from the argmax under no_grad): the gradient is the weighted CE's."""
    logits, target = as_inputs(PIXELS, 2, 3, torch.float64)
    target[0, 1, 2] = IGNORE
    weights = recall_weights(*recall_counts(logits, target, IGNORE)).double()
    x = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: recall_cross_entropy(z, target, IGNORE, weights), (x,))
    # The module itself: these logits' argmax is far from a tie, so the finite differences keep the same weights.
    module = RecallCrossEntropy().double()
    assert torch.autograd.gradcheck(lambda z: module(z, target), (x,))
    # And by hand: d/dz_{n,k} = w_{y_n} (p_{n,k} - [k = y_n]) / N.
    module(x, target).backward()
    p = torch.softmax(logits, 1)
    valid = target != IGNORE
    onehot = torch.nn.functional.one_hot(target.masked_fill(~valid, 0), 3).permute(0, 3, 1, 2)
    by_hand = weights[target.masked_fill(~valid, 0)].unsqueeze(1) * (p - onehot) * valid.unsqueeze(1) / valid.sum()
    torch.testing.assert_close(x.grad, by_hand)


def test_under_autocast_the_loss_is_the_float32_loss():
    logits, target = random_batch()
    low = logits.to(torch.bfloat16).requires_grad_(True)
    loss = RecallCrossEntropy(momentum=0.9).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(low, target)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, loss(low.detach().float(), target), rtol=1e-6, atol=1e-7)
    out.backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"momentum": 1.0}, r"RecallCrossEntropy: momentum must be None or a number in \[0, 1\), got 1.0"),
        ({"momentum": -0.1}, r"momentum must be None or a number in \[0, 1\), got -0.1"),
        ({"momentum": float("nan")}, r"got nan"),
        ({"momentum": True}, r"got True"),
        ({"momentum": "0.9"}, r"got '0.9'"),
        ({"ignore_index": 2.5}, r"RecallCrossEntropy: ignore_index must be an integer, got 2.5"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecallCrossEntropy(**kwargs)


def test_bad_shapes_and_class_numbers_are_named():
    loss = RecallCrossEntropy(momentum=0.5)
    with pytest.raises(ValueError, match=r"RecallCrossEntropy: expected logits \(B, C, H, W\)"):
        loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    loss(*random_batch(c=4))
    with pytest.raises(
        ValueError, match=r"RecallCrossEntropy: the running recall has 4 classes but the logits have C=3"
    ):
        loss(*random_batch(c=3))
    with pytest.raises(ValueError, match=r"RecallCrossEntropy: class_pixel_counts must be a 2-D"):
        loss.set_class_statistics(torch.ones(3))


# --- the moving average ---------------------------------------------------------------------------------------------


def test_moving_average_state_after_two_batches_by_hand():
    m = 0.75
    loss = RecallCrossEntropy(momentum=m)
    logits1, target1 = as_inputs(PIXELS, 2, 3)  # recall 1/3, 1/2, 1
    out1 = loss(logits1, target1)
    assert loss.running_recall.tolist() == pytest.approx([1 / 3, 1 / 2, 1.0])  # first batch: its own recall
    assert loss.recall_batches.tolist() == [1, 1, 1]
    assert out1.item() == pytest.approx(hand_recall_loss(PIXELS)[0], rel=1e-6)
    # Batch 2: class 0 all right (recall 1), class 1 with 1 of 3 right (recall 1/3), class 2 absent.
    second = [
        ([3.0, 0.0, 0.0], 0),
        ([2.0, 1.0, 0.0], 0),
        ([0.0, 3.0, 0.0], 1),
        ([1.0, 0.0, 0.5], 1),
        ([0.0, 0.0, 1.0], 1),
        ([0.0, 9.0, 0.0], IGNORE),
    ]
    logits2, target2 = as_inputs(second, 2, 3)
    out2 = loss(logits2, target2)
    state = [m * (1 / 3) + (1 - m) * 1.0, m * (1 / 2) + (1 - m) * (1 / 3), 1.0]  # class 2 kept
    assert loss.running_recall.tolist() == pytest.approx(state)
    assert loss.recall_batches.tolist() == [2, 2, 1]
    expected, _ = hand_recall_loss(second, [1 - state[0], 1 - state[1], 0.0])
    assert out2.item() == pytest.approx(expected, rel=1e-6)
    assert out2.item() != pytest.approx(hand_recall_loss(second)[0], rel=1e-3)  # not the batch's own recall


def test_momentum_zero_is_the_per_batch_loss():
    per_batch, averaged = RecallCrossEntropy(), RecallCrossEntropy(momentum=0.0)
    for seed in range(3):
        logits, target = random_batch(seed=seed)
        assert averaged(logits, target).item() == per_batch(logits, target).item()


def test_eval_mode_leaves_the_state_alone():
    loss = RecallCrossEntropy(momentum=0.9)
    loss(*random_batch(seed=0))
    state = loss.state_dict()
    logits, target = random_batch(seed=1)
    value = loss.eval()(logits, target)
    assert all(torch.equal(state[k], v) for k, v in loss.state_dict().items())
    assert loss.train()(logits, target).item() == value.item()  # the loss the training step would take


def test_the_state_dict_round_trips_into_a_fresh_module():
    loss = RecallCrossEntropy(momentum=0.9)
    assert dict(loss.state_dict()) == {}  # nothing before the number of classes is known
    for seed in range(3):
        loss(*random_batch(seed=seed))
    state = loss.state_dict()
    assert set(state) == {"running_recall", "recall_batches"}
    fresh = RecallCrossEntropy(momentum=0.9)
    fresh.load_state_dict(state)  # strict: the None buffers take the saved values
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())
    batch = random_batch(seed=7)
    assert fresh(*batch).item() == loss(*batch).item()
    assert torch.equal(fresh.running_recall, loss.running_recall)


def test_the_model_checkpoint_holds_the_state():
    """The loss is a submodule: its state is in the model's state_dict, created at the start of fitting."""
    model = SegmentationModel(num_classes=4, encoder_name=TINY_ENCODER, loss=RecallCrossEntropy(momentum=0.9))
    model.loss.set_class_statistics(torch.tensor([[5, 3, 2, 1], [1, 0, 0, 2]]))  # what setup() does when fitting
    assert model.state_dict()["loss.running_recall"].tolist() == [0.0] * 4
    model.loss(*random_batch(seed=2))
    fresh = SegmentationModel(num_classes=4, encoder_name=TINY_ENCODER, loss=RecallCrossEntropy(momentum=0.9))
    fresh.load_state_dict(model.state_dict())
    for key in ("loss.running_recall", "loss.recall_batches"):
        assert torch.equal(fresh.state_dict()[key], model.state_dict()[key])


def test_exact_resume_through_the_cli(tmp_path, monkeypatch, one_thread):
    """10 steps uninterrupted against stopped at step 6 and resumed with --ckpt_path: the same weights, optimizer
    state, metrics and running recall (`test_resume`'s helpers)."""
    monkeypatch.setitem(test_resume.CONFIGS, "recall", ROOT / "experiments" / "synthetic" / "recall.yaml")
    ema = ("--model.loss.init_args.momentum", "0.9")
    test_resume._fit("recall", tmp_path, 0, *ema)
    full = tmp_path / "version_0"
    at_6 = torch.load(test_resume._checkpoint(full, 6), map_location="cpu", weights_only=False)["state_dict"]
    assert at_6["loss.recall_batches"].max() == 6  # a class in every batch so far: the state matters to the resume
    test_resume._fit("recall", tmp_path, 0, *ema, "--ckpt_path", str(test_resume._checkpoint(full, 6)))
    test_resume._assert_same_run(full, tmp_path / "version_1", 6)
    a, b = (test_resume._final_state(run)["weights"] for run in (full, tmp_path / "version_1"))
    assert a["loss.recall_batches"].max() == test_resume.STEPS
    for key in ("loss.running_recall", "loss.recall_batches"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["loss.running_recall"], at_6["loss.running_recall"])


# --- devices and processes ------------------------------------------------------------------------------------------


def _ddp_worker(rank: int, store: str, logits: torch.Tensor, target: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        loss = RecallCrossEntropy(momentum=0.5)
        half = slice(rank, rank + 1)  # each rank holds one image of the global batch
        values = [loss(logits[i][half], target[i][half]).item() for i in range(2)]
        torch.save({"values": values, "state": loss.state_dict()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_under_ddp_the_recall_is_that_of_the_global_batch(tmp_path):
    batches = [random_batch(b=2, seed=s) for s in (0, 1)]
    logits, target = torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])
    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), logits, target, str(tmp_path / "out")), nprocs=2)
    single = RecallCrossEntropy(momentum=0.5)
    results = [torch.load(tmp_path / f"out.{rank}", weights_only=False) for rank in range(2)]
    for i in range(2):
        single(logits[i], target[i])  # one process on the whole batch: the same state
        weights = 1 - single.running_recall
        for rank, result in enumerate(results):
            own = recall_cross_entropy(logits[i][rank : rank + 1], target[i][rank : rank + 1], IGNORE, weights)
            assert result["values"][i] == pytest.approx(own.item(), rel=1e-6)
    for result in results:
        assert all(torch.equal(result["state"][k], v) for k, v in single.state_dict().items())
    # Not the rank's own recall: the two images' recalls differ.
    own_weights = recall_weights(*recall_counts(logits[0][:1], target[0][:1], IGNORE))
    assert not torch.allclose(own_weights, recall_weights(*recall_counts(logits[0], target[0], IGNORE)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_cuda_device_everything_stays_on_the_logits_device():
    logits, target = random_batch()
    loss = RecallCrossEntropy(momentum=0.9)
    loss.set_class_statistics(torch.ones(2, 4))  # the state is created on the CPU, before the model moves
    cpu = RecallCrossEntropy(momentum=0.9)
    for _ in range(2):
        expected = cpu(logits, target)
        out = loss(logits.cuda(), target.cuda())
        assert out.device.type == "cuda" and loss.running_recall.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.running_recall.cpu(), cpu.running_recall)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert loss(logits.cuda().bfloat16(), target.cuda()).dtype == torch.float32
