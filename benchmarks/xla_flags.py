"""What the machine-independent XLA flags cost: one training chunk of a named config, compiled and run under XLA's
defaults and under `ssm_jax.xla_flags.PORTABLE_CPU`, each in a fresh process (XLA reads its flags once).

    python -m benchmarks.xla_flags                                   # the flagship's CPU preset and navigation
    python -m benchmarks.xla_flags --configs basic --rounds 3

Each round starts one process per flag set, in turn, so a shared machine's drift falls on both alike; the table
shows the medians over rounds (compile seconds, seconds per meta-iteration after compile) and the portable/default
ratio. Writes `benchmarks/results/xla_flags.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import HarnessArgs, report
from ssm_jax.config.parsing import command_line
from ssm_jax.xla_flags import PORTABLE_CPU, USER_FLAGS_VARIABLE, with_flags

_CHILD = """
import json, sys, time
import jax
from ssm_jax.config import CONFIGS, build, initial_state, training_key
config = CONFIGS[sys.argv[1]]
chunk = int(sys.argv[2])
_, trainer = build(config)
state = initial_state(config, trainer)
train = jax.jit(lambda state, key: trainer.train(state, key, chunk))
keys = jax.random.split(training_key(config), 3)
start = time.perf_counter()
compiled = train.lower(state, keys[0]).compile()
compile_s = time.perf_counter() - start
state, _ = jax.block_until_ready(compiled(state, keys[0]))
start = time.perf_counter()
state, _ = jax.block_until_ready(compiled(state, keys[1]))
print(json.dumps({"compile_s": compile_s, "iteration_s": (time.perf_counter() - start) / chunk}))
"""


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    configs: tuple[str, ...] = ("halfcheetah-vel", "basic")
    """Named configs (`ssm_jax.config.CONFIGS`, meta-RL) whose training chunk is timed."""
    chunk: int = 5
    """Meta-iterations in the timed chunk."""
    rounds: int = 2
    """Processes per flag set and config, started in turn."""


FLAG_SETS = {"default": "", "portable": with_flags("", PORTABLE_CPU)}


def run_child(config: str, chunk: int, flags: str) -> dict:
    user = os.environ.get(USER_FLAGS_VARIABLE, os.environ.get("XLA_FLAGS", ""))  # without the entry point's own
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{user} {flags}".strip()}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # every compile is timed
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, config, str(chunk)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(args: Args) -> Path:
    rows = []
    for config in args.configs:
        samples = {name: [] for name in FLAG_SETS}
        for _ in range(args.rounds):
            for name, flags in FLAG_SETS.items():
                samples[name].append(run_child(config, args.chunk, flags))
        medians = {
            name: {key: statistics.median(s[key] for s in runs) for key in ("compile_s", "iteration_s")}
            for name, runs in samples.items()
        }
        for name, median in medians.items():
            ratio = median["iteration_s"] / medians["default"]["iteration_s"]
            rows.append({"config": config, "flags": name, **median, "iteration_ratio_to_default": ratio})
    columns = ("config", "flags", "compile_s", "iteration_s", "iteration_ratio_to_default")
    return report("xla_flags", rows, columns, note=f"portable: {FLAG_SETS['portable']}")


if __name__ == "__main__":
    main(command_line(Args))
