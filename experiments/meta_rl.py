"""MAML-RL experiments on any meta-RL task family, with standard and experience-augmented hybrid test-time adaptation.

The thin experiment modules pick a preset and call `main`: `experiments.halfcheetah_vel` (the flagship; also
`--env halfcheetah-dir`) and `experiments.navigation` (Finn et al.'s 2D navigation table).

Meta-training (MAML-RL on returns): per task, for each of `inner_steps` inner steps, trajectories from the current
policy and one policy-gradient step (linear feature baseline, normalised advantages); trajectories from the adapted
policy; then `outer_epochs` Adam steps on their PPO-clipped surrogate, differentiated through the inner steps. The
policy sees observations standardised by running statistics gathered from meta-training rollouts (started from
one round of rollouts of the initial policy), frozen for evaluation and saved in checkpoints. The size of the inner
step is logged each chunk: `inner_kl` (KL(pre ‖ post) on the support, nats), `inner_grad_norm`,
`inner_clip_fraction`. The ExperienceBuffer is filled during meta-training only, with (observation window -> action
taken) pairs from the adapted policy; it is frozen before evaluation (SSM-MetaRL's contamination rule).

Evaluation on held-out tasks (a fixed set drawn from a separate key): mean episode return after 0..K adaptation
rounds (each round samples trajectories with the current policy, then takes one policy-gradient step with the
inner learning rate, or the learned per-parameter rates with `--learn-inner-lr`; steps after the first scale it
by `--later-steps-lr-scale`, as MAML-RL's test script halves it) for MAML + standard, MAML + hybrid
(+ `experience_weight` x behaviour cloning on replayed windows), a pretrained baseline (one policy trained by the
same outer step on every trajectory of MAML's env budget, with no inner step: `ssm_jax.meta.rl.pretrain_update`),
random initialisation and, with `--oracle`, a policy trained on each evaluation task (`train_per_task`; its return
at the last training iteration). All methods see the same evaluation keys, so differences are paired. Also the
env's task metric where the family has one (`env.task_metric_name`: |v_x - v_goal| for velocity goals, speed along
the goal direction, distance to the goal), read from the simulator through `Trajectory.metrics`.

With `--num-seeds N` the whole pipeline runs for seeds `seed … seed + N − 1` as one run axis of the vmapped
programs (`ssm_jax.sweep.make_programs`: one compile, whatever N; each seed draws its own training and evaluation
tasks, with the keys it would draw alone) and the tables and plots pool held-out tasks over seeds.

Writes under `<out_dir>/<timestamp>/`: config.json, metrics.jsonl, results.json, results.md, learning_curve.png,
adaptation_curve.png, and orbax checkpoints of the stacked states `[num_seeds, ...]`, `checkpoints/step_<n>/`
(`ssm_jax.runs`). `--resume <run dir>` continues MAML's training from the newest one with the run's own config.json
and ends as the uninterrupted run would; Ctrl-C saves the last finished chunk and exits 0.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import resume_command, write_config
from experiments.report import (
    REFERENCES,
    format_ci,
    gap_closed,
    markdown_table,
    mean_ci,
    new_figure,
    paired_difference,
    paired_gains,
    plot_adaptation,
    save_figure,
)
from ssm_jax import envs, runs, sweep
from ssm_jax.cli import exit_with_error
from ssm_jax.config_io import register_config
from ssm_jax.envs.brax_tasks import BACKENDS
from ssm_jax.meta.policy_losses import INNER_OBJECTIVES
from ssm_jax.models import MODEL_NAMES, NetworkConfig, make_gaussian_policy
from ssm_jax.train import HParams, TrainerConfig, make_meta_rl_trainer
from ssm_jax.train_config import OUTER_OPTIMIZERS

ADAPTATION_MODE_CHOICES = ("both", "standard", "hybrid")


@register_config
@dataclasses.dataclass(frozen=True)
class Args:
    preset: str = "cpu"
    """The preset these values came from (choose it with --preset)."""
    env: Literal[envs.META_RL_ENVS] = "halfcheetah-vel"
    """The meta-RL task family."""
    backend: Literal[BACKENDS] = "spring"
    """brax physics backend (brax families only)."""
    goals: Literal[envs.GOAL_SETS] = "uniform"
    """halfcheetah-vel goals: U[0, 2], or SSM-MetaRL's 0.5, 1, ..., 2.5."""
    horizon: int = 200
    """Steps per episode."""
    model: Literal[MODEL_NAMES] = "ssm"
    """The policy's sequence model."""
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    iterations: int = 60
    """Meta-iterations (each: tasks_per_batch tasks)."""
    chunk_size: int = 5
    """Meta-iterations per jitted call (one host sync, log line and progress update each)."""
    tasks_per_batch: int = 5
    trajectories_per_task: int = 8
    """Trajectories per task and sampling round."""
    inner_lr: float = 0.1
    """Inner policy-gradient step size (the start value under --learn-inner-lr)."""
    inner_steps: int = 1
    """Inner steps in meta-training, each on fresh trajectories."""
    learn_inner_lr: bool = False
    """Meta-SGD: learn per-parameter inner rates and adapt with them at test time."""
    inner_grad_clip: float | None = None
    """Clip the inner gradient to this global norm (None: no clip)."""
    first_order: bool = False
    """First-order MAML (no gradient through the inner step)."""
    inner_objective: Literal[INNER_OBJECTIVES] = "pg"
    """pg: vanilla policy gradient (MAML-RL); lvc: ProMP's low-variance curvature objective."""
    outer_lr: float = 3e-3
    """Adam learning rate of the outer (PPO) steps."""
    outer_epochs: int = 3
    """PPO epochs per meta-iteration."""
    outer_optimizer: Literal[OUTER_OPTIMIZERS] = "ppo"
    """ppo: outer_epochs Adam steps on the clipped surrogate; trpo: one trust-region step (MAML-RL's)."""
    max_kl: float = 0.01
    """The trpo step's bound on the adapted policies' KL (nats)."""
    cg_iters: int = 10
    """Conjugate-gradient iterations (Fisher-vector products, the trpo step's main cost) per trpo step."""
    normalize_observations: bool = True
    """Standardise the policy's inputs with running statistics (False: raw, as MAML-RL's navigation)."""
    adaptation_mode: Literal[ADAPTATION_MODE_CHOICES] = "both"
    """Test-time adapters evaluated for MAML."""
    buffer_size: int = 10_000
    """ExperienceBuffer capacity in windows."""
    experience_batch_size: int = 32
    """Windows replayed per hybrid step."""
    experience_weight: float = 0.1
    """Weight of the hybrid adapter's behaviour-cloning term."""
    window: int = 16
    """Steps per buffer window."""
    adapt_steps: int = 3
    """Test-time adaptation rounds (sample, then one step)."""
    later_steps_lr_scale: float = 1.0
    """Factor on the inner rate for test-time steps after the first."""
    eval_tasks: int = 16
    """Held-out tasks per seed."""
    eval_trajectories: int | None = None
    """Trajectories per test-time round (None: trajectories_per_task)."""
    matmul_precision: Literal["highest", "default"] = "highest"
    """Float32 matmuls: "highest" is full float32 everywhere; "default" is the backend's (TF32 on GPUs: faster,
    and 1 of 8 navigation runs diverged with it on an H200)."""
    pretrained: bool = True
    """Also train and evaluate the pretrained baseline (MAML's env budget; it takes no inner step, so it trains in
    about 3/4 of MAML's time on the CPU preset)."""
    random_baseline: bool = True
    """Also evaluate the untrained policy."""
    oracle: bool = False
    """Also train a policy on each held-out task (the random -> oracle gap)."""
    oracle_iterations: int = 30
    checkpoint_every: int = 20
    """Meta-iterations between checkpoints (a multiple of chunk_size)."""
    resume: str | None = None
    """A run directory to continue from its checkpoint."""
    seed: int = 0
    num_seeds: int = 1
    """Run seeds seed .. seed + num_seeds - 1 and pool their held-out tasks."""
    out_dir: str = "runs/halfcheetah_vel"
    plots: bool = True
    """Write learning_curve.png and adaptation_curve.png."""

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; expected one of {', '.join(MODEL_NAMES)}")
        if self.adaptation_mode not in ADAPTATION_MODE_CHOICES:
            raise ValueError(
                f"adaptation_mode must be one of {', '.join(ADAPTATION_MODE_CHOICES)}, got {self.adaptation_mode!r}"
            )
        if self.env not in envs.META_RL_ENVS:
            raise ValueError(f"env must be a meta-RL family ({', '.join(envs.META_RL_ENVS)}), got {self.env!r}")
        if min(self.buffer_size, self.experience_batch_size, self.chunk_size) < 1:
            raise ValueError("buffer_size, experience_batch_size and chunk_size must be >= 1")
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
        if not self.later_steps_lr_scale > 0:
            raise ValueError(f"later_steps_lr_scale must be > 0, got {self.later_steps_lr_scale}")
        if self.eval_trajectories is not None and self.eval_trajectories < 1:
            raise ValueError(f"eval_trajectories must be >= 1 or None, got {self.eval_trajectories}")
        if not (self.inner_lr > 0 and self.outer_lr > 0):
            raise ValueError(f"inner_lr and outer_lr must be > 0, got {self.inner_lr} and {self.outer_lr}")
        if self.experience_weight < 0:
            raise ValueError(f"experience_weight must be >= 0, got {self.experience_weight}")
        if not self.max_kl > 0 or self.cg_iters < 1 or (self.outer_optimizer == "trpo" and self.learn_inner_lr):
            raise ValueError(
                f"max_kl must be > 0 and cg_iters >= 1 (got {self.max_kl}, {self.cg_iters}), and --learn-inner-lr "
                "needs --outer-optimizer ppo (the trpo step does not learn inner rates)"
            )
        if self.num_seeds < 1 or (self.resume and self.num_seeds != 1):
            raise ValueError(f"num_seeds must be >= 1, and 1 with --resume; got {self.num_seeds}")
        if self.resume is not None and not runs.checkpoint_steps(self.resume):
            raise ValueError(f"--resume {self.resume}: no checkpoint in it (expected {runs.CHECKPOINTS}/step_<n>/)")


