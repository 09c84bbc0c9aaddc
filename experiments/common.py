"""Shared experiment plumbing: preset-aware tyro CLI, run directories, JSON/JSONL output, chunked training."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import jax
import numpy as np
import tyro
from tqdm.auto import tqdm

from ssm_jax.checkpoint import config_to_json
from ssm_jax.sweep import chunk_keys

ArgsT = TypeVar("ArgsT")


def parse_args(presets: Mapping[str, ArgsT], default_preset: str, argv: Sequence[str] | None = None) -> ArgsT:
    """`--preset NAME` picks a frozen Args instance; every other flag overrides one of its fields (tyro)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--preset", default=default_preset, choices=sorted(presets))
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    preset = presets[known.preset]
    main_spec = getattr(sys.modules["__main__"], "__spec__", None)  # `python -m experiments.x`: name the module
    return tyro.cli(  # a failed Args check is tyro's one error box and exit 2, before anything compiles
        type(preset),
        default=preset,
        args=rest,
        prog=f"python -m {main_spec.name}" if main_spec is not None else None,
        description=f"Preset {known.preset!r} (choose with --preset {{{','.join(sorted(presets))}}}).",
    )


def make_run_dir(root: str | Path) -> Path:
    """A fresh `root/<UTC timestamp>` directory (suffixed if that name is taken)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    for suffix in [""] + [f"-{i}" for i in range(1, 100)]:
        path = root / f"{stamp}{suffix}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {root}")


def to_python(tree: Any) -> Any:
    """Arrays and numpy scalars to plain Python floats/ints/lists, for JSON."""

    def convert(x):
        array = np.asarray(x)
        return array.item() if array.ndim == 0 else array.tolist()

    return jax.tree.map(convert, jax.device_get(tree))


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(to_python(value), indent=2, allow_nan=True))


def write_config(run_dir: Path, args: Any) -> None:
    (run_dir / "config.json").write_text(config_to_json(args))


class JsonlLogger:
    """Appends one JSON object per line to `path`."""

    def __init__(self, path: Path):
        self.path = path
        self.path.touch()

    def log(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(to_python(dict(record))) + "\n")


def train_in_chunks(
    update_chunk: Callable[[Any, jax.Array], tuple[Any, Any]],
    state: Any,
    key: jax.Array,
    iterations: int,
    chunk_size: int,
    description: str,
    on_chunk: Callable[[int, Any, Any], None] | None = None,
    postfix: Callable[[Any], Mapping[str, float]] | None = None,
    start: int = 0,
) -> Any:
    """Runs `update_chunk(state, key) -> (state, stacked metrics)` (jitted, `chunk_size` iterations per call;
    `key` may be a sweep's stacked train keys `[R]`, each run's chunks keyed as if it ran alone)
    until `iterations`, syncing to the host once per chunk for the progress bar and
    `on_chunk(iteration, state, metrics)` (the state that chunk returned, before the next call donates it).
    """
    if iterations % chunk_size:
        raise ValueError(f"iterations={iterations} must be a multiple of chunk_size={chunk_size}")
    keys = chunk_keys(key, iterations // chunk_size)
    live, started = _live_progress(), time.perf_counter()
    with tqdm(
        total=iterations, initial=start, desc=description, dynamic_ncols=True, leave=False, disable=not live
    ) as bar:
        for chunk in range(start // chunk_size, iterations // chunk_size):
            state, metrics = update_chunk(state, keys[chunk])
            metrics = jax.device_get(metrics)
            done = (chunk + 1) * chunk_size
            if on_chunk is not None:
                on_chunk(done, state, metrics)
            shown = {} if postfix is None else {k: f"{v:.4g}" for k, v in postfix(metrics).items()}
            bar.set_postfix(shown)
            bar.update(chunk_size)
            if not live:  # a log file or CI: one plain line per chunk instead of carriage-return redraws
                fields = "".join(f", {k} {v}" for k, v in shown.items())
                print(
                    f"{description}: {done}/{iterations}{fields}, {time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    return state


def exit_with_error(message: str) -> NoReturn:
    """A user's mistake (a bad checkpoint, say): one line on stderr, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _live_progress() -> bool:
    """Whether a redrawn progress bar will be readable: a terminal, or a notebook's widget."""
    return sys.stderr.isatty() or any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
