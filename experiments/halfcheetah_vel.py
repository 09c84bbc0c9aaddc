"""Flagship: MAML-RL on HalfCheetah-Vel (brax) with standard and experience-augmented hybrid test-time adaptation.

    python -m experiments.halfcheetah_vel                       # cpu preset: spring backend, <= 10 min on 2 cores
    python -m experiments.halfcheetah_vel --preset smoke        # under a minute, for tests
    python -m experiments.halfcheetah_vel --preset paper        # MAML-RL scale, generalized backend, for a GPU
    python -m experiments.halfcheetah_vel --model lstm --adaptation-mode hybrid --experience-weight 0.1
    python -m experiments.halfcheetah_vel --num-seeds 3         # seeds 0, 1, 2; CIs over held-out tasks and seeds

Meta-training (MAML-RL on returns): per task, trajectories from the pre-update policy, `inner_steps` policy-gradient
steps (linear feature baseline, normalised advantages), trajectories from the adapted policy, and `outer_epochs`
Adam steps on their PPO-clipped surrogate, differentiated through the inner update. The ExperienceBuffer is filled
during meta-training only, with (observation window -> action taken) pairs from the adapted policy; it is frozen
before evaluation (the seeds' contamination rule).

Evaluation on held-out goal velocities (a fixed set drawn from a separate key): mean episode return after 0..3
adaptation rounds (each round samples trajectories with the current policy, then takes one policy-gradient step
with the inner learning rate) for MAML + standard, MAML + hybrid (+ `experience_weight` x behaviour cloning on
replayed windows), a pretrained baseline (the same network trained with PPO on all tasks and no adaptation: MAML's
compiled program run with inner lr 0, on the same env budget), random initialisation and, with `--oracle`, a
policy trained on each evaluation goal (`train_per_task`; its return at the last training iteration). All methods
see the same evaluation keys, so the hybrid-minus-standard difference is paired. Also the velocity-tracking error
|v_x - v_goal|.

With `--num-seeds N` the whole pipeline runs for seeds `seed … seed + N − 1` (each draws its own training and
evaluation goals) and the tables and plots pool held-out tasks over seeds; every seed reuses the same compiled
programs, so extra seeds cost run time only.

Writes under `runs/halfcheetah_vel/<timestamp>/`: config.json, metrics.jsonl, results.json, results.md,
learning_curve.png, adaptation_curve.png, and an orbax checkpoint (`--resume <run dir>` continues training;
one seed only; with several seeds each writes `checkpoint_seed<k>/`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

from experiments.common import (
    JsonlLogger,
    make_run_dir,
    markdown_table,
    mean_ci,
    parse_args,
    train_in_chunks,
    write_config,
    write_json,
)
from ssm_jax import checkpoint, envs
from ssm_jax.adapt import AdapterConfig
from ssm_jax.adapt.rl import make_rl_adaptation
from ssm_jax.buffer import make_experience_buffer
from ssm_jax.meta import MAMLConfig
from ssm_jax.meta.rl import RLConfig, experience_windows, make_maml_rl, train_per_task
from ssm_jax.models import MODEL_NAMES, GaussianHead, ModelConfig, attach_heads, make_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ADAPTATION_MODES = ("both", "standard", "hybrid")
# Finn et al. 2017 (MuJoCo HalfCheetah, horizon 200, goals U[0, 2]), return after 0/1/2/3 gradient steps.
REFERENCE = {
    "MAML (Finn et al. 2017, MuJoCo)": (-129.5, -78.6, -66.6, -60.8),
    "pretrained (Finn et al. 2017, MuJoCo)": (-158.0, -135.4, -128.5, -133.6),
    "random init (Finn et al. 2017, MuJoCo)": (-254.8, -254.3, -246.8, -230.8),
    "oracle (Finn et al. 2017, MuJoCo)": (-54.5,),
}


@dataclasses.dataclass(frozen=True)
class NetworkArgs:
    state_dim: int = 32
    hidden_dim: int = 64
    num_layers: int = 2
    init_log_std: float = 0.0


@dataclasses.dataclass(frozen=True)
class Args:
    preset: str = "cpu"
    env: str = "halfcheetah-vel"
    backend: str = "spring"
    goals: str = "uniform"
    horizon: int = 200
    model: str = "ssm"
    network: NetworkArgs = NetworkArgs()
    iterations: int = 60
    chunk_size: int = 5
    tasks_per_batch: int = 5
    trajectories_per_task: int = 8
    inner_lr: float = 0.1
    inner_steps: int = 1
    inner_grad_clip: float | None = 1.0
    first_order: bool = False
    inner_objective: str = "pg"
    outer_lr: float = 3e-3
    outer_epochs: int = 3
    adaptation_mode: str = "both"
    buffer_size: int = 10_000
    experience_batch_size: int = 32
    experience_weight: float = 0.1
    window: int = 16
    adapt_steps: int = 3
    eval_tasks: int = 16
    pretrained: bool = True
    random_baseline: bool = True
    oracle: bool = False
    oracle_iterations: int = 30
    checkpoint_every: int = 20
    resume: str | None = None
    seed: int = 0
    num_seeds: int = 1
    out_dir: str = "runs/halfcheetah_vel"
    plots: bool = True

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; expected one of {', '.join(MODEL_NAMES)}")
        if self.adaptation_mode not in ADAPTATION_MODES:
            raise ValueError(
                f"adaptation_mode must be one of {', '.join(ADAPTATION_MODES)}, got {self.adaptation_mode!r}"
            )
        if self.env not in ("halfcheetah-vel", "ant-vel", "walker2d-vel"):
            raise ValueError(
                f"env must be a velocity family (halfcheetah-vel, ant-vel, walker2d-vel), got {self.env!r}"
            )
        if self.iterations < 1 or self.iterations % self.chunk_size:
            raise ValueError(
                f"iterations={self.iterations} must be a positive multiple of chunk_size={self.chunk_size}"
            )
        if self.checkpoint_every % self.chunk_size:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} must be a multiple of chunk_size")
        if self.window > self.horizon:
            raise ValueError(f"window={self.window} must not exceed horizon={self.horizon}")
        if min(self.tasks_per_batch, self.trajectories_per_task, self.eval_tasks, self.adapt_steps) < 1:
            raise ValueError("tasks_per_batch, trajectories_per_task, eval_tasks and adapt_steps must be >= 1")
        if self.experience_weight < 0:
            raise ValueError(f"experience_weight must be >= 0, got {self.experience_weight}")
        if self.num_seeds < 1 or (self.resume and self.num_seeds != 1):
            raise ValueError(f"num_seeds must be >= 1, and 1 with --resume; got {self.num_seeds}")


PRESETS = {
    "cpu": Args(),
    "smoke": Args(
        preset="smoke",
        horizon=20,
        network=NetworkArgs(state_dim=8, hidden_dim=16),
        iterations=2,
        chunk_size=1,
        tasks_per_batch=2,
        trajectories_per_task=2,
        outer_epochs=1,
        buffer_size=64,
        experience_batch_size=4,
        window=5,
        eval_tasks=2,
        oracle_iterations=2,
        checkpoint_every=2,
        plots=True,
    ),
    "paper": Args(
        preset="paper",
        backend="generalized",
        iterations=500,
        chunk_size=10,
        tasks_per_batch=40,
        trajectories_per_task=20,
        outer_lr=1e-3,
        outer_epochs=5,
        buffer_size=100_000,
        eval_tasks=40,
        oracle=True,
        oracle_iterations=200,
        checkpoint_every=50,
    ),
}


def _build(args: Args):
    env = envs.make(
        args.env,
        backend=args.backend,
        horizon=args.horizon,
        **({"goals": args.goals} if args.env == "halfcheetah-vel" else {}),
    )
    net = args.network
    core = make_model(
        args.model,
        ModelConfig(
            env.observation_size,
            net.hidden_dim,
            state_dim=net.state_dim,
            hidden_dim=net.hidden_dim,
            num_layers=net.num_layers,
            window=max(args.window, 16),
        ),
    )
    policy = attach_heads(core, pi=GaussianHead(env.action_size, init_log_std=net.init_log_std))
    rl_config = RLConfig(inner_objective=args.inner_objective)
    meta_rl = make_maml_rl(
        env,
        policy,
        MAMLConfig(
            inner_lr=args.inner_lr,
            num_inner_steps=args.inner_steps,
            first_order=args.first_order,
            inner_grad_clip=args.inner_grad_clip,
        ),
        rl_config,
        num_envs=args.trajectories_per_task,
        horizon=args.horizon,
        outer_epochs=args.outer_epochs,
    )
    return env, policy, rl_config, meta_rl


def _tracking_error(ctrl_cost: float):
    """|v_x - v_goal| per step, recovered from the reward -|v - g| - ctrl_cost * sum(clip(a)^2)."""

    def metric(traj):
        control = ctrl_cost * jnp.sum(jnp.clip(traj.action, -1.0, 1.0) ** 2, axis=-1)
        return {"tracking_error": jnp.mean(-traj.reward - control)}

    return metric


def _make_chunk(args, env, meta_rl):
    """The jitted training chunk: `args.chunk_size` meta-updates, each writing its query windows to the buffer."""
    buf = make_experience_buffer(args.buffer_size)

    def chunk(carry, key):
        def body(carry, k):
            state, buffer_state = carry
            task_key, update_key = jax.random.split(k)
            state, metrics, query = meta_rl.meta_update(
                state, update_key, env.sample_tasks(task_key, args.tasks_per_batch)
            )
            items, valid = jax.vmap(lambda q: experience_windows(q, args.window))(query)
            flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), items)
            return (state, buf.add(buffer_state, flat, valid.reshape(-1))), metrics

        return jax.lax.scan(body, carry, jax.random.split(key, args.chunk_size))

    return jax.jit(chunk, donate_argnums=0)


def _train(args, chunk, carry, key, logger, phase, seed, checkpoint_dir=None, start=0):
    """Runs `chunk` for `args.iterations` from `start`, logging each chunk and checkpointing into `checkpoint_dir`."""
    started = time.perf_counter()

    def on_chunk(iteration, carry, metrics):
        elapsed = time.perf_counter() - started
        record = {"phase": phase, "seed": seed, "iteration": iteration, "elapsed_s": elapsed}
        logger.log({**record, **jax.tree.map(np.mean, metrics)})
        if checkpoint_dir is not None and iteration % args.checkpoint_every == 0:
            state, buffer_state = carry
            checkpoint.save(checkpoint_dir, {"state": state, "buffer": buffer_state, "iteration": iteration}, args)

    return train_in_chunks(
        chunk,
        carry,
        key,
        args.iterations,
        args.chunk_size,
        phase if args.num_seeds == 1 else f"{phase} (seed {seed})",
        on_chunk=on_chunk,
        postfix=lambda m: {"return": float(np.mean(m["post_adaptation_return"]))},
        start=start,
    )


def _plot_learning(path: Path, records: list[dict]):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for phase, key, label in (
        ("maml", "pre_adaptation_return", "MAML, before adaptation"),
        ("maml", "post_adaptation_return", "MAML, after 1 step"),
        ("pretrained", "post_adaptation_return", "pretrained (PPO on all tasks)"),
    ):
        by_iteration = {}
        for r in records:
            if r["phase"] == phase and key in r:
                by_iteration.setdefault(r["iteration"], []).append(r[key])
        if by_iteration:
            iterations = sorted(by_iteration)
            ax.plot(iterations, [np.mean(by_iteration[i]) for i in iterations], marker="o", ms=3, label=label)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean episode return (training tasks, mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_adaptation(path: Path, curves: dict, oracle: np.ndarray | None):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, returns in curves.items():
        mean, half = mean_ci(returns)
        steps = np.arange(mean.size)
        ax.errorbar(steps, mean, yerr=half, marker="o", capsize=3, label=name)
    if oracle is not None:
        mean, half = mean_ci(oracle)
        ax.axhline(mean, color="k", ls="--", label=f"oracle ({mean:.1f} ± {half:.1f})")
    ax.set_xticks(steps)
    ax.set_xlabel("adaptation rounds on the held-out task")
    ax.set_ylabel("episode return\n(mean, 95% CI over tasks and seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _Programs(NamedTuple):
    """The jitted functions and the outer optimizer that every seed shares."""

    chunk: Callable
    evaluate: Callable
    oracle: Callable
    optimizer: optax.GradientTransformation


def main(args: Args) -> dict:
    start_time = time.perf_counter()
    if args.resume and not (Path(args.resume) / "checkpoint").is_dir():
        raise FileNotFoundError(f"--resume {args.resume}: no checkpoint/ directory in that run directory")
    run_dir = Path(args.resume) if args.resume else make_run_dir(args.out_dir)
    write_config(run_dir, args)
    logger = JsonlLogger(run_dir / "metrics.jsonl")
    env, policy, rl_config, meta_rl = _build(args)
    adapter_config = AdapterConfig(
        learning_rate=args.inner_lr,
        num_steps=1,
        optimizer="sgd",
        grad_clip_norm=args.inner_grad_clip,  # the same clipped SGD step as the meta-trained inner loop
        experience_weight=args.experience_weight,
        experience_batch_size=args.experience_batch_size,
    )
    curve = make_rl_adaptation(meta_rl, adapter_config, rl_config, args.adapt_steps, _tracking_error(env.ctrl_cost))
    # Built once, so every seed (and the pretrained phase) reuses the same compiled programs.
    programs = _Programs(
        chunk=_make_chunk(args, env, meta_rl),
        evaluate=jax.jit(jax.vmap(curve, in_axes=(0, 0, None, None, None))),
        oracle=jax.jit(train_per_task, static_argnums=(0, 2, 5)),
        optimizer=optax.adam(args.outer_lr),  # one object: a new one is a new static field, hence a recompile
    )
    per_seed, train_seconds = [], 0.0
    for seed in range(args.seed, args.seed + args.num_seeds):
        curves, tracking, oracle, seconds = _run_seed(args, seed, env, policy, meta_rl, programs, logger, run_dir)
        per_seed.append((curves, tracking, oracle))
        train_seconds += seconds
    pooled = lambda i: {name: np.concatenate([s[i][name] for s in per_seed]) for name in per_seed[0][i]}
    curves, tracking = pooled(0), pooled(1)
    oracle = None if not args.oracle else np.concatenate([s[2] for s in per_seed])

    results = _summarise(args, run_dir, curves, tracking, oracle, train_seconds, time.perf_counter() - start_time)
    if args.plots:
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        _plot_learning(run_dir / "learning_curve.png", records)
        _plot_adaptation(run_dir / "adaptation_curve.png", curves, oracle)
    return results


def _run_seed(args, seed, env, policy, meta_rl, programs, logger, run_dir):
    """Meta-training, baselines and held-out evaluation for one seed.

    Returns `(curves, tracking, oracle, meta_train_seconds)`: `curves[label]` and `tracking[label]` are
    `[eval_tasks, adapt_steps + 1]`, `oracle` is `[eval_tasks]` or None.
    """
    started = time.perf_counter()
    init_key, train_key, pretrain_key, eval_key, oracle_key = jax.random.split(jax.random.key(seed), 5)
    params0 = policy.init(init_key, jnp.zeros((1, env.observation_size)))
    buf = make_experience_buffer(args.buffer_size)
    example = (jnp.zeros((args.window, env.observation_size)), jnp.zeros((args.window, env.action_size)))
    fresh = lambda: jax.tree.map(jnp.copy, params0)  # training donates its state; params0 stays for the baselines
    optimizer, chunk = programs.optimizer, programs.chunk
    state = meta_rl.init(fresh(), optimizer)
    buffer_state = buf.init(example)
    checkpoint_dir = run_dir / ("checkpoint" if args.num_seeds == 1 else f"checkpoint_seed{seed}")
    start = 0
    if args.resume:
        target = {"state": state, "buffer": buffer_state, "iteration": 0}
        restored, _ = checkpoint.restore(checkpoint_dir, target=target)
        state, buffer_state, start = restored["state"], restored["buffer"], int(restored["iteration"])
        print(f"resumed {run_dir} at iteration {start}")

    carry = (state, buffer_state)
    state, buffer_state = _train(args, chunk, carry, train_key, logger, "maml", seed, checkpoint_dir, start)
    train_seconds = time.perf_counter() - started
    methods = {"MAML": state.params}
    if args.pretrained:
        # The same program with inner lr 0: the inner step is the identity, so the outer PPO steps train one policy
        # on all tasks with no adaptation, on the same env budget as MAML (its support rollouts go unused).
        pre_state = meta_rl.init(fresh(), optimizer)
        pre_state = pre_state.replace(inner_lr=jax.tree.map(jnp.zeros_like, pre_state.inner_lr))
        pre_state, _ = _train(args, chunk, (pre_state, buf.init(example)), pretrain_key, logger, "pretrained", seed)
        methods["pretrained"] = pre_state.params
    if args.random_baseline:
        methods["random init"] = params0

    eval_tasks = env.sample_tasks(eval_key, args.eval_tasks)
    eval_keys = jax.random.split(jax.random.fold_in(eval_key, 1), args.eval_tasks)
    frozen = buf.freeze(buffer_state)
    curves, tracking = {}, {}
    for name, params in methods.items():
        modes = {"standard": 0.0, "hybrid": args.experience_weight}
        if name != "MAML" or args.adaptation_mode != "both":
            chosen = "standard" if name != "MAML" else args.adaptation_mode
            modes = {chosen: modes[chosen]}
        for mode, weight in modes.items():
            label = f"{name} + {mode}" if name == "MAML" else name
            returns, extra = programs.evaluate(eval_keys, eval_tasks, params, frozen, weight)
            curves[label] = np.asarray(returns)
            tracking[label] = np.asarray(extra["tracking_error"])

    oracle = None
    if args.oracle:
        oracle_returns = programs.oracle(meta_rl, params0, optimizer, oracle_key, eval_tasks, args.oracle_iterations)
        oracle = np.asarray(oracle_returns[:, -1])
    return curves, tracking, oracle, train_seconds


def _fmt(values: np.ndarray) -> list[str]:
    mean, half = mean_ci(values)
    return [f"{m:.1f} ± {h:.1f}" for m, h in zip(np.atleast_1d(mean), np.atleast_1d(half), strict=True)]


def _summarise(args, run_dir, curves, tracking, oracle, train_seconds, total_seconds) -> dict:
    steps = list(range(args.adapt_steps + 1))
    rows = [[name, *_fmt(returns), _fmt(tracking[name][:, -1])[0]] for name, returns in curves.items()]
    if oracle is not None:
        rows.append(
            ["oracle (trained on each eval goal, its last iteration)", _fmt(oracle)[0], *[""] * args.adapt_steps, ""]
        )
    header = ["method", *[f"{k} steps" for k in steps], f"|v - goal| after {args.adapt_steps}"]
    table = markdown_table(header, rows)
    paired = {}
    if "MAML + standard" in curves and "MAML + hybrid" in curves:
        diff = curves["MAML + hybrid"] - curves["MAML + standard"]
        mean, half = mean_ci(diff)
        paired = {"hybrid_minus_standard_mean": mean, "hybrid_minus_standard_ci95": half}
        table += "\n\nPaired difference hybrid − standard (same tasks and keys): " + ", ".join(
            f"{k} steps {m:+.1f} ± {h:.1f}" for k, m, h in zip(steps, mean, half, strict=True)
        )
    reference = markdown_table(
        ["reference", *[f"{k} steps" for k in steps]],
        [[name, *[f"{v:.1f}" for v in values]] for name, values in REFERENCE.items()],
    )
    text = (
        f"# {args.env}, {args.eval_tasks} held-out goals x {args.num_seeds} seed(s), {args.model} policy, "
        f"{args.backend} backend\n\n"
        f"Mean episode return (± 95% CI over held-out tasks and seeds) after k adaptation rounds (inner lr "
        f"{args.inner_lr}); {args.iterations} meta-iterations of {args.tasks_per_batch} tasks x "
        f"{args.trajectories_per_task} trajectories x horizon {args.horizon}; MAML training {train_seconds:.0f} s, "
        f"total {total_seconds:.0f} s.\n\n"
        f"{table}\n\nReference (different simulator: MuJoCo; compare shapes, not values):\n\n{reference}\n"
    )
    (run_dir / "results.md").write_text(text)
    results = {
        "run_dir": str(run_dir),
        "returns": {name: mean_ci(r)[0] for name, r in curves.items()},
        "returns_ci95": {name: mean_ci(r)[1] for name, r in curves.items()},
        "per_task_returns": curves,
        "tracking_error": {name: mean_ci(t)[0] for name, t in tracking.items()},
        "oracle_return": None if oracle is None else float(np.mean(oracle)),
        "paired": paired,
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
    }
    write_json(run_dir / "results.json", results)
    print(text)
    print(f"results in {run_dir}")
    return results


if __name__ == "__main__":
    main(parse_args(PRESETS, "cpu"))