def build_trainer(args: Args):
    """The env, the policy and its trainer."""
    env = envs.make_meta_rl(args.env, args.horizon, args.backend, args.goals)
    policy = make_gaussian_policy(
        args.model, env.observation_size, env.action_size, args.network, window=max(args.window, 16)
    )
    config = TrainerConfig(
        tasks_per_batch=args.tasks_per_batch,
        trajectories_per_task=args.trajectories_per_task,
        horizon=args.horizon,
        inner_steps=args.inner_steps,
        learn_inner_lr=args.learn_inner_lr,
        first_order=args.first_order,
        inner_grad_clip=args.inner_grad_clip,
        inner_objective=args.inner_objective,
        outer_epochs=args.outer_epochs,
        outer_optimizer=args.outer_optimizer,
        max_kl=args.max_kl,
        cg_iters=args.cg_iters,
        normalize_observations=args.normalize_observations,
        buffer_size=args.buffer_size,
        window=args.window,
        experience_batch_size=args.experience_batch_size,
        adapt_rounds=args.adapt_steps,
        later_rounds_lr_scale=args.later_steps_lr_scale,
        eval_trajectories=args.eval_trajectories,
        matmul_precision=args.matmul_precision,
    )
    return env, make_meta_rl_trainer(env, policy, config)


