"""A tiny `ssm-jax train` run and what tests compare of it (tests/test_cli.py, tests/test_reliability.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from ssm_jax import checkpoint, cli, run_files

TINY = [
    "--config", "basic", "--hidden-dim", "16", "--horizon", "20", "--tasks-per-batch", "4",
    "--trajectories-per-task", "4", "--iterations", "40", "--chunk-size", "5", "--checkpoint-every", "5",
]  # fmt: skip
"""40 iterations in chunks of 5, a checkpoint after each chunk: about 10 s, most of it compiling."""


def train(out_dir: Path, *flags: str) -> Path:
    """Runs `ssm-jax train` in this process; returns its run directory."""
    assert cli.main(["train", "--out-dir", str(out_dir), *TINY, *flags]) == 0
    (run_dir,) = out_dir.iterdir()
    return run_dir


def start(out_dir: Path, *flags: str, wrapper: tuple[str, ...] = ()) -> subprocess.Popen:
    """`ssm-jax train` in a subprocess (text pipes for stdout and stderr), run by the command `wrapper` if given."""
    command = [*wrapper, sys.executable, "-m", "ssm_jax", "train", "--out-dir", str(out_dir), *TINY, *flags]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def final(run_dir: Path) -> tuple[list[np.ndarray], list[dict]]:
    """The newest checkpoint's leaves and the metrics log's records."""
    state, _ = checkpoint.restore(run_dir / run_files.CHECKPOINTS, run_files.checkpoint_steps(run_dir)[-1])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [np.asarray(x) for x in jax.tree.leaves(state)], records


def assert_same_run(run_dir: Path, expected: Path) -> None:
    """`run_dir` ended with `expected`'s final params, state and metrics, bit for bit, each iteration logged once."""
    (leaves, records), (expected_leaves, expected_records) = final(run_dir), final(expected)
    assert [r["iteration"] for r in records] == [r["iteration"] for r in expected_records]
    assert records == expected_records
    assert len(leaves) == len(expected_leaves)
    for got, want in zip(leaves, expected_leaves, strict=True):
        np.testing.assert_array_equal(got, want)


_PROGRESS = re.compile(r"^[\w .()-]+: \d+/\d+\b|: done, \d+ s$|…$")
"""A progress line on stderr: a chunk's (`train: 5/40, return -5.7, 3 s`, `train: 0/40, compiling the first
chunk`) or a long step's (`eval: compiling and running 2 held-out episodes…`, `...: done, 1 s`)."""


def messages(stderr: str) -> list[str]:
    """The lines of `stderr` that are not progress: what a command says to its user."""
    return [line for line in stderr.strip().splitlines() if line.strip() and not _PROGRESS.search(line)]
