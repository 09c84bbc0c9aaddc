"""Shared experiment plumbing: the preset-aware command line and the entry point every experiment runs under.

Run directories, metrics logs, chunked training and step checkpoints are `ssm_jax.runs`; the one-line handling of a
user's mistakes is `ssm_jax.cli`'s, so the experiments and `ssm-jax` answer alike.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ssm_jax import disk, distributed, interrupts, run_files, watchdog
from ssm_jax.config.parsing import UsageError, exit_with_error, parse, resumed_config
from ssm_jax.report import provenance
from ssm_jax.runs import Diverged, Interrupted

ArgsT = TypeVar("ArgsT")


def parse_args(presets: Mapping[str, ArgsT], default_preset: str, argv: Sequence[str] | None = None) -> ArgsT:
    """`--preset NAME` picks one of `presets` (named configs); every other flag overrides one of its fields (tyro).
    With `--resume RUN_DIR` the run's own config.json is the base instead (a run of this experiment's presets), and
    a flag that changes it is an error, but for a larger `--iterations`. A user's mistake is one line on stderr and
    exit 2, before anything compiles."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--preset", default=None)
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    resume_parser = argparse.ArgumentParser(add_help=False)
    resume_parser.add_argument("--resume", default=None)
    resume = resume_parser.parse_known_args(rest)[0].resume  # stays in `rest`: the config's `resume` holds it
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)  # `python -m experiments.x`: name the module
    prog = f"python -m {main_spec.name}" if main_spec is not None else None
    try:
        if known.preset is not None and known.preset not in presets:
            raise UsageError(f"unknown preset {known.preset!r}; expected one of {', '.join(presets)}")
        if resume is not None and hasattr(presets[default_preset], "resume"):
            if known.preset is not None:
                raise UsageError(f"--resume {resume}: --preset {known.preset}; a resumed run keeps its config")
            config = resumed_config(Path(resume), rest, prog, ignored=("resume",))
            expected = type(presets[default_preset])
            if type(config) is not expected:
                raise UsageError(
                    f"--resume {resume}: a run of another experiment (its config is a {type(config).__name__}, this "
                    f"experiment's a {expected.__name__})"
                )
            names = [getattr(preset, "name", None) for preset in presets.values()]  # named configs carry a name
            if getattr(config, "name", None) not in names:
                raise UsageError(
                    f"--resume {resume}: a {config.name} run, not one of this experiment's presets "
                    f"({', '.join(names)}); resume it with the command it printed"
                )
            return config
        name = known.preset or default_preset
        description = f"Preset {name!r} (choose with --preset {{{','.join(presets)}}})."
        return parse(type(presets[name]), rest, prog, description, presets[name])
    except UsageError as error:
        exit_with_error(str(error))


def run_main(main: Callable[[Any], Any], presets: Mapping[str, Any], default_preset: str) -> None:
    """`python -m experiments.x`: parses the flags and runs `main`. Ctrl-C (or SIGTERM) during training stops at the
    end of a chunk, where `runs.train_phase` saves it (in experiments that checkpoint) and says how to continue; exit
    0 (143 after SIGTERM). Ctrl-C at any other moment (compiling an evaluation, evaluating, writing results), or a
    second one, aborts at once with exit 130 (SIGTERM: 143) and no traceback (`interrupts.abort_on_interrupt`). A
    diverged run is one line on stderr and exit 3 (its newest checkpoint is the last finite state); a run that uses
    no CPU for `SSM_JAX_STALL_SECONDS` (a wedged XLA runtime) one line and exit 124 (`ssm_jax.watchdog`). A finished run
    whose `main` returns its `run_dir` gets a provenance.json (`ssm_jax.report.provenance`: command, commit, wall
    time, machine)."""
    args = parse_args(presets, default_preset)
    try:
        distributed.refuse_running_alone(getattr(args, "distributed", False))
    except distributed.DistributedError as error:
        exit_with_error(str(error))
    started, module = time.perf_counter(), provenance.current_module()
    code = provenance.commit() if module is not None else None
    try:
        with interrupts.abort_on_interrupt(), distributed.failing_fast(), watchdog.exit_when_stalled():
            results = main(args)
        if module is not None and isinstance(results, dict) and "run_dir" in results:
            provenance.record(Path(results["run_dir"]), module, sys.argv[1:], code, time.perf_counter() - started)
    except Interrupted as stop:
        raise SystemExit(interrupts.stopped_exit_code(stop.signum)) from None
    except Diverged as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(3) from None
    except (run_files.RunInUse, run_files.RunDirError, disk.OutOfSpace) as error:
        exit_with_error(str(error))
    finally:
        interrupts.ignore_while_exiting()


def resume_command(run_dir: Path, default_module: str) -> str:
    """The command that continues `run_dir`: the running `python -m experiments.x` module, else `default_module`
    (a run started from Python or a test)."""
    return f"python -m {provenance.current_module() or default_module} --resume {run_dir}"


@contextlib.contextmanager
def run_directory(args: Any) -> Iterator[Path]:
    """The run's directory, held by this process while the block runs (`run_files.lock`): `args.resume`'s, or a fresh
    one under `args.out_dir` with `args` as its config.json.

    Raises:
        run_files.RunInUse: another process is training or resuming that run.
    """
    run_dir = Path(args.resume) if args.resume else run_files.make_run_dir(args.out_dir)
    with run_files.lock(run_dir):
        if not args.resume:  # a resumed run writes its config once its checkpoint restored (--iterations may grow)
            run_files.write_config(run_dir, args)
        yield run_dir
