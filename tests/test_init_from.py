"""`model.init_from`: a fit from scratch starts from a file's network weights (all, or some modules), a head of
another number of classes keeps its fresh initialisation, weights of another network are refused before
anything runs, and a fine-tune resumed with `--ckpt_path` takes its checkpoint's weights (the file unread)
and reaches the uninterrupted fine-tune exactly (`tailseg.init_weights`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from cli_runner import tailseg
from conftest import TINY_ENCODER, tiny_synthetic_args
from tailseg import init_weights
from tailseg.cli import main
from tailseg.model import SegmentationModel
from test_resume import _assert_same_run, _fit

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "synthetic" / "base.yaml"


class WeightsAtTrainStart(pl.Callback):
    """Saves the network's state_dict to `path` when training starts (after `on_fit_start` and any restore)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        torch.save({k: v.clone() for k, v in pl_module.net.state_dict().items()}, self.path)


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory) -> Path:
    """The final checkpoint of a real tiny `tailseg fit` (2 steps of the synthetic BASE config)."""
    root = tmp_path_factory.mktemp("source")
    main(["fit", "--config", str(BASE), *tiny_synthetic_args(train=4), "--trainer.max_steps", "2",
          "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"])  # fmt: skip
    (checkpoint,) = (root / "version_0" / "checkpoints").glob("*.ckpt")
    return checkpoint


def _classes(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]["num_classes"])


def _model(num_classes: int, seed: int = 0, **options) -> SegmentationModel:
    torch.manual_seed(seed)
    return SegmentationModel(num_classes=num_classes, encoder_name=TINY_ENCODER, **options)


def _net_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}


def _assert_loaded(model: SegmentationModel, source: dict, fresh: SegmentationModel, loaded: set[str]) -> None:
    """`model.net`'s tensors equal `source`'s in the modules `loaded` and the fresh model's elsewhere, and the test
    can tell the two apart (every module differs somewhere between the source and the fresh model)."""
    fresh_state = fresh.net.state_dict()
    for module in init_weights.MODULES:
        keys = [k for k in fresh_state if k.startswith(f"{module}.")]
        assert any(not torch.equal(source[k], fresh_state[k]) for k in keys), module
        for key in keys:
            expected = source[key] if module in loaded else fresh_state[key]
            assert torch.equal(model.net.state_dict()[key], expected), f"{key} ({module}, loaded: {module in loaded})"


@pytest.mark.parametrize("modules", [None, ["encoder"]], ids=["all", "encoder"])
@pytest.mark.parametrize("kind", ["checkpoint", "state_dict", "wrapped_state_dict"])
def test_the_chosen_modules_are_loaded_and_the_others_untouched(kind, modules, source_checkpoint, tmp_path):
    classes = _classes(source_checkpoint)
    if kind == "checkpoint":  # a tailseg checkpoint: state_dict with `net.` keys, the loss's and metrics' beside them
        path, source = source_checkpoint, _net_weights(source_checkpoint)
    else:  # a plain network state dict (another seed), as is or under "state_dict"
        source = _model(classes, seed=1).net.state_dict()
        path = tmp_path / "weights.pt"
        torch.save(source if kind == "state_dict" else {"state_dict": source}, path)
    fresh = _model(classes)
    model = _model(classes, init_from=str(path), init_from_modules=modules)
    model.load_init_from()
    _assert_loaded(model, source, fresh, set(modules or init_weights.MODULES))


def test_a_head_of_another_number_of_classes_keeps_its_fresh_init(tmp_path):
    source = _model(7, seed=1).net.state_dict()
    path = tmp_path / "seven_classes.pt"
    torch.save(source, path)
    fresh, model = _model(5), _model(5, init_from=str(path))
    with pytest.warns(UserWarning, match=r"segmentation_head not loaded, its weights have other shapes "
                      r"\(segmentation_head\.0\.weight \[7, 256, 1, 1\] in the file vs \[5, 256, 1, 1\] here"):  # fmt: skip
        model.load_init_from()
    head = [k for k in source if k.startswith("segmentation_head.")]
    _assert_loaded(model, {**source, **{k: torch.zeros(1) for k in head}}, fresh, {"encoder", "decoder"})


def test_keys_that_do_not_fit_and_unreadable_files_are_refused(tmp_path):
    source = _model(5, seed=1).net.state_dict()
    first = next(iter(source))
    del source[first]
    source["decoder.extra.weight"] = torch.zeros(2)
    path = tmp_path / "edited.pt"
    torch.save(source, path)
    with pytest.raises(ValueError) as refused:
        _model(5, init_from=str(path)).load_init_from()
    message = str(refused.value)
    assert message.startswith(
        f"model.init_from: {path} does not fit this network's encoder, decoder, segmentation_head"
    )
    assert f"1 keys missing from the file ({first})" in message and "(decoder.extra.weight)" in message
    assert "\n" not in message
    _model(5, init_from=str(path), init_from_modules=["segmentation_head"]).load_init_from()  # other modules: ignored

    with pytest.raises(ValueError, match=f"^model.init_from: {tmp_path / 'missing.pt'} is not a file$"):
        _model(5, init_from=str(tmp_path / "missing.pt")).load_init_from()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"^model.init_from: {tmp_path / 'garbage.pt'} cannot be read"):
        _model(5, init_from=str(tmp_path / "garbage.pt")).load_init_from()


