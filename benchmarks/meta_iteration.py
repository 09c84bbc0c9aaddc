"""One meta-iteration of the flagship, phase by phase, against its own env steps alone.

    python -m benchmarks.meta_iteration                        # the CPU preset's batch, then the paper batch
    python -m benchmarks.meta_iteration --presets cpu --repeats 5
    python -m benchmarks.meta_iteration --backend spring       # the physics the presets ran before mujoco
    python -m benchmarks.meta_iteration --backend mjx          # the paper preset's backend (a GPU's)

For each preset of the flagship (`halfcheetah-vel-<preset>` in `ssm_jax.config.CONFIGS`) (its batch: tasks x
trajectories x horizon, inner steps, outer epochs or TRPO), every phase of MAML's meta-iteration is jitted on its own
and timed after compile (median of `repeats`): sampling before the inner step (K support rounds), the baseline fit
(`prepare_batch`: returns, linear feature baseline, advantages; K + 1 rounds), the inner step (K), sampling after it
(the query round), the outer epochs or TRPO step, the buffer write and the metrics. Beside them: the whole iteration as
the trainer runs it (`Trainer.train` for one iteration), the pretrained baseline's iteration, and the same number of env
steps with uniform random actions and no policy ("env alone"), these three timed in turn (one call of each per round) so
that their ratios hold on a shared machine. Phases are timed apart, so their sum is not exactly the whole. Writes
`benchmarks/results/meta_iteration_<preset>_<backend>.json` and prints a table per preset."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from benchmarks.common import HarnessArgs, compile_and_time, report, time_interleaved
from benchmarks.envs import random_rollout
from ssm_jax.buffer import experience_windows, make_experience_buffer
from ssm_jax.config import CONFIGS, build
from ssm_jax.config.parsing import command_line
from ssm_jax.envs.normalize import normalize
from ssm_jax.meta.policy_losses import mean_episode_return, prepare_batch
from ssm_jax.trainers import HParams

PRESETS = {preset: CONFIGS["halfcheetah-vel" if preset == "cpu" else f"halfcheetah-vel-{preset}"] for preset in
           ("cpu", "long", "smoke", "paper")}  # fmt: skip
"""The flagship's presets by their `experiments.halfcheetah_vel --preset` names."""


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    presets: tuple[str, ...] = ("cpu", "paper")
    """Presets of the flagship (`halfcheetah-vel`, `halfcheetah-vel-<preset>`) whose batch is measured."""
    backend: str | None = "mujoco"
    """Physics backend for every preset (None: each preset's own; the paper's is mjx, which hangs on a CPU at its
    batch)."""
    repeats: tuple[int, ...] = (3, 1)
    """Timed calls per phase after the compile, one value per preset."""


