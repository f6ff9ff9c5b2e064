"""`tailseg matrix`: configs x seeds as separate training processes, resumable, ending in the comparison.

    tailseg matrix experiments/synthetic/{base,lmp,tce_class}.yaml --seeds 0 1 2 --out runs/matrix/synthetic
    tailseg matrix experiments/camvid/*.yaml --seeds 0 --out runs/matrix/camvid -- \\
        --data.train.init_args.root DIR --data.val.init_args.root DIR

Every (config, seed) is one job: `tailseg fit --config CONFIG --seed_everything SEED` with its run in
`OUT/<config's file stem>/seed<SEED>/` (the CSV log and checkpoints in `version_*/`, `report.json` and the
job's `log.txt` beside them), plus the arguments after `--`, which go to every job. The method's name is
the config's file stem, so two configs with the same stem are refused.

Scheduling: `--jobs N` processes at a time. On the CPU the cores this process may use (its affinity, e.g.
a SLURM allocation) are split between them (each job gets `OMP_NUM_THREADS` = cores // N; two jobs with
one thread each on 2 cores). With `--devices 0 1 ...` each job runs on one GPU (`CUDA_VISIBLE_DEVICES`), as
many jobs at a time as devices; give the configs one device each (`-- --trainer.devices 1
--trainer.strategy auto` for the paper configs that ask for 4).

Done, changed, to do: a job is done when its `report.json` is the report of a finished fit (stage "fit", at
least one step trained) of the config the job would run now - the same fingerprint (`tailseg.identity`:
the fields that define the method, not paths or loader workers), computed from the resolved command line
without starting it. Done jobs are skipped. A job whose report, or (unfinished) whose newest checkpoint,
comes from another config - the config file or the arguments after `--` were edited since - has
*changed*: the matrix stops before starting anything and lists those jobs with the fields that differ.
`--rerun-changed` trains them again from scratch; their old folders are kept as
`OUT/<method>/.seed<S>.replaced-<time>/` (hidden: the comparison leaves them out; delete them when no
longer needed). Every other job is started with `--ckpt_path last`, so an interrupted job continues from
its newest checkpoint (every config saves at least one per epoch; the paper configs every 1000 steps; a
run stopped by SIGTERM saves `last.ckpt`), and running the same command again finishes what is missing.

One matrix per folder: a matrix holds `OUT/.matrix.lock` (its pid and host, an `fcntl.flock` lock that
ends with the process, so a crash leaves none behind) while it runs jobs; a second one on the same `OUT`
stops with status 2 naming the first. SLURM array tasks (`--only`) share the folder, one task per job.
`--list` and `--compare-only` only read and need no lock.

Stopping: each job runs in its own process group. SIGTERM (a scheduler's stop) or Ctrl-C sends SIGTERM to
every job's group, so each finishes its step and saves `last.ckpt` (its loader workers ignore SIGTERM:
`tailseg.data.datamodule`); jobs still running `--grace` seconds later (default 60) are killed with their
loader workers. The matrix then exits with status 143 after SIGTERM (130 after Ctrl-C), like `tailseg fit`,
and nothing of it keeps running.

At the end (unless `--no-compare`), the finished runs of the whole `OUT` folder are compared through the
same analysis as `tailseg compare` and the notebooks: `OUT/comparison.md` (per-class IoU with intervals over
seeds and images, paired gains over the reference with Holm-marked classes, fairness, the leaderboard and its
top group; see `tailseg.analysis.comparison`) and `OUT/gains.png` (gain against pixel share). A job that
failed is reported with its log and makes the exit status 1; the others still run and are compared.

SLURM: `--list` prints the jobs, one line each (index, method, seed, done / to do / changed, folder), so
`wc -l` counts them; `--only I` runs job I alone (no comparison). An array job runs one job per task, and a
last step compares (see experiments/README.md):

    N=$(tailseg matrix CONFIGS --seeds 0 1 2 --out OUT --list | wc -l)
    sbatch --array=0-$((N - 1)) job.sh   # job.sh: tailseg matrix CONFIGS --seeds 0 1 2 --out OUT --only $SLURM_ARRAY_TASK_ID
    # then, after the array: tailseg matrix CONFIGS --seeds 0 1 2 --out OUT --compare-only
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from tailseg import identity
from tailseg.cli import newest_readable_checkpoint, resolved_config

#: Seconds the jobs get to save their state after the matrix is stopped, before they are killed (`--grace`).
GRACE = 60.0


@dataclass(frozen=True)
class Job:
    """One training run of the matrix: a config, a seed and the folder of its run."""

    method: str
    config: Path
    seed: int
    folder: Path

    @property
    def name(self) -> str:
        return f"{self.method} seed {self.seed}"

    def fit_args(self, extra: list[str]) -> list[str]:
        """The command line of the job after `tailseg`."""
        return ["fit", "--config", str(self.config), "--seed_everything", str(self.seed), "--trainer.default_root_dir",
                str(self.folder), "--report_path", str(self.folder / "report.json"), "--ckpt_path", "last",
                *extra]  # fmt: skip

    def command(self, extra: list[str]) -> list[str]:
        return [sys.executable, "-m", "tailseg", *self.fit_args(extra)]

    def finished_report(self) -> dict | None:
        """The job's `report.json` if it is the report of a finished fit (stage "fit", or none in older reports,
        and at least one step trained), else None."""
        try:
            report = json.loads((self.folder / "report.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(report, dict) or report.get("stage", "fit") != "fit":
            return None
        step = report.get("global_step")
        return report if isinstance(step, int) and step > 0 else None


@dataclass(frozen=True)
class Status:
    """Where a job stands: "done", "to do" or "changed" (its run was made by another config; `changes` says how)."""

    state: str
    changes: str = ""


def status(job: Job, extra: list[str]) -> Status:
    """Done: a finished report of the config the job would run now (the same `tailseg.identity` fingerprint).
    Changed: a finished report, or else the checkpoint `--ckpt_path last` would resume, of another config. A config
    that does not parse counts as to do: its run fails with the error in its log."""
    report = job.finished_report()
    if report is not None:
        recorded = report
    else:
        recorded = newest_readable_checkpoint([str(job.folder)])[1]
        if recorded is None:
            return Status("to do")  # nothing to compare with (a checkpoint of before fingerprints resumes)
    try:
        current = resolved_config(job.fit_args(extra))
    except Exception:  # noqa: BLE001 (jsonargparse's errors; the run reports them)
        return Status("to do")
    if identity.same_experiment(recorded, current):
        return Status("done" if report is not None else "to do")
    return Status("changed", identity.describe_differences(identity.recorded_fields(recorded) or {},
                                                          identity.method_fields(current)))  # fmt: skip


def set_aside(job: Job) -> Path:
    """Move the run folder of a job out of the way (`OUT/<method>/.seed<S>.replaced-<time>/`; hidden, so the
    comparison leaves it out) and return where it went."""
    target = job.folder.with_name(f".{job.folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    job.folder.rename(target)
    return target


def plan(configs: list[str], seeds: list[int], out: Path) -> list[Job]:
    """The jobs, config-major (all seeds of the first config, then the next); ValueError on bad input."""
    if not configs:
        raise ValueError("tailseg matrix: give at least one config")
    if not seeds:
        raise ValueError("tailseg matrix: give at least one seed (--seeds)")
    stems: dict[str, Path] = {}
    for config in map(Path, configs):
        if not config.is_file():
            raise ValueError(f"tailseg matrix: config {config} is not a file")
        if config.stem in stems:
            raise ValueError(
                f"tailseg matrix: {stems[config.stem]} and {config} have the same name {config.stem!r}; "
                "the method of a run is its config's file name"
            )
        stems[config.stem] = config
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"tailseg matrix: --seeds repeats a seed: {seeds}")
    return [Job(m, c, s, out / m / f"seed{s}") for m, c in stems.items() for s in seeds]


class Busy(Exception):
    """Another matrix holds the lock of the folder."""


def hold_lock(path: Path, shared: bool = False) -> IO:
    """Lock `path` (`fcntl.flock`: the lock goes with the process, so a crash leaves none behind) and write this
    process's pid and host into it; keep the returned file open while the lock is needed.

    Args:
        path: The lock file (`OUT/.matrix.lock`).
        shared: A shared lock (SLURM array tasks, one job each) instead of an exclusive one (a whole matrix).

    Raises:
        Busy: another process holds it, named in the message.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (held open for as long as the lock is needed)
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise Busy(f"{path.parent} is in use by process {holder}") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()} ({socket.gethostname()})\n")
    handle.flush()
    return handle


