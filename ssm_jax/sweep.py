"""Sweeps: many training runs as one compiled program, `jax.vmap` over a leading run axis (rejax / purejaxrl style).

    grid = sweep.make_grid(seeds=range(4), inner_lr=(0.05, 0.1))   # 8 runs: every value with every seed
    programs = sweep.make_programs(trainer, chunk_size=10)         # jitted, vmapped over runs: one compile each
    states = programs.init(grid.keys.init, grid.hparams(HParams.create()))
    states, metrics = programs.train(states, chunk_keys)           # per-run chunk keys [R]; metrics [R, chunk_size]
    returns, extras = programs.evaluate(states, eval_keys, tasks)  # tasks with a leading run axis [R, E]

Only what `TrainState` traces can vary inside one program: the seed and the `HParams` (inner_lr, outer_lr,
experience_weight). A static config field, the model or the env changes the program, so sweeping one of them means
one program per value. Any other field asked to vary is a one-line `ValueError` before anything compiles. The
module knows trainers only by their protocol (`trainers.Trainer`).

Run `i` draws its keys exactly as a single run with seed `grid.seeds[i]` does (`run_keys`), so each row of a sweep
equals the run made alone (tested, to float tolerance: vmap fuses the same maths in another order).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssm_jax.envs.base import TaskEnv
from ssm_jax.trainers.protocol import HParams, Trainer
from ssm_jax.types import PRNGKey

SWEEPABLE = tuple(field.name for field in dataclasses.fields(HParams))


class RunKeys(NamedTuple):
    """The independent keys of one run (leaves `[R]` under a sweep): initial params and statistics, MAML
    training, the pretrained baseline's training, held-out evaluation, the oracle."""

    init: PRNGKey
    train: PRNGKey
    pretrain: PRNGKey
    eval: PRNGKey
    oracle: PRNGKey


def run_keys(seed: int) -> RunKeys:
    """The key schedule of the run with `seed`: five keys split from `jax.random.key(seed)`."""
    return RunKeys(*jax.random.split(jax.random.key(seed), len(RunKeys._fields)))


@dataclasses.dataclass(frozen=True)
class Grid:
    """`R` runs: `seeds[i]` and `values[name][i]` for each swept hyperparameter `name`."""

    seeds: tuple[int, ...]
    values: dict[str, tuple[float, ...]]

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def keys(self) -> RunKeys:
        """Each run's `run_keys(seed)`, stacked: leaves `[R]`."""
        return jax.tree.map(lambda *keys: jnp.stack(keys), *(run_keys(seed) for seed in self.seeds))

    def hparams(self, base: HParams) -> HParams:
        """`base` with the swept fields replaced run by run: leaves `[R]`."""
        swept = {name: jnp.asarray(values, jnp.float32) for name, values in self.values.items()}
        full = lambda name: swept.get(name, jnp.full((self.size,), getattr(base, name), jnp.float32))
        return HParams(**{name: full(name) for name in SWEEPABLE})

    def runs(self) -> list[dict]:
        """One `{"seed": …, name: value, …}` per run, in run order."""
        return [
            {"seed": seed, **{name: values[i] for name, values in self.values.items()}}
            for i, seed in enumerate(self.seeds)
        ]


def make_grid(seeds: Iterable[int], **values: Iterable[float]) -> Grid:
    """Every combination of the swept values, each with every seed (values outer, seeds inner)."""
    seeds = tuple(int(seed) for seed in seeds)
    for name in values:
        if name not in SWEEPABLE:
            raise ValueError(
                f"{name!r} is not a traced hyperparameter: inside one program only {', '.join(SWEEPABLE)} vary (a "
                "static config field changes the compiled program, so sweep it with one program per value)"
            )
    values = {name: tuple(float(v) for v in vs) for name, vs in values.items()}
    if not seeds or any(not vs for vs in values.values()):
        raise ValueError("a sweep needs at least one seed and at least one value per swept field")
    combos = list(itertools.product(*values.values()))
    for combo in combos:  # HParams.create's range checks, one line each, before anything compiles
        HParams.create(**dict(zip(values, combo, strict=True)))
    columns = list(zip(*[combo for combo in combos for _ in seeds], strict=True)) if values else []
    return Grid(seeds=seeds * len(combos), values=dict(zip(values, columns, strict=True)))


