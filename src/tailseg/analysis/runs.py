"""Finding runs on disk and loading them into tidy pandas DataFrames.

A *source* is any of:

- a `report.json` (or any JSON report holding `per_class_iou`), or a run directory holding one;
- a run directory with a CSV log `metrics.csv` (Lightning's CSVLogger) and maybe a `config.yaml`;
- an offline W&B run folder (`wandb/offline-run-*`, see `tailseg.analysis.wandb_offline`);
- a folder of any of these at any depth, e.g. `runs/demo` holding `base/version_0/` and `lmp/version_0/`.

`NAME=PATH` names the method of every run under PATH; otherwise a run's method is its folder above any
`version_*`, `seed<N>` and `evaluations/<stage>` folders (`runs/demo/lmp/version_3`,
`runs/matrix/lmp/seed1/version_0`, `runs/demo/lmp/evaluations/test/version_0` -> "lmp"). The CLI's
`--report_path` copy of a report (`runs/demo/lmp/report.json`, the same report as
`runs/demo/lmp/version_3/report.json`) is recognised and not counted twice. The seed of a run is
`seed_everything` of its resolved config.

Which runs count (`select_runs`; `find_runs` finds them all, `describe_runs` shows each one's status):

- training runs' final reports only: a report of `fit` (a report without `stage`, from older versions,
  counts as one) on the validation split. The reports of `validate` and `test` (evaluations) enter only
  when asked (`evaluations=True`, `tailseg compare --evaluations`), and then as a method of their own,
  labelled with their split and checkpoint step (`Run.label`: "base [test @ step 500]"), so they never
  pool with training runs nor with each other;
- never the numbers of untrained weights: a report with `trained` false, an evaluation without a
  checkpoint, or a `global_step` of 0 (reports without `trained`, from older versions: a `fit` report
  counts as trained unless its `global_step` is 0; one that records no step at all counts);
- a run without a report is unfinished (or failed) and left out: its CSV log holds some earlier
  validation, and mixing that with final numbers would compare different budgets. One that a later run
  resumed (its checkpoint is that run's `ckpt_path`, e.g. `seed1/version_0` continued by `seed1/version_1`
  after an interruption) is left out as "resumed in" that run, which holds its results;
- seeds: the runs of a method are its seeds. Runs of one method with the same seed are repeats of one
  experiment (a second `make demo`, a run restarted from scratch), and of those that remain after the
  rules above only the newest counts (the one whose report was written last), so a newer unfinished run
  never hides a finished one; runs without a known seed all count;
- one experiment per method: when the seeds of a method disagree on the config fields that define the
  experiment (`tailseg.identity.method_fields`, `seed_everything` aside), only the seeds with the config
  of the newest run count, the others are left out naming the fields that differ; seeds that all agree
  all count.

Every run left out is listed with its reason (`select_runs`; `tailseg compare` prints them under its
tables). `tailseg compare`, `tailseg matrix`, `make demo`, the notebooks and W&B media all find runs here,
so the same folders give the same runs, seeds and numbers everywhere.

Tidy frames:

- `load_per_class`: one row per (run, class) of the runs that count, with columns run, method (the
  run's `label`), seed, class, iou (in %, NaN for classes without an IoU), pixel_frequency (share of the
  labelled training pixels, NaN where unknown) and step (the global step the IoU was measured at). Rows
  keep the classes' id order.
- `load_series`: one row per (run, step, key) with columns run, method, seed, step, key, value for
  keys such as `sampler/p/<class>` (the performance-aware sampler's class probabilities) and
  `tce/w/<class>` (Stochastic TCE's class weights).

Per-class numbers come from reports only (finished runs); series come from the CSV log, else from W&B, of
the runs that count and the unfinished ones.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tailseg import identity
from tailseg.analysis import wandb_offline

PER_CLASS_COLUMNS = ["run", "method", "seed", "class", "iou", "pixel_frequency", "step"]
SERIES_COLUMNS = ["run", "method", "seed", "step", "key", "value"]
SERIES_PREFIXES = ("sampler/p/", "tce/w/")
DEFAULT_RUNS = "runs/demo"
_SKIP_DIRS = {"wandb", "checkpoints", "__pycache__", ".ipynb_checkpoints"}
COUNTED = "counted"
UNFINISHED = "unfinished: no report"


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
    def stage(self) -> str | None:
        """The report's `stage` ("fit" for a report without one, from older versions); None without a report."""
        return None if self.report is None else self.report.get("stage") or "fit"

    @property
    def evaluation(self) -> str | None:
        """For a report of `validate` or `test`, its split and checkpoint step ("test @ step 500"); else None."""
        if self.stage in (None, "fit"):
            return None
        split = self.report.get("split") or ("test" if self.stage == "test" else "val")
        return f"{split} @ step {self.report.get('global_step')}"

    @property
    def label(self) -> str:
        """The method in the tables: `method`, and for an evaluation its split and step ("base [test @ step 500]")."""
        return self.method if self.evaluation is None else f"{self.method} [{self.evaluation}]"

    @property
    def untrained(self) -> str | None:
        """Why the report's numbers are those of untrained weights ("untrained: global_step 0"); None if trained
        (see the module docs for reports without `trained`)."""
        if self.report is None:
            return None
        step = self.report.get("global_step")
        if self.evaluation is not None and not self.report.get("checkpoint"):
            return "untrained: evaluated without a checkpoint"
        if isinstance(step, int) and step <= 0:
            return f"untrained: global_step {step}"
        if self.report.get("trained") is False:
            return "untrained: the report says trained false"
        return None

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
    """The method of a run directory: its folder, above any `version_*`, `seed<N>` and `evaluations/<stage>`
    folders (`runs/demo/lmp/version_3`, `runs/matrix/lmp/seed1/version_0` and
    `runs/demo/lmp/evaluations/test/version_0` -> "lmp")."""
    folder = Path(run_dir)
    while folder.parent != folder:
        if folder.name.startswith("version_") or re.fullmatch(r"seed\d+", folder.name) or folder.name == "evaluations":
            folder = folder.parent
        elif folder.parent.name == "evaluations":
            folder = folder.parent.parent
        else:
            break
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
    """Every run of `sources` (paths, `NAME=PATH` strings, or lists of them; see the module docs), in order,
    also those that do not count (`select_runs` picks those that do).

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
        runs += sorted(found, key=_found_order)
    if not runs:
        raise ValueError(f"no runs (report.json, metrics.csv or W&B run folders) found in {', '.join(map(str, flat))}")
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


def _newest(runs: list[Run]) -> Run:
    """The run written last (`_written`; of equal times the later in `runs`)."""
    return max(reversed(runs), key=_written)


def _experiment(run: Run) -> dict | None:
    """The fields that define the run's experiment, its seed aside (None without a config)."""
    if not run.config:
        return None
    fields = identity.recorded_fields(run.report or {}) or identity.method_fields(run.config)
    fields.pop("seed_everything", None)
    return fields