class Stopped(Exception):
    """The matrix was stopped by a signal (`signum`) after stopping its jobs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_jobs(running: list[tuple[Job, subprocess.Popen]], grace: float, echo=print) -> None:
    """SIGTERM to every job's process group (each saves `last.ckpt`), SIGKILL to those still running after `grace`
    seconds, and nothing left behind (loader workers included)."""
    for _job, process in running:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for job, process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
            echo(f"stopped {job.name}: run the same command again to resume it")
        except subprocess.TimeoutExpired:
            echo(f"killed  {job.name}: still running {grace:.0f} s after SIGTERM; it resumes from its last checkpoint")
        _signal_group(process, signal.SIGKILL)  # what is left of the group
        process.wait()


def _stop_with_matrix() -> None:
    """In a job's process before it starts: SIGTERM when the matrix dies, even by SIGKILL (Linux), so that no job
    trains on unseen after its matrix is gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the job's own group (started with start_new_session)
    except ProcessLookupError:
        pass


def run_jobs(jobs: list[Job], extra: list[str], slots: list[dict[str, str]], grace: float = GRACE,
             echo=print) -> list[Job]:  # fmt: skip
    """Run the jobs, one per slot at a time (a slot is the environment a job gets), each in its own process group.

    SIGTERM or SIGINT stops the jobs (`stop_jobs`) and raises `Stopped`.

    Returns:
        The jobs that failed (non-zero exit status, or no finished report).
    """
    pending = list(jobs)
    running: dict[int, tuple[Job, subprocess.Popen, float]] = {}
    failed: list[Job] = []
    free = list(range(len(slots)))
    received: list[int] = []
    handlers = {
        s: signal.signal(s, lambda signum, _frame: received.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        while (pending or running) and not received:
            while pending and free and not received:
                job, slot = pending.pop(0), free.pop(0)
                job.folder.mkdir(parents=True, exist_ok=True)
                with open(job.folder / "log.txt", "a") as log:
                    env = {**os.environ, **slots[slot]}
                    process = subprocess.Popen(job.command(extra), stdout=log, stderr=subprocess.STDOUT, env=env,
                                               start_new_session=True, preexec_fn=_stop_with_matrix)  # fmt: skip
                running[slot] = (job, process, time.monotonic())
                where = ", ".join(f"{k}={v}" for k, v in slots[slot].items())
                echo(f"start   {job.name} -> {job.folder} ({where}; pid {process.pid})")
            time.sleep(0.2)
            for slot, (job, process, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[slot]
                free.append(slot)
                if process.returncode == 0 and job.finished_report() is not None:
                    echo(f"finish  {job.name}: {time.monotonic() - start:.0f} s")
                else:
                    failed.append(job)
                    echo(f"FAILED  {job.name} (exit status {process.returncode}): {job.folder / 'log.txt'}")
    finally:  # stopped by a signal, or an error of the matrix itself: no job goes on training unseen
        stop_jobs([(job, process) for job, process, _ in running.values()], grace, echo)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if received:
        raise Stopped(received[0])
    return failed


def usable_cores() -> int:
    """The cores this process may run on (its affinity: a SLURM or taskset allocation), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_slots(jobs: int) -> list[dict[str, str]]:
    threads = max(1, usable_cores() // jobs)
    return [{"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} for _ in range(jobs)]


def gpu_slots(devices: list[str]) -> list[dict[str, str]]:
    return [{"CUDA_VISIBLE_DEVICES": device} for device in devices]


def compare_folder(out: Path, reference: str | None, echo=print) -> None:
    """`OUT/comparison.md` and `OUT/gains.png` from the finished runs under `out` (the shared analysis)."""
    from tailseg.compare import write_comparison

    write_comparison([out], out / "comparison.md", out / "gains.png", reference=reference)
    echo(f"comparison: {out / 'comparison.md'}, {out / 'gains.png'}")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="tailseg matrix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("configs", nargs="+", help="experiment configs; each one's file stem names its method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seed_everything of each run (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs: OUT/<method>/seed<S>/")
    parser.add_argument("--jobs", type=int, default=None, help="runs at a time on the CPU (default 1)")
    parser.add_argument("--devices", nargs="+", default=None, help="GPUs, one run on each at a time")
    parser.add_argument("--reference", default=None, help="method the gains are measured against (default: base)")
    parser.add_argument("--list", action="store_true", help="print the jobs, one line each with its index, and exit")
    parser.add_argument("--only", type=int, default=None, help="run job I only (a SLURM array task)")
    parser.add_argument("--no-compare", action="store_true", help="do not write the comparison at the end")
    parser.add_argument("--compare-only", action="store_true", help="only write the comparison of the runs in OUT")
    parser.add_argument("--rerun-changed", action="store_true",
                        help="train the runs whose config changed since they ran again, from scratch (their old "
                             "folders are kept as OUT/<method>/.seed<S>.replaced-<time>/)")  # fmt: skip
    parser.add_argument("--grace", type=float, default=GRACE,
                        help=f"seconds the runs get to save their state when the matrix is stopped (default {GRACE:.0f})")  # fmt: skip
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.jobs is not None and args.devices:
        parser.error("--jobs and --devices exclude each other: with devices, one run per device at a time")
    if args.grace < 0:
        parser.error(f"--grace must be >= 0, got {args.grace}")
    return args, extra


def _error(message: str) -> NoReturn:
    print(f"tailseg matrix: error: {message.removeprefix('tailseg matrix: ')}", file=sys.stderr)
    raise SystemExit(2)


def matrix_main(argv: list[str]) -> None:
    args, extra = parse(argv)
    try:
        jobs = plan(args.configs, args.seeds, args.out)
    except ValueError as error:
        _error(str(error))
    if args.list:
        for index, job in enumerate(jobs):
            print(f"{index}\t{job.method}\t{job.seed}\t{status(job, extra).state}\t{job.folder}")
        return
    if args.only is not None and not 0 <= args.only < len(jobs):
        _error(f"--only {args.only} is not a job index (0..{len(jobs) - 1})")
    failed: list[Job] = []
    if not args.compare_only:
        jobs = jobs if args.only is None else [jobs[args.only]]
        with ExitStack() as locks:  # one matrix per folder; SLURM array tasks share it, one task per job
            try:
                locks.enter_context(hold_lock(args.out / ".matrix.lock", shared=args.only is not None))
                if args.only is not None:
                    locks.enter_context(hold_lock(jobs[0].folder.parent / f".{jobs[0].folder.name}.lock"))
            except Busy as error:
                _error(str(error))
            failed = run_matrix(jobs, extra, args)
    if args.only is None and not args.no_compare:
        compare_folder(args.out, args.reference)
    if failed:
        print(f"tailseg matrix: {len(failed)} run(s) failed: " + ", ".join(j.name for j in failed), file=sys.stderr)
        raise SystemExit(1)


def run_matrix(jobs: list[Job], extra: list[str], args: argparse.Namespace) -> list[Job]:
    """Skip the jobs that are done, refuse (or with `--rerun-changed` set aside) the changed ones, run the rest.

    Returns:
        The jobs that failed.
    """
    statuses = {job: status(job, extra) for job in jobs}
    changed = [job for job in jobs if statuses[job].state == "changed"]
    if changed and not args.rerun_changed:
        listed = "; ".join(f"{job.name} in {job.folder}: {statuses[job].changes}" for job in changed)
        _error(f"the config of {len(changed)} finished or started run(s) changed since they ran: {listed}; "
               "--rerun-changed trains them again from scratch (keeping their old folders aside)")  # fmt: skip
    for job in changed:
        print(f"changed {job.name}: {statuses[job].changes}; old run kept in {set_aside(job)}")
    for job in jobs:
        if statuses[job].state == "done":
            print(f"done    {job.name} ({job.folder / 'report.json'})")
    slots = gpu_slots(args.devices) if args.devices else cpu_slots(args.jobs or 1)
    try:
        return run_jobs([job for job in jobs if statuses[job].state != "done"], extra, slots, args.grace)
    except Stopped as stop:
        raise SystemExit(128 + stop.signum) from None
