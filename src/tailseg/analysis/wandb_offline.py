"""Reading offline Weights & Biases run folders (`wandb/offline-run-*`) without the W&B service.

A run folder holds `files/wandb-summary.json` and `files/config.yaml` once the run has finished, and
always the record log `run-<id>.wandb` that W&B writes while the run goes on (and syncs from). A run
that ended without `wandb.finish()` (e.g. a killed job) has only the log, so the summary, the config
and the history are read from it when the files are missing.

The log uses LevelDB's log format: a 7-byte file header (":W&B", magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each a 7-byte header (CRC-32C, length, type: full / first / middle / last)
and its data; a chunk never spans a block boundary (the rest of a block shorter than a header is zero
padding). Each whole record is a `wandb.proto.wandb_internal_pb2.Record`. Checksums are not verified;
a truncated last record (a run still being written) is dropped. W&B's service writes the log
asynchronously: right after `wandb.finish()` it may not hold the last records yet.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path

_HEADER = struct.Struct("<4sHB")
_CHUNK = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def is_wandb_run(path: Path) -> bool:
    """Whether `path` is an offline (or synced) W&B run folder: `files/wandb-summary.json` or a `*.wandb` log."""
    path = Path(path)
    return path.is_dir() and ((path / "files" / "wandb-summary.json").is_file() or any(path.glob("*.wandb")))


def find_wandb_runs(root: Path) -> list[Path]:
    """W&B run folders at or below `root` (`root` itself, or `**/wandb/offline-run-*` and `**/wandb/run-*`)."""
    root = Path(root)
    if is_wandb_run(root):
        return [root]
    found = [p for pattern in ("offline-run-*", "run-*") for p in root.rglob(pattern) if is_wandb_run(p)]
    return sorted(set(found))


def _chunks(raw: bytes) -> Iterator[bytes]:
    if len(raw) < _HEADER.size:
        return
    ident, magic, _version = _HEADER.unpack_from(raw)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError("not a W&B record log (bad header)")
    pos, pending = _HEADER.size, None
    while pos + _CHUNK.size <= len(raw):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK.size:  # zero padding at the end of a block
            pos += left
            continue
        _crc, length, kind = _CHUNK.unpack_from(raw, pos)
        pos += _CHUNK.size
        if kind == 0 and length == 0:  # pre-allocated, not yet written
            break
        if pos + length > len(raw):  # truncated last chunk
            break
        data = raw[pos : pos + length]
        pos += length
        if kind == _FULL:
            yield data
        elif kind == _FIRST:
            pending = data
        elif kind == _MIDDLE and pending is not None:
            pending += data
        elif kind == _LAST and pending is not None:
            yield pending + data
            pending = None


def read_records(log: Path):
    """The records of a `.wandb` log (protobuf `Record`s), in order. Needs the `wandb` package."""
    from wandb.proto import wandb_internal_pb2

    for data in _chunks(Path(log).read_bytes()):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(data)
        except Exception:  # noqa: BLE001 - a damaged record ends the readable part
            return
        yield record


def _log_file(run_dir: Path) -> Path | None:
    logs = sorted(Path(run_dir).glob("*.wandb"))
    return logs[0] if logs else None


def _value(text: str):
    try:
        return json.loads(text)  # also reads NaN and Infinity
    except ValueError:
        return text


def _key(item) -> str:
    return item.key or item.nested_key[0]


def _assign(target: dict, item) -> None:
    """Set an update / history item into `target`; a nested key (a logged media object's fields) builds dicts."""
    keys = list(item.nested_key) or [item.key]
    if keys[0] == "_wandb":  # W&B's own bookkeeping
        return
    node = target
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = _value(item.value_json)


def read_history(run_dir: Path) -> list[dict]:
    """The logged rows (`wandb.log` calls) of a run, from its `.wandb` log; [] without one. Media (tables,
    images) appear as the dicts W&B stores for them (`_type`, `path`, ...)."""
    log = _log_file(run_dir)
    if log is None:
        return []
    rows = []
    for record in read_records(log):
        if record.WhichOneof("record_type") == "history":
            row: dict = {}
            for item in record.history.item:
                _assign(row, item)
            rows.append(row)
    return rows


def read_config(run_dir: Path) -> dict:
    """The run config (`wandb.config`): `files/config.yaml` (values unwrapped), else rebuilt from the log."""
    path = Path(run_dir) / "files" / "config.yaml"
    if path.is_file():
        import yaml

        raw = yaml.safe_load(path.read_text()) or {}
        return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in raw.items() if k != "_wandb"}
    log = _log_file(run_dir)
    config: dict = {}
    if log is None:
        return config
    for record in read_records(log):
        kind = record.WhichOneof("record_type")
        updates = record.config.update if kind == "config" else record.run.config.update if kind == "run" else []
        for item in updates:
            if _key(item) != "_wandb":
                config[_key(item)] = _value(item.value_json)
    return config


def read_display_name(run_dir: Path) -> str | None:
    """The run's display name (the tailseg CLI names runs `<root folder>-version_<N>`), or None."""
    log = _log_file(run_dir)
    if log is not None:
        for record in read_records(log):
            if record.WhichOneof("record_type") == "run":
                return record.run.display_name or None
    metadata = Path(run_dir) / "files" / "wandb-metadata.json"
    if metadata.is_file():
        return json.loads(metadata.read_text()).get("display_name")
    return None


def as_float(value) -> float:
    """A summary / history value as a float (NaN for None and anything not numeric)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
