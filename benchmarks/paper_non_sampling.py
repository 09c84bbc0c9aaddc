"""The non-sampling work of one paper-batch meta-iteration of the flagship: what the waste removal of issue 26 cut.

    python -m benchmarks.paper_non_sampling                                   # this tree
    git worktree add /tmp/before ad7dc3d && cd /tmp/before && \
        PYTHONPATH=/tmp/before python <this repo>/benchmarks/paper_non_sampling.py --label ad7dc3d

`meta_rl.meta_update` of the flagship's paper preset (`halfcheetah-vel-paper`) (40 tasks x 20 trajectories x 200 steps,
5 PPO epochs; spring backend) with every rollout replaced by pre-drawn trajectories of the same shapes, so what is
timed is the rest: the baseline fits, the inner step, the outer epochs and the metrics. It runs against older
commits too (their trainer builder was `_build`), so one machine can time before and after. Writes
`benchmarks/results/paper_non_sampling_<label>.json` and prints a table.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import ssm_jax.meta.rl as rl_module
from ssm_jax.config import CONFIGS, build
from ssm_jax.trainers import HParams

sys.path.insert(0, str(Path(__file__).parents[1]))  # run by path from another commit's tree: this repo's helpers
from benchmarks.common import HarnessArgs, report
from ssm_jax.config.parsing import command_line


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    label: str = "current"
    """Names the JSON file (e.g. the commit measured)."""
    repeats: int = 3
    """Timed calls after the compile."""


def _pre_drawn_rollouts(real_rollout):
    """A `rollout` with the real one's output shapes, filled with random values instead of env steps."""

    def rollout(key, env, task, policy, params, num_envs, horizon, obs_stats=None):
        shapes = jax.eval_shape(
            lambda k, t: real_rollout(k, env, t, policy, params, num_envs, horizon, obs_stats), key, task
        )
        leaves, treedef = jax.tree.flatten(shapes)
        keys = jax.random.split(key, len(leaves))
        filled = [
            jax.random.normal(k, s.shape).astype(s.dtype) if jnp.issubdtype(s.dtype, jnp.floating)
            else jnp.zeros(s.shape, s.dtype)
            for k, s in zip(keys, leaves, strict=True)
        ]  # fmt: skip
        return jax.tree.unflatten(treedef, filled)

    return rollout


def main(args: Args) -> list[dict]:
    rl_module.rollout = _pre_drawn_rollouts(rl_module.rollout)
    preset = dataclasses.replace(CONFIGS["halfcheetah-vel-paper"], backend="spring")
    env, trainer = build(preset)
    state = trainer.init(jax.random.key(0), HParams.create(preset.inner_lr, preset.outer_lr))
    tasks = env.sample_tasks(jax.random.key(1), trainer.config.tasks_per_batch)
    update = jax.jit(trainer.parts.meta_rl.meta_update)
    jax.block_until_ready(update(state.meta, state.obs_stats, jax.random.key(2), tasks))
    seconds = []
    for i in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(update(state.meta, state.obs_stats, jax.random.key(3 + i), tasks))
        seconds.append(time.perf_counter() - start)
    rows = [{"label": args.label, "phase": "non-sampling work, paper batch", "seconds": statistics.median(seconds)}]
    report(f"paper_non_sampling_{args.label}", rows, ["label", "phase", "seconds"])
    return rows


if __name__ == "__main__":
    main(command_line(Args))
