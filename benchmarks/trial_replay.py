"""Trial replay speed per model: what one PPO minibatch of RL² costs, through each model's own `apply` (S5's
associative scan, the transformer's masked attention, the recurrent cores' `lax.scan`) against a step-by-step
`lax.scan` of the same model's `step`. This is the measurement popjaxrl's "S5 runs faster" rests on.

    python -m benchmarks.trial_replay [--lengths 100 200 500 1000] [--batch 32] [--repeats 5]

For each trial length T (M episodes x horizon), a minibatch of `batch` recorded trials of the in-context policy on
navigation-2d (`ssm_jax.trainers.in_context`: inputs of observation, previous action and reward, episode start) is
replayed: forward (the value pass) and forward + gradient of the PPO loss (`trainer.parts.loss`). All programs of one T
are timed interleaved (`benchmarks.common.time_interleaved`), so their ratios hold on a shared machine. Writes
`benchmarks/results/trial_replay.json` and prints a table (milliseconds).
"""

from __future__ import annotations

import dataclasses

import jax

from benchmarks.common import HarnessArgs, report, time_interleaved
from ssm_jax import envs
from ssm_jax.config.parsing import command_line
from ssm_jax.meta.policy_losses import policy_outputs
from ssm_jax.models import MODEL_NAMES, NetworkConfig
from ssm_jax.trainers import HParams
from ssm_jax.trainers.in_context import InContextConfig, make_in_context_trainer

PROGRAMS = ("forward", "forward_grad", "stepwise_forward_grad")


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    lengths: tuple[int, ...] = (100, 200, 500, 1000)
    """Trial lengths T = episodes x horizon (horizon 100: 1, 2, 5 and 10 episodes)."""
    batch: int = 32
    """Trials per minibatch."""
    models: tuple[str, ...] = tuple(name for name in MODEL_NAMES if name != "transformer")
    """The transformer is left out by default: its step-by-step gradient keeps the KV cache of every step (43 GB at
    T = 1000, batch 32); `--models transformer` with short lengths times it."""
    horizon: int = 100
    state_dim: int = 16
    hidden_dim: int = 64
    repeats: int = 5


def _programs(model: str, args: Args, length: int) -> dict:
    """The replay programs of `model` on `args.batch` trials of `length` steps: `{name: (fn, args)}`."""
    env = envs.make("navigation-2d", horizon=args.horizon)
    config = InContextConfig(
        tasks_per_batch=1, trials_per_task=args.batch, episodes_per_trial=length // args.horizon,
        horizon=args.horizon, minibatches=1, normalize_observations=False,
    )  # fmt: skip
    trainer = make_in_context_trainer(env, model, NetworkConfig(args.state_dim, args.hidden_dim), config)
    key = jax.random.key(length)
    state = trainer.init(key, HParams.create())
    task = jax.tree.map(lambda x: x[0], env.sample_tasks(key, 1))
    traj = jax.jit(lambda k: trainer.parts.sample_trials(k, task, state.params, None, args.batch))(key)
    batch = trainer.parts.prepare(state.params, traj, state.obs_stats)
    policy = trainer.parts.policy

    def stepwise_loss(params, batch):
        """The PPO loss with the model replayed one `step` at a time (what a model without a parallel path does)."""

        def run(carry, xs, resets):
            step = lambda c, inputs: policy.step(params, c, *inputs)
            return jax.lax.scan(step, carry, (xs, resets))[1]

        out = jax.vmap(run, in_axes=(0, 1, 1), out_axes=1)(
            batch.policy.initial_carry, batch.policy.obs, batch.policy.resets
        )
        return trainer.parts.loss_of_outputs(out, batch)[0]

    return {
        "forward": (lambda p, b: policy_outputs(policy, p, b.policy)["value"], (state.params, batch)),
        "forward_grad": (jax.grad(lambda p, b: trainer.parts.loss(p, b)[0]), (state.params, batch)),
        "stepwise_forward_grad": (jax.grad(stepwise_loss), (state.params, batch)),
    }


def main(args: Args) -> list[dict]:
    rows = []
    for length in args.lengths:
        if length % args.horizon:
            raise ValueError(f"every length must be a multiple of the horizon {args.horizon}, got {length}")
        calls = {}
        for model in args.models:
            for name, call in _programs(model, args, length).items():
                calls[(model, name)] = call
        seconds = time_interleaved(calls, repeats=args.repeats)
        gru = seconds.get(("gru", "forward_grad"))
        for model in args.models:
            row = {"model": model, "T": length, "batch": args.batch}
            row.update({f"{name}_ms": seconds[(model, name)] * 1e3 for name in PROGRAMS})
            row["parallel_speedup"] = seconds[(model, "stepwise_forward_grad")] / seconds[(model, "forward_grad")]
            row["vs_gru"] = gru / seconds[(model, "forward_grad")] if gru else float("nan")
            rows.append(row)
    columns = ["model", "T", "forward_ms", "forward_grad_ms", "stepwise_forward_grad_ms", "parallel_speedup", "vs_gru"]
    report("trial_replay", rows, columns, note=f"{jax.devices()[0].device_kind}, batch {args.batch}")
    return rows


if __name__ == "__main__":
    main(command_line(Args))