def test_another_encoder_is_refused_before_the_run_starts(source_checkpoint, tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(
        SegmentationModel(num_classes=_classes(source_checkpoint), encoder_name="resnet18").net.state_dict(), path
    )
    root = tmp_path / "run"
    done = tailseg("fit", "--config", str(BASE), *tiny_synthetic_args(train=4), "--trainer.max_steps", "2",
                   "--trainer.default_root_dir", str(root), "--model.init_from", str(path), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tailseg fit: error: model.init_from: {path} does not fit"), lines
    assert "keys missing from the file (encoder.model.conv_stem.weight, " in lines[0]
    assert "keys this network does not have (encoder.conv1.weight, " in lines[0] and " more)" in lines[0]
    assert not root.exists()  # no run folder, no checkpoint, no step


def test_an_unknown_module_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^model\.init_from_modules: unknown module 'head'; choose from encoder, "
                       r"decoder, segmentation_head$"):  # fmt: skip
        _model(5, init_from_modules=["encoder", "head"])
    done = tailseg("fit", "--config", str(BASE), *tiny_synthetic_args(train=4), "--trainer.default_root_dir",
                   str(tmp_path / "run"), "--model.init_from_modules", "[decoder, heads]", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().endswith("unknown module 'heads'; choose from encoder, decoder, "
                                                                  "segmentation_head"), done.stderr[-2000:]  # fmt: skip


def test_a_fine_tune_trains_and_resumes_exactly(source_checkpoint, tmp_path, one_thread, monkeypatch):
    """The fine-tune starts from the file's weights (found no checkpoint under `--ckpt_path last`: a fresh start);
    stopped by an exception inside step 2 and resumed from its `last.ckpt`, it starts from the checkpoint's weights
    without reading the file, and ends with the uninterrupted fine-tune's weights, optimizer, sampler and metrics.
    `validate` of the fine-tune's checkpoint needs no file either."""
    init = Path(shutil.copy(source_checkpoint, tmp_path / "init.ckpt"))
    reads = []
    read = init_weights.read_weights
    monkeypatch.setattr(init_weights, "read_weights", lambda path: reads.append(path) or read(path))
    short = ("--trainer.max_steps", "4", "--data.train.init_args.num_images", "4")  # 2 steps an epoch
    tune = (*short, "--model.init_from", str(init), "--ckpt_path", "last")

    def record(name: str) -> tuple[str, ...]:
        return ("--trainer.callbacks+=test_init_from.WeightsAtTrainStart", "--trainer.callbacks.path",
                str(tmp_path / f"{name}.pt"))  # fmt: skip

    _fit("base", tmp_path / "full", 0, *tune, *record("full"))
    assert len(reads) == 1  # read and checked before the run, loaded when fitting starts
    source = _net_weights(source_checkpoint)
    started = torch.load(tmp_path / "full.pt", weights_only=True)
    assert started.keys() == source.keys() and all(torch.equal(started[k], source[k]) for k in source)

    with pytest.raises(RuntimeError, match="simulated failure at step 2"):
        _fit("base", tmp_path / "part", 0, *tune, "--trainer.callbacks+=test_resume.FailAtStep",
             "--trainer.callbacks.step", "2")  # fmt: skip
    last = tmp_path / "part" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2
    reads.clear()
    _fit("base", tmp_path / "part", 0, *tune, *record("resumed"), "--ckpt_path", str(last))
    resumed, saved = torch.load(tmp_path / "resumed.pt", weights_only=True), _net_weights(last)
    assert all(torch.equal(resumed[k], saved[k]) for k in saved)  # the checkpoint's weights, not the file's
    _assert_same_run(tmp_path / "full" / "version_0", tmp_path / "part" / "version_1", 2)
    assert reads == []  # nor was the file read

    init.unlink()  # evaluating the fine-tune (its hyper-parameters name the file) takes the checkpoint's weights only
    main(["validate", "--config", str(BASE), *tiny_synthetic_args(train=4), "--trainer.default_root_dir",
          str(tmp_path / "full"), "--trainer.enable_progress_bar", "false", "--report_path", str(tmp_path / "val.json"),
          "--ckpt_path", str(tmp_path / "full" / "version_0" / "checkpoints" / "step=4.ckpt")])  # fmt: skip
    report = json.loads((tmp_path / "val.json").read_text())
    assert report["config"]["model"]["init_from"] == str(init) and reads == []
