"""First compile of each experiment's training program, per sequence model.

    python -m benchmarks.compile_time [--experiments navigation halfcheetah_vel] [--models ssm mlp ...]

For each (experiment preset, model): the seconds to trace and lower the jitted training chunk
(`trainer.train` over the preset's `chunk_size` meta-iterations) and to compile it with XLA. Compiles are what a
short CPU run, a test or a sweep pays once per program. Writes
`benchmarks/results/compile_time.json` and prints a table.
"""

from __future__ import annotations

import dataclasses
import time

import jax

from benchmarks.common import HarnessArgs, report
from ssm_jax.config import CONFIGS, build
from ssm_jax.config.parsing import command_line
from ssm_jax.models import MODEL_NAMES
from ssm_jax.trainers import HParams

PRESETS = {"navigation": CONFIGS["navigation-ppo"], "halfcheetah_vel": CONFIGS["halfcheetah-vel"]}


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    experiments: tuple[str, ...] = tuple(PRESETS)
    models: tuple[str, ...] = MODEL_NAMES


def main(args: Args) -> list[dict]:
    unknown = sorted(set(args.experiments) - set(PRESETS)) + sorted(set(args.models) - set(MODEL_NAMES))
    if unknown:
        raise ValueError(f"unknown experiments or models {unknown}; choose from {list(PRESETS)} and {MODEL_NAMES}")
    rows = []
    for experiment in args.experiments:
        for model in args.models:
            preset = dataclasses.replace(PRESETS[experiment], model=model)
            _, trainer = build(preset)
            hparams = HParams.create(preset.inner_lr, preset.outer_lr, preset.experience_weight)
            state = jax.jit(trainer.init, static_argnums=2)(jax.random.key(0), hparams, True)
            chunk = jax.jit(lambda s, k, n=preset.chunk_size: trainer.train(s, k, n))
            start = time.perf_counter()
            lowered = chunk.lower(state, jax.random.key(1))
            trace_s = time.perf_counter() - start
            start = time.perf_counter()
            lowered.compile()
            compile_s = time.perf_counter() - start
            rows.append(
                {
                    "experiment": experiment,
                    "model": model,
                    "chunk_iterations": preset.chunk_size,
                    "trace_lower_s": trace_s,
                    "compile_s": compile_s,
                }
            )
            print(f"{experiment} {model}: trace and lower {trace_s:.1f} s, compile {compile_s:.1f} s", flush=True)
    report("compile_time", rows, ["experiment", "model", "chunk_iterations", "trace_lower_s", "compile_s"])
    return rows


if __name__ == "__main__":
    main(command_line(Args))