def _reason(run: Run, evaluations: bool) -> str | None:
    """Why `run` does not count whatever the other runs are (see the module docs); None if it may count."""
    if run.report is None:
        return UNFINISHED
    if run.untrained:
        return run.untrained
    if run.evaluation is not None and not evaluations:
        return f"evaluation report ({run.stage}, {run.evaluation}; use --evaluations)"
    return None


def select_runs(
    runs: list[Run], evaluations: bool = False, unfinished: bool = False
) -> tuple[list[Run], list[tuple[str, str]]]:
    """The runs that count (the rules of the module docs) and those left out, with their reasons.

    Args:
        runs: Runs from `find_runs`.
        evaluations: Let the reports of `validate` and `test` count (each labelled by its split and step).
        unfinished: Keep the runs without a report as well (their logs, for `load_series`).

    Returns:
        (kept, left_out): the runs that count in their order, and (run name, reason) for every other run, e.g.
        ("lmp/version_2", "unfinished: no report").
    """
    reasons: dict[int, str] = {}
    for run in runs:
        reason = _reason(run, evaluations)
        if reason is not None and not (unfinished and reason == UNFINISHED):
            reasons[id(run)] = reason
    for run in runs:
        if reasons.get(id(run)) == UNFINISHED and (later := _resumed_in(run, runs)) is not None:
            reasons[id(run)] = f"resumed in {later.name}"
    finished = [run for run in runs if id(run) not in reasons and run.report is not None]
    repeats: dict[tuple[str, int], list[Run]] = {}
    for run in finished:
        if run.seed is not None:
            repeats.setdefault((run.label, run.seed), []).append(run)
    for (_, seed), group in repeats.items():
        newest = _newest(group)
        for run in group:
            if run is not newest:
                reasons[id(run)] = f"superseded by {newest.name}, a newer finished run of seed {seed}"
    by_label: dict[str, list[Run]] = {}
    for run in finished:
        if id(run) not in reasons and _experiment(run) is not None:
            by_label.setdefault(run.label, []).append(run)
    for label, group in by_label.items():
        newest = _newest(group)
        for run in group:
            changed = identity.describe_differences(_experiment(run), _experiment(newest))
            if changed:
                reasons[id(run)] = f"a different config from {newest.name}, the newest run of {label}: {changed}"
    kept = [run for run in runs if id(run) not in reasons]
    return kept, [(run.name, reasons[id(run)]) for run in runs if id(run) in reasons]


