"""`tailseg matrix`: configs x seeds as separate training processes, resumable, ending in the comparison.

    tailseg matrix experiments/synthetic/{base,lmp,tce_class}.yaml --seeds 0 1 2 --out runs/matrix/synthetic
    tailseg matrix experiments/camvid/*.yaml --seeds 0 --out runs/matrix/camvid -- \\
        --data.train.init_args.root DIR --data.val.init_args.root DIR

Every (config, seed) is one job: `tailseg fit --config CONFIG --seed_everything SEED` with its run in
`OUT/<config's file stem>/seed<SEED>/` (the CSV log and checkpoints in `version_*/`, `report.json` and the
job's `log.txt` beside them), plus the arguments after `--`, which go to every job. The method's name is
the config's file stem, so two configs with the same stem are refused.

Scheduling: `--jobs N` processes at a time. On the CPU the cores are split between them (each job gets
`OMP_NUM_THREADS` = cores // N; two jobs with one thread each on a 2-core machine). With `--devices 0 1 ...`
each job runs on one GPU (`CUDA_VISIBLE_DEVICES`), as many jobs at a time as devices; give the configs one
device each (`-- --trainer.devices 1 --trainer.strategy auto` for the paper configs that ask for 4).

Resuming: a job whose `report.json` exists is done and skipped; any other job is started with
`--ckpt_path last`, so an interrupted job continues from its newest checkpoint (every config saves at
least one per epoch; the paper configs every 1000 steps; a run killed with SIGTERM saves `last.ckpt`).
Running the same command again therefore finishes what is missing. Stopping the matrix (Ctrl-C or SIGTERM)
stops its jobs with SIGTERM, so each saves its state.

At the end (unless `--no-compare`), the finished runs of the whole `OUT` folder are compared through the
same analysis as `tailseg compare` and the notebooks: `OUT/comparison.md` (per-class IoU, gains over the
reference, fairness; mean ± std over seeds) and `OUT/gains.png` (gain against pixel share). A job that
failed is reported with its log and makes the exit status 1; the others still run and are compared.

SLURM: `--list` prints the jobs, one per line with its index; `--only I` runs job I alone (no comparison).
An array job runs one job per task, and a last step compares (see experiments/README.md):

    #SBATCH --array=0-8
    tailseg matrix CONFIGS --seeds 0 1 2 --out OUT --only $SLURM_ARRAY_TASK_ID
    # then, after the array: tailseg matrix CONFIGS --seeds 0 1 2 --out OUT --compare-only
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Job:
    """One training run of the matrix: a config, a seed and the folder of its run."""

    method: str
    config: Path
    seed: int
    folder: Path

    @property
    def done(self) -> bool:
        return (self.folder / "report.json").is_file()

    def command(self, extra: list[str]) -> list[str]:
        return [sys.executable, "-m", "tailseg", "fit", "--config", str(self.config), "--seed_everything",
                str(self.seed), "--trainer.default_root_dir", str(self.folder), "--report_path",
                str(self.folder / "report.json"), "--ckpt_path", "last", *extra]  # fmt: skip


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


def run_jobs(jobs: list[Job], extra: list[str], slots: list[dict[str, str]], echo=print) -> list[Job]:
    """Run the jobs that are not done, one per slot at a time (a slot is the environment a job gets).

    Returns:
        The jobs that failed (non-zero exit status).
    """
    pending = [job for job in jobs if not job.done]
    for job in jobs:
        if job.done:
            echo(f"done    {job.method} seed {job.seed} ({job.folder / 'report.json'})")
    running: dict[int, tuple[Job, subprocess.Popen, float]] = {}
    failed: list[Job] = []
    free = list(range(len(slots)))
    try:
        while pending or running:
            while pending and free:
                job, slot = pending.pop(0), free.pop(0)
                job.folder.mkdir(parents=True, exist_ok=True)
                log = open(job.folder / "log.txt", "a")  # noqa: SIM115 (closed with the process below)
                env = {**os.environ, **slots[slot]}
                process = subprocess.Popen(job.command(extra), stdout=log, stderr=subprocess.STDOUT, env=env)
                log.close()
                running[slot] = (job, process, time.monotonic())
                echo(
                    f"start   {job.method} seed {job.seed} -> {job.folder} ({', '.join(f'{k}={v}' for k, v in slots[slot].items())})"
                )
            time.sleep(0.2)
            for slot, (job, process, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[slot]
                free.append(slot)
                wall = time.monotonic() - start
                if process.returncode == 0 and job.done:
                    echo(f"finish  {job.method} seed {job.seed}: {wall:.0f} s")
                else:
                    failed.append(job)
                    echo(
                        f"FAILED  {job.method} seed {job.seed} (exit status {process.returncode}): {job.folder / 'log.txt'}"
                    )
    except KeyboardInterrupt:
        for _job, process, _ in running.values():
            process.send_signal(signal.SIGTERM)  # each run saves last.ckpt (PreemptionCheckpoint)
        for job, process, _ in running.values():
            process.wait()
            echo(f"stopped {job.method} seed {job.seed}: run the same command again to resume it")
        raise
    return failed


def cpu_slots(jobs: int) -> list[dict[str, str]]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
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
    parser.add_argument("--list", action="store_true", help="print the jobs with their indices and exit")
    parser.add_argument("--only", type=int, default=None, help="run job I only (a SLURM array task)")
    parser.add_argument("--no-compare", action="store_true", help="do not write the comparison at the end")
    parser.add_argument("--compare-only", action="store_true", help="only write the comparison of the runs in OUT")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.jobs is not None and args.devices:
        parser.error("--jobs and --devices exclude each other: with devices, one run per device at a time")
    return args, extra


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (a scheduler's stop) ends the matrix as Ctrl-C does: jobs save and stop


def matrix_main(argv: list[str]) -> None:
    args, extra = parse(argv)
    try:
        jobs = plan(args.configs, args.seeds, args.out)
    except ValueError as error:
        print(f"tailseg matrix: error: {str(error).removeprefix('tailseg matrix: ')}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.list:
        for index, job in enumerate(jobs):
            print(f"{index}\t{job.method}\t{job.seed}\t{'done' if job.done else 'to do'}\t{job.folder}")
        return
    if args.only is not None:
        if not 0 <= args.only < len(jobs):
            print(f"tailseg matrix: error: --only {args.only} is not a job index (0..{len(jobs) - 1})", file=sys.stderr)
            raise SystemExit(2)
        jobs = [jobs[args.only]]
    failed: list[Job] = []
    if not args.compare_only:
        slots = gpu_slots(args.devices) if args.devices else cpu_slots(args.jobs or 1)
        signal.signal(signal.SIGTERM, _stop)
        try:
            failed = run_jobs(jobs, extra, slots)
        except KeyboardInterrupt:
            raise SystemExit(130) from None
    if args.only is None and not args.no_compare:
        compare_folder(args.out, args.reference)
    if failed:
        print(f"tailseg matrix: {len(failed)} run(s) failed: " + ", ".join(f"{j.method} seed {j.seed}" for j in failed),
              file=sys.stderr)  # fmt: skip
        raise SystemExit(1)
