"""`model.init_from`: start training from the weights of a file (fine-tuning), weights only.

One idea: pick the network's weights out of a file, match them against the network's modules, and
return what to load plus notices, or refuse. `SegmentationModel` calls it; nothing here touches a trainer.

Decisions:

- What is read: `torch.load(path, map_location="cpu", weights_only=True)` (no code runs from the file). The
  file is a tailseg / Lightning checkpoint, whose `state_dict` holds the network under the key prefix
  `net.`; a plain state dict of the network (`torch.save(model.net.state_dict())`, keys without `net.`);
  or a dict holding such a plain state dict under `state_dict`. The prefix decides: when any key starts
  with `net.`, the `net.` keys (prefix removed) are the network's and every other key (the loss's class
  weights, the IoU metric states) is left out; otherwise the whole dict is the network's.
- What is loaded: weights only - the network's parameters and buffers (batch-norm statistics included)
  of the chosen modules. Never the optimiser, the learning-rate schedule, the sampler, the step, the
  loss's buffers or the metric states: training starts at step 0 as from scratch, from other weights.
- Which modules: `init_from_modules`, names of DeepLabV3+'s submodules `encoder`, `decoder`,
  `segmentation_head` (None: all three); the others keep their fresh initialisation. An unknown name
  is refused (`check_modules`). Keys of the file outside the chosen modules are ignored.
- The head rule: a `segmentation_head` whose weights have other shapes in the file (a model of another
  number of classes) is not loaded and keeps its fresh initialisation, with a one-line notice naming the
  shapes; the encoder and the decoder are loaded all the same.
- Everything else must fit exactly: a key of a chosen module missing from the file or present in the
  file but not in the network, or another shape outside the head (another encoder, other decoder
  channels), is one ValueError naming `model.init_from`, the file and the first few offending keys of each
  kind (and how many more); nothing is loaded then. So is a file that cannot be read or holds no state dict.
- When it applies (`SegmentationModel`): only when fitting from scratch. The file is not read when the model
  is built, so a checkpoint of a fine-tuned model (whose hyper-parameters name the file) is evaluated or
  resumed without it. The model loads it in `on_fit_start`, before the sanity validation and the first step,
  unless the fit resumes a checkpoint: `trainer.ckpt_path` tells, and Lightning 2.6 sets it only when it
  restores the checkpoint, after `setup` and before `on_fit_start` (in `setup` it is still None when
  resuming). A resumed fit takes every weight from its checkpoint and never reads the file; `validate`,
  `test` and `predict` never apply it. `tailseg fit` resuming no checkpoint reads and checks the file
  already before the trainer and its run folder are made (`TailsegCLI.check_built`: errors are one line),
  and the model loads what was read then. In `on_fit_start` the network is on its device (under DDP wrapped,
  every rank loading the same file); the weights are copied into it in place. Strategies that restore a
  checkpoint only after `on_fit_start` (FSDP, DeepSpeed, model parallel) are refused: there a resumed fit
  cannot be told apart yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

#: The submodules of smp's DeepLabV3Plus that `init_from_modules` can name, in the network's order.
MODULES = ("encoder", "decoder", "segmentation_head")

#: The module that is re-initialised instead of loaded when its shapes differ (another number of classes).
HEAD = "segmentation_head"

#: How many offending keys of each kind an error names.
SHOWN = 3

_PREFIX = "net."


def check_modules(modules: Sequence[str] | None) -> tuple[str, ...]:
    """The modules `init_from_modules` chooses (all of `MODULES` for None), in the network's order.

    Raises:
        ValueError: one line naming an unknown name and the allowed names.
    """
    if modules is None:
        return MODULES
    if isinstance(modules, str):
        modules = [modules]
    for name in modules:
        if name not in MODULES:
            raise ValueError(f"model.init_from_modules: unknown module {name!r}; choose from {', '.join(MODULES)}")
    return tuple(name for name in MODULES if name in modules)


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network's weights in the file `path` (keys without `net.`; see the module docs).

    Raises:
        ValueError: one line naming the file when it is missing, cannot be read or holds no state dict.
    """
    where = f"model.init_from: {path}"
    if not os.path.isfile(path):
        raise ValueError(f"{where} is not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch.load raises many kinds on a damaged or foreign file)
        message = " ".join(str(error).split())[:300]
        raise ValueError(f"{where} cannot be read ({type(error).__name__}: {message})") from None
    state = loaded.get("state_dict") if isinstance(loaded, Mapping) else None
    state = state if isinstance(state, Mapping) else loaded
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where} holds no state dict (a checkpoint's `state_dict` or a network's state_dict())")
    if any(str(key).startswith(_PREFIX) for key in state):
        return {key[len(_PREFIX) :]: value for key, value in state.items() if key.startswith(_PREFIX)}
    return dict(state)


def _listed(keys: list[str], describe=str) -> str:
    shown = ", ".join(describe(key) for key in keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def _shapes(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]):
    """Describes a key by its shapes: `key [a, b] in the file vs [c, d] here`."""
    return lambda key: f"{key} {list(source[key].shape)} in the file vs {list(target[key].shape)} here"


def _in_modules(key: str, modules: Iterable[str]) -> bool:
    return any(key.startswith(f"{module}.") for module in modules)


def match(
    source: Mapping[str, torch.Tensor], net: nn.Module, modules: Sequence[str], path: str | os.PathLike
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """What of the weights `source` (read from `path`) to load into `net`'s `modules`.

    Returns:
        (weights, notices): the tensors to load with `net.load_state_dict(weights, strict=False)` (keys of the
        chosen modules, the head left out when its shapes differ) and one-line notices (the head rule).

    Raises:
        ValueError: one line naming `model.init_from`, the file and the first keys that do not fit.
    """
    target = net.state_dict()
    missing = [k for k in target if _in_modules(k, modules) and k not in source]
    unexpected = [k for k in source if _in_modules(k, modules) and k not in target]
    other_shape = [k for k in target if _in_modules(k, modules) and k in source and source[k].shape != target[k].shape]
    notices = []
    head_shapes = [k for k in other_shape if _in_modules(k, [HEAD])]
    head_fits = not any(_in_modules(k, [HEAD]) for k in missing + unexpected)
    chosen = list(modules)
    if head_shapes and head_fits:
        described = _listed(head_shapes, _shapes(source, target))
        notices.append(
            f"model.init_from: {path}: {HEAD} not loaded, its weights have other shapes ({described}: another number "
            f"of classes); it keeps its fresh initialisation"
        )
        other_shape = [k for k in other_shape if k not in head_shapes]
        chosen.remove(HEAD)
    if missing or unexpected or other_shape:
        problems = []
        if missing:
            problems.append(f"{len(missing)} keys missing from the file ({_listed(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} keys this network does not have ({_listed(unexpected)})")
        if other_shape:
            described = _listed(other_shape, _shapes(source, target))
            problems.append(f"{len(other_shape)} keys of other shapes ({described})")
        raise ValueError(
            f"model.init_from: {path} does not fit this network's {', '.join(modules)}: {'; '.join(problems)}; "
            "give weights of the same network (model.encoder_name, decoder) or choose model.init_from_modules"
        )
    weights = {k: source[k] for k in target if _in_modules(k, chosen)}
    return weights, notices


def weights_to_load(
    path: str | os.PathLike, net: nn.Module, modules: Sequence[str]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`read_weights(path)` matched against `net`'s `modules` (`match`): (weights to load, notices)."""
    return match(read_weights(path), net, modules, path)