def _train(args, chunk, states, keys, log, phase, seeds, run_dir, checkpoints=True, start=0):
    """Runs `chunk` (vmapped over the runs, one per seed in `seeds`) from iteration `start` until `args.iterations`
    through `runs.train_phase`: one record per seed and chunk, and with `checkpoints` the stacked `TrainState` saved
    every `checkpoint_every` iterations and at the end."""
    started = time.perf_counter()

    def records(iteration, metrics):
        elapsed = time.perf_counter() - started
        return [
            {"phase": phase, "seed": seed, "iteration": iteration, "elapsed_s": elapsed,
             **jax.tree.map(lambda m, i=i: np.mean(m[i]), metrics)}
            for i, seed in enumerate(seeds)
        ]  # fmt: skip

    command = resume_command(run_dir, "experiments.halfcheetah_vel")
    saving = runs.Checkpoints(run_dir, args, args.checkpoint_every, command) if checkpoints else None
    description = phase if len(seeds) == 1 else f"{phase} ({len(seeds)} seeds)"
    postfix = lambda m: {"return": float(np.mean(m["post_adaptation_return"]))}
    return runs.train_phase(
        chunk, states, keys, args.iterations, args.chunk_size, description, log, records, saving, postfix, start
    )


def _plot_learning(path: Path, records: list[dict]):
    fig, ax = new_figure(figsize=(6, 3.8))
    for phase, key, label in (
        ("maml", "pre_adaptation_return", "MAML, before adaptation"),
        ("maml", "post_adaptation_return", "MAML, after 1 step"),
        ("pretrained", "post_adaptation_return", "pretrained (the outer step on all tasks)"),
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
    save_figure(fig, path)


# Fields that change what is run, not the compiled programs (the hyperparameters are traced `HParams`).
_RUN_ONLY_FIELDS = frozenset(
    {
        "preset", "seed", "num_seeds", "out_dir", "resume", "plots", "checkpoint_every", "iterations", "eval_tasks",
        "pretrained", "random_baseline", "oracle", "oracle_iterations", "inner_lr", "outer_lr", "experience_weight",
        "adaptation_mode",
    }
)  # fmt: skip


def compiled_programs(args: Args) -> tuple:
    """The env and the trainer's vmapped programs for `args` (an `Args` or a subclass's instance), built once per
    process for each program: a second `main` with other seeds, hyperparameters or output directory reuses them."""
    fields = dataclasses.fields(Args)  # a subclass's own fields are its business, not the programs'
    return _compiled(tuple((f.name, getattr(args, f.name)) for f in fields if f.name not in _RUN_ONLY_FIELDS))


@functools.cache
def _compiled(key: tuple) -> tuple:
    """The env and the trainer's programs, vmapped over runs (`ssm_jax.sweep.make_programs`), for one program key,
    built once per process: a second `main` with other seeds, hyperparameters or output directory reuses them."""
    fields = dict(key)
    chunk = fields["chunk_size"]
    args = dataclasses.replace(Args(), **fields, iterations=chunk, checkpoint_every=chunk)
    env, trainer = build_trainer(args)
    return env, sweep.make_programs(trainer, chunk)


def main(args: Args) -> dict:
    """Meta-trains, runs the baselines and evaluates on held-out tasks for each seed; returns the results dict
    (`returns[method]`: mean return after 0..K adaptation rounds, pooled over held-out tasks and seeds)."""
    start_time = time.perf_counter()
    run_dir = Path(args.resume) if args.resume else runs.make_run_dir(args.out_dir)
    if not args.resume:  # a resumed run keeps the config.json it was started with
        write_config(run_dir, args)
    log = runs.MetricsLog(run_dir / "metrics.jsonl")
    env, programs = compiled_programs(args)
    hparams = HParams.create(args.inner_lr, args.outer_lr, args.experience_weight)
    curves, task_metrics, oracle, train_seconds = _run_seeds(args, env, hparams, programs, log, run_dir)

    metric_name = env.task_metric_name
    total_seconds = time.perf_counter() - start_time
    records = log.records()
    results = _summarise(
        args, run_dir, curves, task_metrics, metric_name, oracle, records, train_seconds, total_seconds
    )
    if args.plots:
        _plot_learning(run_dir / "learning_curve.png", records)
        plot_adaptation(run_dir / "adaptation_curve.png", curves, oracle, REFERENCES.get(args.env, {}))
    return results


def _run_seeds(args, env, hparams, programs, log, run_dir):
    """Meta-training, baselines and held-out evaluation for seeds `seed … seed + num_seeds − 1`, as one run axis
    of the vmapped programs (each run keyed as `sweep.run_keys(seed)`, so it is the run its seed makes alone).

    Returns `(curves, task_metrics, oracle, meta_train_seconds)`: `curves[label]` and `task_metrics[label]` are
    `[num_seeds * eval_tasks, adapt_steps + 1]` (seed-major), `oracle` is `[num_seeds * eval_tasks]` or None.
    """
    started = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    grid = sweep.make_grid(seeds)
    keys, run_hparams = grid.keys, grid.hparams(hparams)
    initial = programs.init(keys.init, run_hparams)  # training donates its states; these stay for random init
    states = jax.tree.map(jnp.copy, initial)
    start = 0
    if args.resume:
        try:
            kept = lambda record, step: record["phase"] == "maml" and record["iteration"] <= step  # the rest runs again
            states, start = runs.resume(run_dir, states, log, kept)
        except ValueError as error:  # damaged, or from another configuration: one line, exit 2
            exit_with_error(f"--resume {run_dir}: {error}")
    trained = {"MAML": _train(args, programs.train, states, keys.train, log, "maml", seeds, run_dir, start=start)}
    train_seconds = time.perf_counter() - started
    if args.pretrained:
        pretrained = programs.init(keys.init, run_hparams, adapt=False)
        trained["pretrained"] = _train(
            args, programs.train, pretrained, keys.pretrain, log, "pretrained", seeds, run_dir, checkpoints=False
        )
    if args.random_baseline:
        trained["random init"] = initial

    eval_tasks, eval_keys = sweep.held_out_tasks(env, keys.eval, args.eval_tasks)
    pooled = lambda per_run: np.asarray(per_run).reshape(-1, *np.shape(per_run)[2:])  # [R, E, ...] -> [R * E, ...]
    curves, task_metrics = {}, {}
    for name, state in trained.items():
        modes = ("standard", "hybrid") if name == "MAML" and args.adaptation_mode == "both" else (args.adaptation_mode,)
        for mode in modes if name == "MAML" else ("standard",):
            label = f"{name} + {mode}" if name == "MAML" else name
            returns, extra = programs.evaluate(state, eval_keys, eval_tasks, mode)
            curves[label] = pooled(returns)
            task_metrics[label] = pooled(extra.get("task_metric", returns * np.nan))

    oracle = None
    if args.oracle:
        oracle = pooled(programs.oracle(initial, keys.oracle, eval_tasks, iterations=args.oracle_iterations)[..., -1])
    return curves, task_metrics, oracle, train_seconds


def _summarise(args, run_dir, curves, task_metrics, metric_name, oracle, records, train_seconds, total_seconds):
    steps = list(range(args.adapt_steps + 1))
    metric_column = [] if metric_name is None else [f"{metric_name} after {args.adapt_steps}"]
    rows = [
        [name, *format_ci(returns), *([format_ci(task_metrics[name][:, -1])[0]] if metric_name else [])]
        for name, returns in curves.items()
    ]
    if oracle is not None:
        rows.append(
            [
                "oracle (trained on each eval task, its last iteration)",
                format_ci(oracle)[0],
                *[""] * args.adapt_steps,
                *[""] * len(metric_column),
            ]
        )
    table = markdown_table(["method", *[f"{k} steps" for k in steps], *metric_column], rows)
    gains = paired_gains(curves)
    table += "\n\nPaired change from 0 steps (same tasks and keys):\n\n" + markdown_table(
        ["method", *[f"after {k}" for k in steps[1:]]],
        [
            [name, *[f"{m:+.1f} ± {h:.1f}" for m, h in zip(g["mean"], g["ci95"], strict=True)]]
            for name, g in gains.items()
        ],
    )
    comparisons = {
        "hybrid_minus_standard": paired_difference(curves, "MAML + hybrid", "MAML + standard"),
        "maml_minus_pretrained": paired_difference(curves, "MAML + standard", "pretrained"),
    }
    if "MAML + standard" in curves and "pretrained" in curves:
        gain_diff = (curves["MAML + standard"][:, 1] - curves["MAML + standard"][:, 0]) - (
            curves["pretrained"][:, 1] - curves["pretrained"][:, 0]
        )
        mean, half = mean_ci(gain_diff)
        comparisons["one_step_gain_maml_minus_pretrained"] = {"mean": float(mean), "ci95": float(half)}
    for label, value in (
        ("MAML + hybrid − MAML + standard", comparisons["hybrid_minus_standard"]),
        ("MAML + standard − pretrained", comparisons["maml_minus_pretrained"]),
    ):
        if value is not None:
            table += f"\n\nPaired difference {label}: " + ", ".join(
                f"{k} steps {m:+.1f} ± {h:.1f}" for k, m, h in zip(steps, value["mean"], value["ci95"], strict=True)
            )
    if "one_step_gain_maml_minus_pretrained" in comparisons:
        g = comparisons["one_step_gain_maml_minus_pretrained"]
        table += f"\n\nOne-step gain, MAML + standard − pretrained (paired): {g['mean']:+.1f} ± {g['ci95']:.1f}"
    gap = gap_closed(curves, oracle)
    if gap:
        table += "\n\nFraction of the random-init → oracle gap closed after 0 / 1 steps: " + "; ".join(
            f"{name} {' → '.join(f'{v:.2f}' for v in values)}" for name, values in gap.items()
        )
    inner = [r for r in records if r.get("phase") == "maml" and "inner_kl" in r]
    last_inner = {}
    if inner:
        last_iteration = max(r["iteration"] for r in inner)
        final = [r for r in inner if r["iteration"] == last_iteration]
        last_inner = {
            k: float(np.mean([r[k] for r in final]))
            for k in ("inner_kl", "inner_grad_norm", "inner_clip_fraction", "inner_lr_mean")
        }
        table += (
            f"\n\nInner step at the end of meta-training (last chunk, mean over seeds): KL(pre ‖ post) "
            f"{last_inner['inner_kl']:.4f} nats, gradient norm {last_inner['inner_grad_norm']:.3f}, clipped "
            f"{last_inner['inner_clip_fraction']:.0%}, mean inner lr {last_inner['inner_lr_mean']:.4f}"
        )
    reference = REFERENCES.get(args.env, {})
    reference_text = ""
    if reference:
        width = max(len(v) for v in reference.values())
        reference_text = "\n\nReference (Finn et al. 2017; MuJoCo for the brax families: compare shapes):\n\n" + (
            markdown_table(
                ["reference", *[f"{k} steps" for k in range(width)]],
                [
                    [name, *[f"{v:.1f}" for v in values], *[""] * (width - len(values))]
                    for name, values in reference.items()
                ],
            )
        )
    text = (
        f"# {args.env}, {args.eval_tasks} held-out tasks x {args.num_seeds} seed(s), {args.model} policy"
        f"{'' if args.env == 'navigation-2d' else f', {args.backend} backend'}\n\n"
        f"Mean episode return (± 95% CI over held-out tasks and seeds) after k adaptation rounds (inner lr "
        f"{args.inner_lr}{', learned' if args.learn_inner_lr else ''}"
        f"{f', x {args.later_steps_lr_scale} after the first step' if args.later_steps_lr_scale != 1 else ''}, "
        f"{args.inner_steps} inner step(s) in "
        f"meta-training); {args.iterations} meta-iterations of {args.tasks_per_batch} tasks x "
        f"{args.trajectories_per_task} trajectories x horizon {args.horizon}; MAML training {train_seconds:.0f} s, "
        f"total {total_seconds:.0f} s.\n\n{table}{reference_text}\n"
    )
    (run_dir / "results.md").write_text(text)
    results = {
        "run_dir": str(run_dir),
        "returns": {name: mean_ci(r)[0] for name, r in curves.items()},
        "returns_ci95": {name: mean_ci(r)[1] for name, r in curves.items()},
        "per_task_returns": curves,
        "paired_gain": gains,
        "comparisons": {k: v for k, v in comparisons.items() if v is not None},
        "gap_closed": gap,
        "inner_step": last_inner,
        "task_metric_name": metric_name,
        "task_metric": {name: mean_ci(t)[0] for name, t in task_metrics.items()},
        "oracle_return": None if oracle is None else float(np.mean(oracle)),
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
    }
    runs.write_json(run_dir / "results.json", results)
    print(text)
    print(f"results in {run_dir}")
    return results
