"""Env steps per second and compile time of every physics backend, at the flagship's batches, interleaved.

    python -m benchmarks.envs                                     # halfcheetah-vel, every backend, both batches
    python -m benchmarks.envs --backends mujoco spring --batches 80 --horizons 200
    python -m benchmarks.envs --families halfcheetah-vel navigation-2d --policy

For each batch N (default: the envs one meta-iteration of the flagship's CPU preset steps, then the paper preset's)
every program is one jitted `lax.scan` of `horizon` steps over N envs of one task with uniform random actions
(auto-reset included); `--policy` adds the same scan with an `ssm` policy choosing the actions
(`ssm_jax.rollout.rollout`). All programs of one batch are compiled, then timed in turn (one call of each per round,
median of `repeats`), so their ratios hold on a shared machine. brax families run on each of `backends`; the
others have one JAX backend. mjx hangs on a CPU above 512 envs (DESIGN.md §6): larger batches leave it out on CPU.
The paper batch runs a shorter horizon, so the slow backends finish in minutes; steps per second do not depend on
it. Writes `benchmarks/results/envs.json` and prints a table with each backend's ratio to spring.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from benchmarks.common import HarnessArgs, compile_and_time_interleaved, report
from ssm_jax import envs
from ssm_jax.config import CONFIGS
from ssm_jax.config.parsing import command_line
from ssm_jax.models import CategoricalHead, GaussianHead, ModelConfig, ValueHead, attach_heads, make_model
from ssm_jax.rollout import rollout


def iteration_envs(config_name: str) -> int:
    """The envs one meta-iteration of the named config steps: tasks x (inner steps + 1) rounds x trajectories."""
    trainer = CONFIGS[config_name].trainer
    return trainer.tasks_per_batch * (trainer.inner_steps + 1) * trainer.trajectories_per_task


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    families: tuple[str, ...] = ("halfcheetah-vel",)
    backends: tuple[str, ...] = envs.BACKENDS
    """Physics backends of the brax families."""
    batches: tuple[int, ...] = (iteration_envs("halfcheetah-vel"), iteration_envs("halfcheetah-vel-paper"))
    """Envs stepped at once: the flagship CPU preset's iteration, then the paper preset's."""
    horizons: tuple[int, ...] = (200, 25)
    """Steps per program, one per batch."""
    repeats: int = 3
    policy: bool = False
    """Also time each program with an `ssm` policy choosing the actions."""
    mjx_max_batch: int = 512
    """Largest batch mjx runs on a CPU."""


def random_rollout(key, env, task, num_envs: int, horizon: int):
    """`[horizon, num_envs]` rewards of `num_envs` envs of `task` under uniform random actions."""
    reset_key, steps_key = jax.random.split(key)
    _, states = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, num_envs), task)

    def body(states, key):
        action_key, env_key = jax.random.split(key)
        if env.discrete:
            action = jax.random.randint(action_key, (num_envs,), 0, env.action_size)
        else:
            action = jax.random.uniform(action_key, (num_envs, env.action_size), minval=-1.0, maxval=1.0)
        _, states, reward, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(env_key, num_envs), states, action, task
        )
        return states, reward

    return jax.lax.scan(body, states, jax.random.split(steps_key, horizon))[1]


def programs(env, num_envs: int, horizon: int, policy: bool) -> dict[str, tuple]:
    """`{actions: (fn, args)}`: the random-action scan, and with `policy` the `ssm` policy's rollout."""
    task = jax.tree.map(lambda x: x[0], env.sample_tasks(jax.random.key(0), 1))
    key = jax.random.key(num_envs)
    calls = {"random": (lambda k: random_rollout(k, env, task, num_envs, horizon), (key,))}
    if policy:
        config = ModelConfig(env.observation_size, 32, state_dim=32, hidden_dim=32)
        head = CategoricalHead(env.action_size) if env.discrete else GaussianHead(env.action_size)
        model = attach_heads(make_model("ssm", config), pi=head, value=ValueHead())
        params = model.init(jax.random.key(1), jnp.zeros((1, env.observation_size)))
        run = lambda k, p: rollout(k, env, task, model, p, num_envs, horizon).reward
        calls["ssm policy"] = (run, (key, params))
    return calls


def main(args: Args) -> list[dict]:
    if len(args.horizons) != len(args.batches):
        raise SystemExit(f"--horizons needs one value per batch, got {args.horizons} for {args.batches}")
    unknown = [b for b in args.backends if b not in envs.BACKENDS]
    if unknown:
        raise SystemExit(f"unknown backend(s) {unknown}; expected some of {', '.join(envs.BACKENDS)}")
    on_cpu = jax.default_backend() == "cpu"
    rows = []
    for num_envs, horizon in zip(args.batches, args.horizons, strict=True):
        calls = {}
        for family in args.families:
            backends = args.backends if family in envs.FAMILIES else ("jax",)
            for backend in backends:
                if backend == "mjx" and on_cpu and num_envs > args.mjx_max_batch:
                    print(f"mjx left out at N={num_envs} (hangs on a CPU above {args.mjx_max_batch} envs)")
                    continue
                options = {} if backend == "jax" else {"backend": backend}
                env = envs.make(family, horizon=horizon, **options)
                _ = env.observation_size  # builds the env (brax's import, the model) outside the timed compile
                for actions, call in programs(env, num_envs, horizon, args.policy).items():
                    calls[(family, backend, actions)] = call
        print(f"N={num_envs}, horizon {horizon}: compiling {len(calls)} programs, then timing them in turn", flush=True)
        measured = compile_and_time_interleaved(calls, args.repeats)
        batch_rows = [
            {"family": family, "backend": backend, "actions": actions, "N": num_envs, "horizon": horizon,
             "steps_per_s": num_envs * horizon / seconds, "compile_s": compile_s}
            for (family, backend, actions), (compile_s, seconds) in measured.items()
        ]  # fmt: skip
        for row in batch_rows:
            spring = next(
                (r for r in batch_rows if r["backend"] == "spring" and r["family"] == row["family"]
                 and r["actions"] == row["actions"]),
                None,
            )  # fmt: skip
            row["steps_vs_spring"] = row["steps_per_s"] / spring["steps_per_s"] if spring else None
            row["compile_vs_spring"] = row["compile_s"] / spring["compile_s"] if spring else None
        rows += batch_rows
    columns = ["family", "backend", "actions", "N", "horizon", "steps_per_s", "compile_s", "steps_vs_spring",
               "compile_vs_spring"]  # fmt: skip
    report("envs", rows, columns, note="steps_vs_spring and compile_vs_spring: ratios to spring in the same batch")
    return rows


if __name__ == "__main__":
    main(command_line(Args))
