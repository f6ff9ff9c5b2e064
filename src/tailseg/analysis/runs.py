"""Finding runs on disk and loading them into tidy pandas DataFrames.

A *source* is any of:

- a `report.json` (or any JSON report holding `per_class_iou`), or a run directory holding one;
- a run directory with a CSV log `metrics.csv` (Lightning's CSVLogger) and maybe a `config.yaml`;
- an offline W&B run folder (`wandb/offline-run-*`, see `tailseg.analysis.wandb_offline`);
- a folder of any of these at any depth, e.g. `runs/demo` holding `base/version_0/` and `lmp/version_0/`.

`NAME=PATH` names the method of every run under PATH; otherwise a run's method is its folder above any
`version_*` and `seed<N>` folders (`runs/demo/lmp/version_3`, `runs/matrix/lmp/seed1/version_0` -> "lmp"). The CLI's `--report_path` copy of a
report (`runs/demo/lmp/report.json`, the same report as `runs/demo/lmp/version_3/report.json`) is
recognised and not counted twice. The seed of a run is `seed_everything` of its resolved config.

Seeds: the runs of a method are its seeds. Runs of one method with the same seed are repeats of one
experiment (a second `make demo`, a run restarted from scratch), and only the newest counts (the one whose
report or CSV log was written last); runs without a known seed all count. `tailseg compare`, `tailseg
matrix`, `make demo`, the notebooks and W&B media all find runs here, so the same folders give the same
runs, seeds and numbers everywhere.

Tidy frames:

- `load_per_class`: one row per (run, class) with columns run, method, seed, class, iou (in %, NaN
  for classes without an IoU), pixel_frequency (share of the labelled training pixels, NaN where
  unknown) and step (the global step the IoU was measured at). Rows keep the classes' id order.
- `load_series`: one row per (run, step, key) with columns run, method, seed, step, key, value for
  keys such as `sampler/p/<class>` (the performance-aware sampler's class probabilities) and
  `tce/w/<class>` (Stochastic TCE's class weights).

Per-class numbers come from reports only (finished runs); series come from the CSV log, else from W&B.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tailseg.analysis import wandb_offline

PER_CLASS_COLUMNS = ["run", "method", "seed", "class", "iou", "pixel_frequency", "step"]
SERIES_COLUMNS = ["run", "method", "seed", "step", "key", "value"]
SERIES_PREFIXES = ("sampler/p/", "tce/w/")
DEFAULT_RUNS = "runs/demo"
_SKIP_DIRS = {"wandb", "checkpoints", "__pycache__", ".ipynb_checkpoints"}


@dataclass
class Run:
    """One training run and the files it left.

    Attributes:
        name: A readable id, unique among the runs found together (e.g. "lmp/version_0").
        method: The method (the run's folder, or the NAME of a NAME=PATH source).
        path: The run directory (or the W&B run folder of a run known only from W&B).
        report: The parsed report.json, if any.
        metrics_csv: The CSV log, if any.
        wandb_dir: The offline W&B run folder, if any.
        config: The resolved config (the report's, else `config.yaml` of the run directory).
    """

    name: str
    method: str
    path: Path
    report: dict | None = None
    metrics_csv: Path | None = None
    wandb_dir: Path | None = None
    config: dict = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        """`seed_everything` of the run's config (None when missing or not an integer)."""
        seed = self.config.get("seed_everything")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    @property
    def sources(self) -> list[str]:
        return [
            s
            for s, present in (("report", self.report), ("csv", self.metrics_csv), ("wandb", self.wandb_dir))
            if present
        ]


def repository_root() -> Path:
    """The folder holding `pyproject.toml` above the installed package (a source checkout), else the cwd."""
    for folder in (Path(__file__).resolve().parents[3], *Path.cwd().resolve().parents, Path.cwd().resolve()):
        if (folder / "pyproject.toml").is_file() and (folder / "src" / "tailseg").is_dir():
            return folder
    return Path.cwd().resolve()


def resolve_runs_dir(value: str | os.PathLike | None = None) -> Path:
    """The runs folder of the notebooks: `value`, else `$TAILSEG_RUNS`, else "runs/demo"; a relative path is
    taken relative to the repository root (`repository_root`), so it does not depend on the notebook's cwd."""
    value = value if value is not None else os.environ.get("TAILSEG_RUNS") or DEFAULT_RUNS
    path = Path(value).expanduser()
    return path if path.is_absolute() else repository_root() / path


def method_of(run_dir: Path) -> str:
    """The method of a run directory: its folder, above any `version_*` and `seed<N>` folders
    (`runs/demo/lmp/version_3` and `runs/matrix/lmp/seed1/version_0` -> "lmp")."""
    folder = Path(run_dir)
    while (folder.name.startswith("version_") or re.fullmatch(r"seed\d+", folder.name)) and folder.parent != folder:
        folder = folder.parent
    return folder.name


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("per_class_iou") is not None else None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _walk(root: Path) -> list[Path]:
    """`root` and its folders, leaving out W&B, checkpoint and hidden folders."""
    found, stack = [], [root]
    while stack:
        folder = stack.pop()
        found.append(folder)
        try:
            children = sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True)
        except OSError:
            continue
        stack += [c for c in children if c.name not in _SKIP_DIRS and not c.name.startswith(".")]
    return found


def _wandb_owner(wandb_run: Path) -> Path:
    """The run directory an offline W&B run belongs to: the folder holding its `wandb/` folder."""
    return wandb_run.parent.parent if wandb_run.parent.name == "wandb" else wandb_run.parent


def _same_dir(recorded: str | None, folder: Path) -> bool:
    """Whether a report's `run_dir` names `folder` (also after the runs were moved: the last two parts match)."""
    if not recorded:
        return False
    recorded_path = Path(recorded)
    if recorded_path.is_absolute() and recorded_path.exists():
        return recorded_path.resolve() == folder.resolve()
    tail = recorded_path.parts[-2:]
    return folder.resolve().parts[-len(tail) :] == tail


def _runs_in(path: Path, method: str | None) -> list[Run]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix == ".wandb" or path.name == "wandb-summary.json":
            folder = path.parent if path.suffix == ".wandb" else path.parent.parent
            return _runs_in(folder, method)
        if path.name == "metrics.csv":
            return [Run("", method or method_of(path.parent), path.parent, metrics_csv=path)]
        report = _read_json(path)
        if report is None:
            raise ValueError(f"{path}: neither a tailseg report (no per_class_iou) nor a metrics.csv")
        return [Run("", method or method_of(path.parent), path.parent, report=report)]

    runs: dict[Path, Run] = {}
    if wandb_offline.is_wandb_run(path):
        folders = []
    else:
        folders = _walk(path)
    for folder in folders:
        report = _read_json(folder / "report.json") if (folder / "report.json").is_file() else None
        csv = folder / "metrics.csv"
        if report is not None or csv.is_file():
            runs[folder] = Run("", method or method_of(folder), folder, report=report,
                               metrics_csv=csv if csv.is_file() else None)  # fmt: skip
    for wandb_run in wandb_offline.find_wandb_runs(path):
        owner = _wandb_owner(wandb_run)
        if owner in runs:
            if runs[owner].wandb_dir is None:
                runs[owner].wandb_dir = wandb_run
            continue
        runs[wandb_run] = Run("", method or _wandb_method(wandb_run, owner), wandb_run, wandb_dir=wandb_run)

    # The --report_path copy of a report is the report of a run directory found as well: drop it when that run
    # holds the same report, or give it to that run when the run has none. A run without a report takes a copy
    # only from the folder right above it (`default_root_dir/report.json` for `default_root_dir/version_N`):
    # matching recorded paths alone would confuse `a/seed0/version_0` with `b/seed0/version_0`.
    for folder, run in list(runs.items()):
        if run.report is None or run.metrics_csv is not None or run.wandb_dir is not None:
            continue
        for other_folder, other in runs.items():
            if other_folder == folder:
                continue
            if other.report == run.report:
                del runs[folder]
                break
            if (
                other.report is None
                and other_folder.parent == folder
                and _same_dir(run.report.get("run_dir"), other_folder)
            ):
                other.report = run.report
                del runs[folder]
                break
    return list(runs.values())


def _wandb_method(wandb_run: Path, owner: Path) -> str:
    if owner.name.startswith("version_") or (owner / "config.yaml").is_file():
        return method_of(owner)
    name = wandb_offline.read_display_name(wandb_run)
    if name:
        return re.sub(r"-version_\d+$", "", name)
    return method_of(owner)


def find_runs(*sources) -> list[Run]:
    """The runs of `sources` (paths, `NAME=PATH` strings, or lists of them; see the module docs), in order.

    Raises:
        FileNotFoundError: a path that does not exist. ValueError: no run found.
    """
    flat: list = []
    for source in sources:
        flat += list(source) if isinstance(source, (list, tuple)) else [source]
    runs: list[Run] = []
    for source in flat:
        text = str(source)
        name, path = text.split("=", 1) if "=" in text and not Path(text).exists() else (None, text)
        found = _runs_in(Path(path), name or None)
        root = Path(path) if Path(path).is_dir() else Path(path).parent
        for run in found:
            run.config = (run.report or {}).get("config") or _read_yaml(run.path / "config.yaml")
            if not run.config and run.wandb_dir is not None:
                run.config = _read_yaml(_wandb_owner(run.wandb_dir) / "config.yaml")
            run.name = _run_name(run, root)
        runs += sorted(found, key=lambda r: _natural(r.name))
    if not runs:
        raise ValueError(f"no runs (report.json, metrics.csv or W&B run folders) found in {', '.join(map(str, flat))}")
    runs = newest_per_seed(runs)
    seen: dict[str, int] = {}
    for run in runs:  # unique names across sources
        count = seen.get(run.name, 0)
        seen[run.name] = count + 1
        if count:
            run.name = f"{run.name}#{count + 1}"
    return runs


def _written(run: Run) -> float:
    """When the run last wrote its results: the modification time of its report, else of its CSV log."""
    for path in (run.path / "report.json", run.metrics_csv, run.path):
        if path is not None and Path(path).exists():
            return Path(path).stat().st_mtime
    return 0.0


def newest_per_seed(runs: list[Run]) -> list[Run]:
    """`runs` without the repeats: of the runs with the same method and seed, the newest (`_written`) only.
    Runs without a seed are all kept; the order of the kept runs is unchanged."""
    newest: dict[tuple[str, int], Run] = {}
    for run in runs:
        if run.seed is None:
            continue
        key = (run.method, run.seed)
        if key not in newest or _written(run) >= _written(newest[key]):
            newest[key] = run
    return [run for run in runs if run.seed is None or newest[(run.method, run.seed)] is run]


def _run_name(run: Run, root: Path) -> str:
    """The run's folder relative to the searched `root`, led by the method: "lmp/version_0"."""
    folder = _wandb_owner(run.wandb_dir) if run.path == run.wandb_dir else run.path
    try:
        relative = folder.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        relative = "."
    if relative == ".":
        return run.method if folder.name == run.method else f"{run.method}/{folder.name}"
    return relative if relative.split("/")[0] == run.method else f"{run.method}/{relative}"


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _as_runs(sources) -> list[Run]:
    if isinstance(sources, Run):
        return [sources]
    if isinstance(sources, (list, tuple)) and sources and all(isinstance(s, Run) for s in sources):
        return list(sources)
    return find_runs(sources)


def read_metrics_csv(path: Path) -> pd.DataFrame:
    """A Lightning CSV log as a DataFrame ("nan" cells are NaN)."""
    return pd.read_csv(path, na_values=["nan", "NaN"])


def _per_class_rows(run: Run) -> list[dict]:
    """The per-class rows of a finished run (one with a report); [] for a run without one."""
    if run.report is None:
        return []
    base = {"run": run.name, "method": run.method, "seed": run.seed}
    freq = run.report.get("class_frequency") or {}
    step = run.report.get("global_step")
    return [
        {**base, "class": name, "iou": math.nan if iou is None else float(iou),
         "pixel_frequency": math.nan if freq.get(name) is None else float(freq[name]), "step": step}
        for name, iou in run.report["per_class_iou"].items()
    ]  # fmt: skip


def _class_order(run: Run, names: list[str]) -> list[str]:
    """`names` in class-id order where the run tells it (its config, the CSV logger's `hparams.yaml` or the W&B
    config: the model's `class_names`), else as given."""
    known = (run.config.get("model") or {}).get("class_names") or run.config.get("class_names")
    if not known:
        known = _read_yaml(run.path / "hparams.yaml").get("class_names")
    if not known and run.wandb_dir is not None:
        known = wandb_offline.read_config(run.wandb_dir).get("class_names")
    if known:
        return [n for n in known if n in names] + [n for n in names if n not in known]
    return names


def load_per_class(*sources) -> pd.DataFrame:
    """Per-class IoU of every finished run of `sources` (paths / NAME=PATH / `Run`s): the tidy frame of the
    module docs.

    Only runs with a report count: `tailseg fit` writes it at the end, with the IoU of the final weights.
    A run without one is unfinished (or failed); its CSV log holds some earlier validation, and mixing those
    with final numbers would compare different budgets. `describe_runs` lists such runs, `load_series`
    reads their logs.
    """
    runs = _as_runs(sources[0] if len(sources) == 1 else list(sources))
    rows = [row for run in runs for row in _per_class_rows(run)]
    frame = pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["seed"] = frame["seed"].astype("Int64")
    frame["step"] = pd.to_numeric(frame["step"]).astype("Int64")
    for column in ("iou", "pixel_frequency", "value"):
        if column in frame:
            frame[column] = frame[column].astype("float64")
    return frame


def _series_rows(run: Run, prefixes: tuple[str, ...]) -> pd.DataFrame:
    empty = pd.DataFrame(columns=["step", "key", "value"])
    if run.metrics_csv is not None:
        frame = read_metrics_csv(run.metrics_csv)
        columns = [c for c in frame.columns if c.startswith(prefixes)]
        long = frame[["step", *columns]].melt(id_vars="step", var_name="key", value_name="value") if columns else empty
    elif run.wandb_dir is not None:
        rows = []
        for record in wandb_offline.read_history(run.wandb_dir):
            step = record.get("trainer/global_step", record.get("_step"))
            for key, value in record.items():
                if key.startswith(prefixes) and not math.isnan(wandb_offline.as_float(value)):
                    rows.append({"step": step, "key": key, "value": wandb_offline.as_float(value)})
        long = pd.DataFrame(rows, columns=["step", "key", "value"])
    else:
        long = empty
    long = long.dropna(subset=["value"])
    if long.empty:
        return long
    # keys by prefix, then class id order (the CSV log sorts its columns by name)
    keys = list(dict.fromkeys(long["key"]))
    ordered = []
    for prefix in prefixes:
        names = [k[len(prefix) :] for k in keys if k.startswith(prefix)]
        ordered += [prefix + n for n in _class_order(run, names)]
    rank = {key: i for i, key in enumerate(ordered)}
    long = long.assign(_rank=long["key"].map(rank), step=pd.to_numeric(long["step"]))
    return long.sort_values(["_rank", "step"], kind="stable").drop(columns="_rank")


def load_series(*sources, prefixes: tuple[str, ...] | str = SERIES_PREFIXES) -> pd.DataFrame:
    """Time series of every run of `sources` whose keys start with one of `prefixes` (default: the sampler's
    class probabilities `sampler/p/` and Stochastic TCE's class weights `tce/w/`), from the CSV log, else from
    the W&B log: the tidy frame of the module docs, NaN cells dropped; rows are sorted by run (in the order
    found), key (by prefix, then class id) and step."""
    prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
    runs = _as_runs(sources[0] if len(sources) == 1 else list(sources))
    parts = []
    for run in runs:
        part = _series_rows(run, prefixes)
        if len(part):
            parts.append(part.assign(run=run.name, method=run.method, seed=run.seed))
    if not parts:
        return _typed(pd.DataFrame(columns=SERIES_COLUMNS))
    frame = pd.concat(parts, ignore_index=True)[SERIES_COLUMNS]
    return _typed(frame)


def describe_runs(*sources) -> pd.DataFrame:
    """One row per run: run, method, seed, step (of its report), sources (report / csv / wandb) and path."""
    runs = _as_runs(sources[0] if len(sources) == 1 else list(sources))
    rows = [
        {"run": r.name, "method": r.method, "seed": r.seed, "step": (r.report or {}).get("global_step"),
         "sources": "+".join(r.sources), "path": str(r.path)}
        for r in runs
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "method", "seed", "step", "sources", "path"])
