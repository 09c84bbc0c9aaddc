"""`ssm-jax train | eval | adapt | info` (also `python -m ssm_jax`): the library's trainer from the command line.

    ssm-jax train --config navigation                      # a named config (ssm_jax.config.CONFIGS)
    ssm-jax train --config basic --iterations 40 --model ssm --tasks-per-batch 8   # every leaf field is a flag
    ssm-jax train --resume runs/cli/<stamp>                # continues from its newest checkpoint, bit for bit
    ssm-jax train --config in-context-navigation --models gru --num-seeds 1   # RL², one policy
    ssm-jax eval  --checkpoint runs/cli/<stamp> --eval-tasks 32
    ssm-jax adapt --checkpoint runs/cli/<stamp> --adapt-rounds 3 --adaptation-mode hybrid
    ssm-jax info

The configs are the experiments' (`ssm_jax.config.RunConfig`, the same flags). `train` writes
`<out-dir>/<UTC stamp>/`: config.json (the run's `RunConfig`, the one source of truth on resume),
metrics.jsonl (one record per chunk: the iteration and the means of `Trainer.train`'s metrics), train.json,
learning_curve.png and checkpoints `checkpoints/step_<n>/` (orbax's CheckpointManager) every `checkpoint_every`
iterations and at the end. Ctrl-C finishes the chunk in flight, saves it, says where
and exits 0; `--resume` after Ctrl-C or a kill ends with the params and metrics of the uninterrupted run. `eval`
and `adapt` evaluate on held-out tasks drawn from the run's seed (`sweep.run_keys(seed).eval`, the experiments' held-out
tasks), print a table and write eval.json / adapt_<mode>.json (and its .png, the curve with its 95% CI; one file
per mode, `adapt_<mode>_online_every<N>_window<W>_scale<S>.*` with --online) into the run. They serve an RL² run
too: `eval` its episode 1, `adapt` episodes 1..M of its trials (`adapt_in_context.*`; it takes no gradient step).

A user's mistake (an unknown config, env, model or flag value, a missing, damaged, diverged or mismatched
checkpoint, a flag that contradicts a resumed run) is one line on stderr and exit code 2, before anything compiles;
so is an output location that cannot be written or is full.
A run that diverges (a non-finite value in its state after a chunk) stops with one line and exit code 3; that
chunk is not saved, so the newest checkpoint is its last finite state. Ctrl-C outside a training chunk (compiling
an evaluation, evaluating), or a second Ctrl-C, aborts at once with exit code 130; the checkpoints stay intact.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import sys
from collections.abc import Sequence

import jax

from ssm_jax import disk, envs, interrupts, run_files
from ssm_jax.adapt import strategy_names
from ssm_jax.adapt.adapter import ADAPTATION_MODES
from ssm_jax.cli.evaluation import AdaptArgs, EvalArgs, adapt, evaluate
from ssm_jax.cli.training import TRAINABLE, train
from ssm_jax.config import CONFIGS
from ssm_jax.config.parsing import UsageError, exit_with_error, parse, resumed_config
from ssm_jax.models import MODEL_NAMES
from ssm_jax.report import aligned_table

__all__ = [
    "AdaptArgs", "EvalArgs", "UsageError", "adapt", "evaluate", "exit_with_error", "info", "main", "parse",
    "resumed_config", "train",
]  # fmt: skip


def info() -> dict:
    """`ssm-jax info`: devices, versions, models, envs, adaptation strategies and the named configs: those `ssm-jax
    train --config` runs, and those only an experiment runs (`python -m experiments.world_model`, `.sinusoid`)."""
    packages = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "brax", "gymnax", "mujoco", "tyro", "numpy")
    versions = {}
    for name in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    result = {
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "versions": versions,
        "models": list(MODEL_NAMES),
        "envs": list(envs.META_RL_ENVS),
        "adaptation_modes": list(ADAPTATION_MODES),
        "strategies": list(strategy_names()),
        "configs": list(TRAINABLE),
        "experiment_configs": [name for name in CONFIGS if name not in TRAINABLE],
    }
    rows = [[k, ", ".join(v) if isinstance(v, list) else str(v)] for k, v in result.items() if k != "versions"]
    rows += [[name, version] for name, version in versions.items()]
    print(aligned_table(rows))
    return result


_COMMANDS = ("train", "eval", "adapt", "info")


def main(argv: Sequence[str] | None = None) -> int:
    """The `ssm-jax` entry point; returns the exit code (a `UsageError` exits 2 with one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: ssm-jax {{{','.join(_COMMANDS)}}} [--help] [flags]"
    if not argv:  # a mistake: one line on stderr
        exit_with_error(f"name a command: {usage.removeprefix('usage: ')}")
    if argv[0] in ("-h", "--help"):
        print(f"{usage}\n\n{__doc__}")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        with interrupts.abort_on_interrupt():  # Ctrl-C outside a training chunk, or a second one: exit 130 at once
            if command == "train":
                return train(rest)
            if command == "eval":
                evaluate(parse(EvalArgs, rest, "ssm-jax eval", "Return on held-out tasks, no adaptation."))
            elif command == "adapt":
                adapt(parse(AdaptArgs, rest, "ssm-jax adapt", "Test-time adaptation on held-out tasks."))
            elif command == "info":
                if rest and rest[0] in ("-h", "--help"):
                    print(f"usage: ssm-jax info\n\n{info.__doc__}")
                elif rest:
                    raise UsageError(f"ssm-jax info takes no arguments, got {' '.join(rest)}")
                else:
                    info()
            else:
                raise UsageError(f"unknown command {command!r}; expected one of {', '.join(_COMMANDS)}")
    except (UsageError, disk.OutOfSpace, run_files.RunDirError) as error:
        exit_with_error(str(error))
    return 0