class Programs(NamedTuple):
    """`trainer`'s functions vmapped over the run axis and jitted (one compile each, whatever `R`)."""

    init: Callable
    train: Callable
    evaluate: Callable
    oracle: Callable | None
    evaluate_online: Callable | None


def chunk_keys(train_key: PRNGKey, num_chunks: int) -> PRNGKey:
    """The keys of a run's training chunks, `[num_chunks]` (chunk `c` of a run uses the `c`-th); for a sweep's
    stacked train keys `[R]`, `[num_chunks, R]`, each run split exactly as it would be alone."""
    if train_key.ndim == 0:
        return jax.random.split(train_key, num_chunks)
    return jnp.swapaxes(jax.vmap(lambda key: jax.random.split(key, num_chunks))(train_key), 0, 1)


VALIDATION = 2
"""Folded into a run's evaluation key for its validation tasks (`held_out_tasks` folds in 1 for its evaluation keys
and draws the held-out tasks from the key itself): what a choice made before the held-out tasks is made on."""


def validation_keys(eval_keys: PRNGKey) -> PRNGKey:
    """Each run's validation key `[R]` from its `RunKeys.eval`: `held_out_tasks(env, validation_keys(...), n)` draws
    tasks that are never the held-out ones."""
    return jax.vmap(jax.random.fold_in, (0, None))(eval_keys, VALIDATION)


def held_out_tasks(env: TaskEnv, eval_keys: PRNGKey, num_tasks: int) -> tuple:
    """Each run's held-out tasks `[R, num_tasks]` and evaluation keys `[R]`, drawn from its `RunKeys.eval` exactly
    as the run draws them alone."""
    tasks = jax.vmap(lambda key: env.sample_tasks(key, num_tasks))(eval_keys)
    return tasks, jax.vmap(jax.random.fold_in, (0, None))(eval_keys, 1)


def make_programs(
    trainer: Trainer, chunk_size: int, compiler_options: dict | None = None, spmd_axis_name: str | None = None
) -> Programs:
    """`trainer`'s functions (`trainers.Trainer`: meta-RL or world model) vmapped over runs and jitted: `init(init_keys
    [R], hparams [R], adapt=True)` (`adapt=False`: the pretrained baseline's states), `train(states [R], chunk_keys
    [R])` (`chunk_size` meta-iterations per run, the state donated), `evaluate(states [R], keys [R], tasks [R, E],
    mode="standard") -> ([R, E, K + 1], extras)` (`hybrid`: each run's own `experience_weight`), `oracle(states [R],
    keys [R], tasks [R, E], iterations)` (its per-task results, `[R, E, ...]`) and `evaluate_online(states, keys,
    tasks [R, E], mode, window, every, switch_to=None [R, E], lr_scale=1.0) -> ([R, E], extras)`, each None where the
    trainer has none. `compiler_options` go to XLA with each program (`jax.jit(..., compiler_options=...)`).
    `spmd_axis_name` names the mesh axis the run axis is split over (`distributed.RUNS`), so that a trainer's own
    sharding constraints (its tasks over "tasks") keep the runs split too (`jax.vmap(..., spmd_axis_name=...)`)."""
    vmap = functools.partial(jax.vmap, spmd_axis_name=spmd_axis_name)

    def init(keys, hparams, adapt=True):
        return vmap(lambda key, hparams: trainer.init(key, hparams, adapt))(keys, hparams)

    def oracle(states, keys, tasks, iterations):
        return vmap(lambda state, key, tasks: trainer.oracle(state, key, tasks, iterations))(states, keys, tasks)

    train = vmap(lambda state, key: trainer.train(state, key, chunk_size))

    def evaluate(states, keys, tasks, mode="standard"):
        return vmap(lambda state, key, tasks: trainer.evaluate(state, key, tasks, mode))(states, keys, tasks)

    def evaluate_online(states, keys, tasks, mode, window, every, switch_to=None, lr_scale=1.0):
        one = lambda state, key, tasks, switch_to: trainer.evaluate_online(
            state, key, tasks, mode, window, every, switch_to, lr_scale
        )
        return vmap(one)(states, keys, tasks, switch_to)

    jit = functools.partial(jax.jit, compiler_options=compiler_options)
    online_static = ("mode", "window", "every", "lr_scale")
    return Programs(
        jit(init, static_argnames="adapt"),
        jit(train, donate_argnums=0),
        jit(evaluate, static_argnames="mode"),
        None if trainer.oracle is None else jit(oracle, static_argnames="iterations"),
        None if trainer.evaluate_online is None else jit(evaluate_online, static_argnames=online_static),
    )


