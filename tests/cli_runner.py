"""Two ways to run the `tailseg` command line in tests: `tailseg` in this process (what the console script does,
without paying its imports again) and `tailseg_subprocess`, the real `python -m tailseg`, for what only a process
shows (the console script itself, a traceback printed by the interpreter)."""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tailseg.cli import main

SIGNALS = [signal.SIGINT, signal.SIGTERM] + [getattr(signal, name) for name in ("SIGUSR1",) if hasattr(signal, name)]


@dataclass
class Result:
    """What a run of the command line ended with, as `subprocess.CompletedProcess` has it."""

    returncode: int
    stdout: str
    stderr: str


def tailseg(*args: str, cwd: Path, **env: str) -> Result:
    """Run `tailseg ARGS` in this process as the console script does (`main()` reading `sys.argv`) in `cwd` with
    `env` added to the environment (`TAILSEG_TRACEBACK` removed unless given).

    The status is that of `SystemExit`, 0 for a normal return and 1 (the traceback on stderr) for an exception, as
    the interpreter would exit. What the run changes of the process is put back afterwards: `sys.argv`, the
    environment, the working folder, warning filters, torch's threads, the random generators of `random`, numpy
    and torch, and the handlers of SIGINT, SIGTERM and SIGUSR1.
    """
    saved_argv, saved_environ, saved_cwd = sys.argv, dict(os.environ), os.getcwd()
    threads, rng = torch.get_num_threads(), (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    handlers = {signum: signal.getsignal(signum) for signum in SIGNALS}
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.pop("TAILSEG_TRACEBACK", None)
    os.environ.update(env)
    sys.argv = ["tailseg", *args]
    try:
        os.chdir(cwd)
        with warnings.catch_warnings(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
                if not isinstance(exit_.code, int | None):
                    print(exit_.code, file=sys.stderr)  # as the interpreter prints a message given to exit
            except Exception:  # noqa: BLE001 (the interpreter reports any exception the same way)
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environ)
        torch.set_num_threads(threads)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.random.set_rng_state(rng[2])
        for signum, handler in handlers.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)
    return Result(code, stdout.getvalue(), stderr.getvalue())


def tailseg_subprocess(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m tailseg ARGS`) in `cwd` with `env` added to the environment."""
    environ = {key: value for key, value in os.environ.items() if key != "TAILSEG_TRACEBACK"}
    return subprocess.run([sys.executable, "-m", "tailseg", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**environ, **env})  # fmt: skip
