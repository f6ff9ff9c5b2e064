"""What a run is: the fingerprint of the config fields that define its method.

Two runs are the same experiment when the fields that decide what is trained and how it is scored are
equal; everything else (where logs go, how many loader workers read the images, whether the network is
compiled) may differ. `method_fields(config)` picks those fields out of a resolved config (the dict of
`config.yaml`, or `report.json`'s `config`) as a flat `{dotted.key: value}` mapping, and `fingerprint`
hashes them. A report and a checkpoint carry both (`ReportWriter`), so that

- `--ckpt_path last` resumes only a checkpoint of the same experiment (`differences` names what differs),
- `tailseg matrix` sees that a config changed since its run finished,
- the analysis compares like with like.

A checkpoint keeps it under `CHECKPOINT_KEY` (`run_identity`, read back cheaply by `checkpoint_identity`); a
report of `validate` or `test` names the fingerprint of the checkpoint it evaluated (`checkpoint_fingerprint`),
since its own config leaves the training set out.

The fields (decisions):

- in: `seed_everything`; all of `model` (the network, the loss, the optimiser and its schedule, tiling);
  all of `data` (the data sets with their arguments, crops, scales, batch size, the sampler); the
  training length and what shapes each update (`trainer.max_steps`, `max_epochs`,
  `accumulate_grad_batches`, `gradient_clip_val`, `gradient_clip_algorithm`); the tailseg callbacks of
  `trainer.callbacks` (the feedback that drives a sampler or a tilt is part of the method);
- out: where things go and how fast they run - every `root` of a data set (the same images may live in
  another folder on another machine), `data.num_workers`, `data.stats_cache_dir`, `data.eval_batch_size`,
  the evaluation-only sets `data.test` and `data.predict`, `model.compile`, `model.channels_last`, every
  other `trainer` field (devices, precision, logging, checkpointing, validation cadence), `ckpt_path`,
  `report_path` and the prediction options. Precision and devices are out so that a run can be resumed on
  other hardware; that they change numerics is the user's call.
- fields whose value is null are left out: a null argument means "the default", so a new optional argument
  (None by default) leaves the identity of earlier runs as it was. Comparisons therefore recompute the digest
  from the recorded fields (`recorded_fields`, `same_experiment`) instead of trusting a stored digest, which
  older tailseg versions computed with the nulls in.
- the weights a run starts from (`model.init_from`) enter by content, not by path: the field holds
  `sha256:<16 hex digits>` of the file (the same checkpoint copied to another machine is the same
  experiment; another checkpoint at the same path is not). A file that cannot be read keeps its path (such a
  run cannot start; `tailseg fit` says why).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Trainer fields that shape the training itself.
TRAINER_FIELDS = ("max_steps", "max_epochs", "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm")

#: Dotted keys left out of the fingerprint (besides every data set's `root`; see the module docs).
EXCLUDED = ("data.num_workers", "data.stats_cache_dir", "data.eval_batch_size", "data.test", "data.predict",
            "model.compile", "model.channels_last")  # fmt: skip


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key in sorted(value):
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, (list, tuple)) and value and any(isinstance(v, (Mapping, list, tuple)) for v in value):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}.{index}", out)
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value


def _excluded(key: str) -> bool:
    parts = key.split(".")
    if parts[0] == "data" and parts[-1] == "root":
        return True
    return any(key == skip or key.startswith(skip + ".") for skip in EXCLUDED)


def _callbacks(callbacks: Any) -> list:
    """The tailseg callbacks of `trainer.callbacks` (Lightning's own, e.g. ModelCheckpoint, only log or save)."""
    if callbacks is None:
        return []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    return [c for c in callbacks if isinstance(c, Mapping) and str(c.get("class_path", "")).startswith("tailseg.")]


#: The field naming the weights a run starts from; recorded by content (`weights_digest`).
INIT_FROM = "model.init_from"

_digests: dict[tuple[str, int, int], str] = {}


def weights_digest(path: str | os.PathLike) -> str:
    """`sha256:<16 hex digits>` of a file's bytes (cached by path, size and modification time); the path itself,
    unchanged, when the file cannot be read."""
    try:
        stat = Path(path).stat()
        key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _digests:
            digest = hashlib.sha256()
            with open(path, "rb") as file:
                for block in iter(lambda: file.read(1 << 22), b""):
                    digest.update(block)
            _digests[key] = f"sha256:{digest.hexdigest()[:16]}"
        return _digests[key]
    except OSError:
        return str(path)


def method_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a resolved config that define the experiment, flat (`{"model.loss.class_path": ..., ...}`).

    Args:
        config: A resolved config as a nested dict (`config.yaml`, `report.json`'s `config`).
    """
    picked: dict[str, Any] = {
        "seed_everything": config.get("seed_everything"),
        "model": config.get("model") or {},
        "data": config.get("data") or {},
    }
    trainer = config.get("trainer") or {}
    for key in TRAINER_FIELDS:
        picked[f"trainer.{key}"] = trainer.get(key)
    picked["trainer.callbacks"] = _callbacks(trainer.get("callbacks"))
    flat: dict[str, Any] = {}
    for key, value in picked.items():
        _flatten(value, key, flat)
    fields = {key: value for key, value in flat.items() if value is not None and not _excluded(key)}
    if isinstance(fields.get(INIT_FROM), (str, os.PathLike)):
        fields[INIT_FROM] = weights_digest(fields[INIT_FROM])
    return fields


def fields_fingerprint(fields: Mapping[str, Any]) -> str:
    """A 16-hex-digit digest of flat method fields (stable across Python processes and dict orders)."""
    text = json.dumps(dict(fields), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(config: Mapping[str, Any]) -> str:
    """The digest of `method_fields(config)`: what reports and checkpoints record as `fingerprint`."""
    return fields_fingerprint(method_fields(config))


def recorded_fields(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The method fields a report or checkpoint identity records, as `method_fields` makes them today (nulls
    left out); from its `config` when it records no fields (a report of an older version); None when it records
    neither."""
    fields = record.get("method_fields")
    if isinstance(fields, Mapping):
        return {key: value for key, value in fields.items() if value is not None}
    config = record.get("config")
    return method_fields(config) if isinstance(config, Mapping) else None


def recorded_fingerprint(record: Mapping[str, Any]) -> str | None:
    """The fingerprint of what `record` (a report or a checkpoint's identity) records, recomputed from its fields
    (`recorded_fields`), so that records of older versions compare with today's; its stored `fingerprint` when
    it records no fields."""
    fields = recorded_fields(record)
    return fields_fingerprint(fields) if fields is not None else record.get("fingerprint")


def same_experiment(record: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether a report or checkpoint identity `record` and the resolved `config` are the same experiment."""
    return recorded_fingerprint(record) == fingerprint(config)


#: The key of a checkpoint that holds the identity of the run that wrote it (`run_identity`).
CHECKPOINT_KEY = "tailseg_identity"


def run_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """{"fingerprint": ..., "method_fields": ...} of a resolved config: what a checkpoint and a report record."""
    return {"fingerprint": fingerprint(config), "method_fields": method_fields(config)}


def checkpoint_identity(path: str | os.PathLike) -> dict[str, Any] | None:
    """The identity (`run_identity`) a checkpoint records; None for one written before tailseg recorded it.
    Cheap: the file is memory-mapped, its tensors are not read.

    Raises:
        Exception: whatever `torch.load` raises on a file it cannot read (truncated, not a checkpoint).
    """
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The method fields whose values differ between two flat `method_fields` mappings, sorted (a field present
    in one only counts as different, unless its value is null: see the module docs)."""
    keys = set(recorded) | set(current)
    return sorted(k for k in keys if recorded.get(k) != current.get(k))


def describe_differences(recorded: Mapping[str, Any], current: Mapping[str, Any], limit: int = 4) -> str:
    """`differences` as one line: `model.loss.class_path (was X, now Y), ...` with at most `limit` fields."""
    keys = differences(recorded, current)
    parts = [f"{k} (was {recorded.get(k, '-')!r}, now {current.get(k, '-')!r})" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(parts) + more