def tile_runs(tree, times: int):
    """Leaves `[S, ...]` -> `[S * times, ...]`, each run's entry repeated `times` times (run-major)."""
    return jax.tree.map(lambda x: jnp.repeat(x, times, axis=0), tree)


def with_experience_weights(states, weights: tuple[float, ...]):
    """States `[S]` -> `[S * A]`: each run's state once per weight of `weights` (A), its
    `hparams.experience_weight` set to it, so one program evaluates every weight of every run."""
    tiled = tile_runs(states, len(weights))
    values = jnp.tile(jnp.asarray(weights, jnp.float32), jax.tree.leaves(states)[0].shape[0])
    return tiled.replace(hparams=tiled.hparams.replace(experience_weight=values))


def scale_inner_lr(states, scale: float):
    """States whose adaptation rate (`hparams.inner_lr`) is `scale` x their own."""
    return states.replace(hparams=states.hparams.replace(inner_lr=states.hparams.inner_lr * scale))


def at_best_step_size(
    evaluates: Mapping[Any, Callable],
    states,
    keys: PRNGKey,
    tasks,
    scales: tuple[float, ...],
    mode: str = "standard",
    higher_is_better: bool = True,
) -> tuple:
    """`states` at the test-time step size that serves them best, one choice for all runs: a multiple of their own
    adaptation rate from `scales` and a schedule from `evaluates` (schedule -> its `Programs.evaluate`, e.g. the
    decay after round 1 -> the program compiled with it), scored on `tasks` (validation tasks: `validation_keys`).
    `evaluate(states [R'], keys [R'], tasks [R', E], mode) -> ([R', E, K + 1], extras)` scores every scale of every
    run in one call (`R' = R x G`); a score is the mean over runs, tasks and rounds 1..K, a non-finite value counting
    as the worst. Returns the states at the chosen rate and the choice, `{"schedule": key of evaluates, "scale":
    multiple, "scores": [S, G]}`: the fair step size of a method that adapts by gradient steps."""
    num_runs, sign = jax.tree.leaves(states)[0].shape[0], 1.0 if higher_is_better else -1.0
    tiled = tile_runs(states, len(scales))
    factors = jnp.tile(jnp.asarray(scales, jnp.float32), num_runs)
    tiled = tiled.replace(hparams=tiled.hparams.replace(inner_lr=tiled.hparams.inner_lr * factors))
    tiled_keys, tiled_tasks = tile_runs(keys, len(scales)), tile_runs(tasks, len(scales))
    scores = []
    for evaluate in evaluates.values():
        curves = np.asarray(evaluate(tiled, tiled_keys, tiled_tasks, mode)[0])
        curves = curves.reshape(num_runs, len(scales), *curves.shape[1:])[..., 1:]  # [R, G, E, K]
        with np.errstate(invalid="ignore", over="ignore"):
            scores.append(np.where(np.isfinite(curves), sign * curves, -np.inf).mean(axis=(0, 2, 3)) * sign)
    scores = np.stack(scores)  # [S, G]
    schedule, scale = np.unravel_index(int(np.argmax(sign * scores)), scores.shape)
    choice = {"schedule": list(evaluates)[schedule], "scale": scales[scale], "scores": scores}
    return scale_inner_lr(states, scales[scale]), choice


def by_weight(values, num_weights: int):
    """`[S * A, E]` (run-major, as `with_experience_weights` tiles) -> `[A, S, E]` (numpy)."""
    values = np.asarray(values)
    return values.reshape(-1, num_weights, values.shape[-1]).swapaxes(0, 1)
