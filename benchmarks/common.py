"""Timing, JSON output and table printing shared by the benchmark harnesses."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from ssm_jax.report import markdown_table

RESULTS_DIR = Path(os.environ.get("SSM_JAX_BENCHMARK_RESULTS", Path(__file__).parent / "results"))
"""Where the harnesses write their JSON: `benchmarks/results/`, or `$SSM_JAX_BENCHMARK_RESULTS` (tests, scratch)."""


@dataclasses.dataclass(frozen=True)
class HarnessArgs:
    """The base of every harness's flags: each int field, and each int of a tuple field, counts something and must
    be >= 1 (but the fields named in `MAY_BE_ZERO`); a bad value is one line before anything compiles."""

    MAY_BE_ZERO = ("seed", "mjx_max_batch")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values = value if isinstance(value, tuple) else (value,)
            counts = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
            floor = 0 if field.name in self.MAY_BE_ZERO else 1
            if (isinstance(value, tuple) and not value) or any(v < floor for v in counts):
                raise ValueError(f"--{field.name.replace('_', '-')} must be >= {floor} (and not empty), got {value!r}")


def compile_and_time(fn: Callable, *args, repeats: int = 5) -> tuple[float, float]:
    """Returns `(compile seconds, median seconds per call after compile)` for `jax.jit(fn)(*args)`."""
    jitted = jax.jit(fn)
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return compile_s, statistics.median(times)


def compile_and_time_interleaved(calls: dict[str, tuple[Callable, tuple]], repeats: int = 5) -> dict[str, tuple]:
    """`(compile seconds, median seconds per call after compile)` of each `name: (fn, args)` under `jax.jit`, the
    calls taken in turn (one of each per round), so a shared machine's drift falls on every program alike and their
    ratios hold."""
    compile_s, compiled = {}, {}
    for name, (fn, args) in calls.items():
        start = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(*args).compile()
        compile_s[name] = time.perf_counter() - start
    for name, (_, args) in calls.items():
        jax.block_until_ready(compiled[name](*args))
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (_, args) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled[name](*args))
            times[name].append(time.perf_counter() - start)
    return {name: (compile_s[name], statistics.median(seconds)) for name, seconds in times.items()}


def time_interleaved(calls: dict[str, tuple[Callable, tuple]], repeats: int = 5) -> dict[str, float]:
    """Median seconds per call of each `name: (fn, args)` after compile, taken in turn
    (`compile_and_time_interleaved`)."""
    return {name: seconds for name, (_, seconds) in compile_and_time_interleaved(calls, repeats).items()}


def machine() -> dict:
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device": device.device_kind,
        "device_count": jax.device_count(),
        "cpu": platform.processor() or platform.machine(),
        "jax": jax.__version__,
    }


def write_results(name: str, rows: list[dict], out_dir: Path = RESULTS_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return path


def report(name: str, rows: list[dict], columns: Sequence[str], note: str = "") -> Path:
    """Writes `rows` to `RESULTS_DIR/<name>.json`, prints their markdown table restricted to `columns`, then
    `note` and the JSON path."""
    path = write_results(name, rows)
    print(markdown_table(columns, [[row[c] for c in columns] for row in rows], float_format=".4g"))
    print(f"{note}{'; ' if note else ''}wrote {path}")
    return path
