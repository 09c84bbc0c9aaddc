"""Env steps per second for every task family, with random actions and with an `ssm` policy in the loop.

    python -m benchmarks.envs [--families halfcheetah-vel navigation-2d] [--batches 1 128 1024] [--horizon 100]

For each family and batch size N: one jitted `lax.scan` of `horizon` steps over N envs of one task (auto-reset
included), timed after compile (median of `repeats`). "random" samples uniform actions; "policy" runs
`ssm_jax.rollout.rollout` with an `ssm` core + Gaussian/categorical head and value head (policy forward, action
sampling and log-prob included). Overhead = policy time / random time − 1. Brax families use `--backend`
(default spring, the fast one on CPU). Writes `benchmarks/results/envs.json` and prints a table.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import tyro

from benchmarks.common import compile_and_time, report
from ssm_jax import envs
from ssm_jax.models import CategoricalHead, GaussianHead, ModelConfig, ValueHead, attach_heads, make_model
from ssm_jax.rollout import rollout


@dataclasses.dataclass(frozen=True)
class Args:
    families: tuple[str, ...] = envs.ENV_NAMES
    batches: tuple[int, ...] = (1, 128, 1024)
    horizon: int = 100
    backend: str = "spring"
    repeats: int = 3
    state_dim: int = 32
    hidden_dim: int = 32


def random_rollout(key, env, task, num_envs: int, horizon: int):
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


def main(args: Args) -> list[dict]:
    rows = []
    for family in args.families:
        options = {"backend": args.backend} if family in envs.FAMILIES else {}
        env = envs.make(family, horizon=args.horizon, **options)
        task = jax.tree.map(lambda x: x[0], env.sample_tasks(jax.random.key(0), 1))
        config = ModelConfig(env.observation_size, 32, state_dim=args.state_dim, hidden_dim=args.hidden_dim)
        head = CategoricalHead(env.action_size) if env.discrete else GaussianHead(env.action_size)
        policy = attach_heads(make_model("ssm", config), pi=head, value=ValueHead())
        params = policy.init(jax.random.key(1), jnp.zeros((1, env.observation_size)))
        for n in args.batches:
            key = jax.random.key(n)
            compile_random, t_random = compile_and_time(
                lambda k, n=n: random_rollout(k, env, task, n, args.horizon), key, repeats=args.repeats
            )
            compile_policy, t_policy = compile_and_time(
                lambda k, p, n=n: rollout(k, env, task, policy, p, n, args.horizon).reward,
                key,
                params,
                repeats=args.repeats,
            )
            steps = n * args.horizon
            rows.append(
                {
                    "family": family,
                    "backend": options.get("backend", "jax"),
                    "N": n,
                    "random_steps_per_s": steps / t_random,
                    "policy_steps_per_s": steps / t_policy,
                    "policy_overhead": t_policy / t_random - 1.0,
                    "compile_random_s": compile_random,
                    "compile_policy_s": compile_policy,
                }
            )
            print(f"{family} N={n}: random {steps / t_random:.3g}/s, ssm policy {steps / t_policy:.3g}/s", flush=True)
    report(
        "envs",
        rows,
        [
            "family",
            "backend",
            "N",
            "random_steps_per_s",
            "policy_steps_per_s",
            "policy_overhead",
            "compile_random_s",
            "compile_policy_s",
        ],
    )
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