def measure(preset: str, backend: str | None, repeats: int) -> list[dict]:
    """The phase rows of one preset: `{"preset", "phase", "seconds", "share"}`; "share" is of the whole
    iteration."""
    args = PRESETS[preset] if backend is None else dataclasses.replace(PRESETS[preset], backend=backend)
    env, trainer = build(args)
    meta_rl, config = trainer.parts.meta_rl, trainer.config
    rounds, num_tasks = config.inner_steps + 1, config.tasks_per_batch
    hparams = HParams.create(args.inner_lr, args.outer_lr, args.experience_weight)
    state = trainer.init(jax.random.key(0), hparams)
    pretrained = trainer.init(jax.random.key(0), hparams, adapt=False)
    tasks = env.sample_tasks(jax.random.key(1), num_tasks)
    task_keys = jax.random.split(jax.random.key(2), num_tasks)
    stats, params, inner_lr = state.obs_stats, state.meta.params, state.meta.inner_lr
    time_it = lambda fn, *inputs: compile_and_time(fn, *inputs, repeats=repeats)[1]

    sample = jax.jit(jax.vmap(meta_rl.sample_trajectories, in_axes=(0, 0, 0, None)))
    prepare = jax.jit(jax.vmap(lambda traj: prepare_batch(traj, trainer.parts.rl_config, stats)))
    inner_step = jax.jit(jax.vmap(lambda p, batch: meta_rl.maml.inner_step(p, batch, inner_lr)[0]))
    per_task = lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x, (num_tasks, *x.shape)), tree)
    support_traj = sample(task_keys, tasks, per_task(params), stats)
    support = prepare(support_traj)
    adapted = inner_step(per_task(params), support)
    query_traj = sample(task_keys, tasks, adapted, stats)
    query = prepare(query_traj)
    # The outer step reads one support batch per inner step, [E, K, ...]; the same batch K times costs the same.
    supports = jax.tree.map(lambda x: jnp.stack([x] * config.inner_steps, axis=1), support)
    buf = make_experience_buffer(config.buffer_size)

    def buffer_write(buffer, traj):
        items, valid = experience_windows(normalize(stats, traj.obs), traj.action, traj.done, config.window)
        return buf.add(buffer, items, valid)

    def metrics(adapted, support, trajs):
        returns = jax.vmap(mean_episode_return)(trajs)
        return jnp.mean(jax.vmap(meta_rl.inner_step_kl)(adapted, support)), jnp.mean(returns)

    def env_alone(key):  # the iteration's env steps: E tasks x (K + 1) rounds x N trajectories x horizon
        keys = jax.random.split(key, num_tasks)
        n = rounds * config.trajectories_per_task
        return jax.vmap(lambda k, task: random_rollout(k, env, task, n, config.horizon))(keys, tasks)

    seconds = {
        "sampling before the inner step": config.inner_steps
        * time_it(sample, task_keys, tasks, per_task(params), stats),
        "baseline fit": rounds * time_it(prepare, support_traj),
        "inner step": config.inner_steps * time_it(inner_step, per_task(params), support),
        "sampling after the inner step": time_it(sample, task_keys, tasks, adapted, stats),
        f"outer step ({config.outer_optimizer})": time_it(meta_rl.outer_update, state.meta, supports, query),
        "buffer write": time_it(buffer_write, state.buffer, query_traj),
        "metrics": time_it(metrics, adapted, support, query_traj),
    }
    seconds["phases, summed"] = sum(seconds.values())
    train_one = lambda s, key: trainer.train(s, key, 1)
    whole_programs = {
        "MAML iteration (Trainer.train)": (train_one, (state, jax.random.key(3))),
        "pretrained iteration (Trainer.train)": (train_one, (pretrained, jax.random.key(3))),
        "env steps alone (random actions)": (env_alone, (jax.random.key(4),)),
    }
    seconds.update(time_interleaved(whole_programs, repeats))  # taken in turn: their ratios hold on a busy box
    whole = seconds["MAML iteration (Trainer.train)"]
    env_steps = num_tasks * rounds * config.trajectories_per_task * config.horizon
    rows = [
        {"preset": preset, "backend": args.backend, "env_steps": env_steps, "phase": phase, "seconds": s,
         "share": s / whole}
        for phase, s in seconds.items()
    ]  # fmt: skip
    return rows


def main(args: Args) -> list[dict]:
    if len(args.repeats) != len(args.presets) or min(args.repeats) < 1:
        raise SystemExit(f"--repeats needs one value >= 1 per preset, got {args.repeats} for {args.presets}")
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        raise SystemExit(f"unknown preset(s) {unknown}; expected some of {', '.join(PRESETS)}")
    rows = []
    for preset, repeats in zip(args.presets, args.repeats, strict=True):
        preset_rows = measure(preset, args.backend, repeats)
        name = f"meta_iteration_{preset}_{preset_rows[0]['backend']}"
        report(name, preset_rows, ["preset", "backend", "phase", "seconds", "share"])
        rows += preset_rows
        by_phase = {r["phase"]: r["seconds"] for r in preset_rows}
        env_alone = by_phase["env steps alone (random actions)"]
        maml = by_phase["MAML iteration (Trainer.train)"]
        pretrained = by_phase["pretrained iteration (Trainer.train)"]
        sampling = sum(s for phase, s in by_phase.items() if phase.startswith("sampling"))
        share = 1 - sampling / by_phase["phases, summed"]
        print(
            f"{preset}: {preset_rows[0]['env_steps']:,} env steps; MAML iteration / env alone {maml / env_alone:.2f} "
            f"(non-env share {1 - env_alone / maml:.0%}); pretrained / MAML {pretrained / maml:.2f}; non-sampling "
            f"share of the phases {share:.0%}",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main(command_line(Args))