def _resumed_in(run: Run, runs: list[Run]) -> Run | None:
    """The run that resumed `run` from one of its checkpoints (its config's `ckpt_path` lies in `run`'s
    `checkpoints/` folder; also after the runs were moved, by the last two parts of the folder), if any."""
    for other in runs:
        ckpt = other.config.get("ckpt_path") if other is not run else None
        if isinstance(ckpt, str) and Path(ckpt).parent.name == "checkpoints":
            if _same_dir(str(Path(ckpt).parent.parent), run.path):
                return other
    return None


def _run_name(run: Run, root: Path) -> str:
    """The run's folder relative to the searched `root`, led by the method: "lmp/version_0"."""
    folder = _wandb_owner(run.wandb_dir) if run.path == run.wandb_dir else run.path
    try:  # as found (a root that is a link to the runs keeps its own names), else as resolved
        relative = folder.relative_to(root).as_posix()
    except ValueError:
        try:
            relative = folder.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            relative = "."
    if relative == ".":
        return run.method if folder.name == run.method else f"{run.method}/{folder.name}"
    return relative if relative.split("/")[0] == run.method else f"{run.method}/{relative}"


def _found_order(run: Run) -> tuple:
    """Runs in the order of their method, a method's training runs before its evaluations, then by name."""
    return _natural(run.method), "evaluations" in Path(run.name).parts, _natural(run.name)


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _as_runs(sources: tuple) -> list[Run]:
    """The runs of the `*sources` of a loader: `Run`s as given, else `find_runs`."""
    sources = sources[0] if len(sources) == 1 else list(sources)
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
    base = {"run": run.name, "method": run.label, "seed": run.seed}
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


def load_per_class(*sources, evaluations: bool = False) -> pd.DataFrame:
    """Per-class IoU of the runs of `sources` (paths / NAME=PATH / `Run`s) that count: the tidy frame of the
    module docs.

    Only the final reports of trained runs count (`select_runs`; `evaluations`: also the reports of
    `validate` and `test`, under their `label`). `describe_runs` lists every run with the reason it is left
    out, `load_series` reads the logs of the unfinished ones.
    """
    runs, _ = select_runs(_as_runs(sources), evaluations)
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
    found), key (by prefix, then class id) and step. The runs are those that count and the unfinished ones
    (`select_runs`)."""
    prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
    runs, _ = select_runs(_as_runs(sources), unfinished=True)
    parts = []
    for run in runs:
        part = _series_rows(run, prefixes)
        if len(part):
            parts.append(part.assign(run=run.name, method=run.method, seed=run.seed))
    if not parts:
        return _typed(pd.DataFrame(columns=SERIES_COLUMNS))
    frame = pd.concat(parts, ignore_index=True)[SERIES_COLUMNS]
    return _typed(frame)


def describe_runs(*sources, evaluations: bool = False) -> pd.DataFrame:
    """One row per run found: run, method (its `label`), seed, stage and step (of its report), sources (report /
    csv / wandb), status ("counted", else why `select_runs` leaves it out, with `evaluations` as there) and
    path."""
    runs = _as_runs(sources)
    _, left_out = select_runs(runs, evaluations)
    status = dict(left_out)
    rows = [
        {"run": r.name, "method": r.label, "seed": r.seed, "stage": r.stage, "step": (r.report or {}).get("global_step"),
         "sources": "+".join(r.sources), "status": status.get(r.name, COUNTED), "path": str(r.path)}
        for r in runs
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "method", "seed", "stage", "step", "sources", "status", "path"])
