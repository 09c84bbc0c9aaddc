"""Sinusoid regression (Finn et al. 2017): MAML, FOMAML, Meta-SGD and a pretrained baseline on held-out tasks.

    python -m experiments.sinusoid                      # default preset: 10-shot, 20k iterations (CPU, minutes)
    python -m experiments.sinusoid --preset smoke       # seconds
    python -m experiments.sinusoid --preset paper       # 5/10/20-shot, 70k iterations, as in the paper
    python -m experiments.sinusoid --frequency-range 0.8 1.2   # Li et al. 2017 (Meta-SGD) distribution

Network: MLP 2x40 ReLU. Meta-training: meta-batch 25, inner SGD lr 0.01, 1 inner step, Adam 1e-3 outer, K support
and K query points per task. The pretrained baseline trains the same net with Adam on all tasks' points (no
inner loop). Evaluation: `eval_tasks` held-out tasks from a separate key, K support points, `eval_points` query
points, MSE after 0..`eval_steps` SGD steps (Meta-SGD with its learned per-parameter lr), 95% CIs over tasks.

Writes under `runs/sinusoid/<timestamp>/`: config.json, metrics.jsonl, results.json, results.md,
fits.png (fitted curves) and mse_vs_steps.png.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.common import run_main, write_config
from experiments.report import (
    REFERENCE_MAML_PAPER,
    REFERENCE_META_SGD_PAPER,
    format_ci,
    markdown_table,
    mean_ci,
    new_figure,
    plot_ci_curve,
    save_figure,
)
from ssm_jax.config_io import register_config
from ssm_jax.envs import SinusoidDistribution
from ssm_jax.meta import MAMLConfig, make_maml
from ssm_jax.models import ModelConfig, make_model
from ssm_jax.runs import MetricsLog, make_run_dir, train_in_chunks, write_json

METHODS = ("maml", "fomaml", "meta_sgd", "pretrained")
LABELS = {"maml": "MAML", "fomaml": "FOMAML", "meta_sgd": "Meta-SGD", "pretrained": "pretrained"}


@register_config
@dataclasses.dataclass(frozen=True)
class Args:
    preset: str = "default"
    shots: tuple[int, ...] = (10,)
    methods: tuple[str, ...] = METHODS
    iterations: int = 20_000
    chunk_size: int = 1000
    meta_batch: int = 25
    inner_lr: float = 0.01
    train_inner_steps: int = 1
    outer_lr: float = 1e-3
    hidden_dim: int = 40
    frequency_range: tuple[float, float] = (1.0, 1.0)
    eval_tasks: int = 600
    eval_points: int = 100
    eval_steps: int = 10
    seed: int = 0
    out_dir: str = "runs/sinusoid"
    plots: bool = True

    def __post_init__(self):
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; expected any of {', '.join(METHODS)}")
        if not self.shots or min(self.shots) < 1:
            raise ValueError(f"shots must be positive ints, got {self.shots}")
        if self.iterations < self.chunk_size or self.iterations % self.chunk_size:
            raise ValueError(
                f"iterations={self.iterations} must be a positive multiple of chunk_size={self.chunk_size}"
            )
        if min(self.meta_batch, self.eval_tasks, self.eval_points, self.eval_steps) < 1:
            raise ValueError("meta_batch, eval_tasks, eval_points and eval_steps must be >= 1")


PRESETS = {
    "default": Args(),
    "smoke": Args(preset="smoke", iterations=1500, chunk_size=500, eval_tasks=100, plots=False),
    "paper": Args(preset="paper", shots=(5, 10, 20), iterations=70_000),
}


def _model(args: Args):
    return make_model("mlp", ModelConfig(input_dim=1, output_dim=1, hidden_dim=args.hidden_dim, num_layers=2))


def _loss_fn(model):
    def loss_fn(params, batch):
        x, y = batch
        preds = model.apply(params, (), x)[1]
        return jnp.mean((preds - y) ** 2), {"predictions": preds}

    return loss_fn


def _sample_tasks(dist: SinusoidDistribution, key, n_tasks: int, shots: int, query_points: int):
    """`(support, query)` with leaves `[n_tasks, points, 1]`."""
    task_key, support_key, query_key = jax.random.split(key, 3)
    tasks = dist.sample_tasks(task_key, n_tasks)
    points = jax.vmap(dist.sample_points, in_axes=(0, 0, None))
    support = points(jax.random.split(support_key, n_tasks), tasks, shots)
    query = points(jax.random.split(query_key, n_tasks), tasks, query_points)
    return tasks, (support, query)


def train(method: str, args: Args, shots: int, dist: SinusoidDistribution, key, logger: MetricsLog):
    """Meta-trains (or pretrains) one method. Returns `(params, inner_lr, maml)` (maml evaluates the params)."""
    model = _model(args)
    loss_fn = _loss_fn(model)
    init_key, train_key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1, 1)))
    maml = make_maml(
        loss_fn,
        MAMLConfig(
            inner_lr=args.inner_lr,
            num_inner_steps=args.train_inner_steps,
            first_order=method == "fomaml",
            learn_inner_lr=method == "meta_sgd",
        ),
    )
    optimizer = optax.adam(args.outer_lr)
    state = maml.init(params, optimizer)

    def pretrain_update(state, tasks):
        support, query = tasks
        points = jax.tree.map(lambda s, q: jnp.concatenate([s, q], axis=1).reshape(-1, 1), support, query)
        loss, grads = jax.value_and_grad(lambda p: loss_fn(p, points)[0])(state.params)
        updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
        new_state = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
        return new_state, {"meta_loss": loss, "post_query_loss": loss}

    update = pretrain_update if method == "pretrained" else maml.update

    def chunk(state, key):
        def body(state, key):
            _, tasks = _sample_tasks(dist, key, args.meta_batch, shots, shots)
            return update(state, tasks)

        return jax.lax.scan(body, state, jax.random.split(key, args.chunk_size))

    def log(iteration, state, metrics):
        logger.log({"shots": shots, "method": method, "iteration": iteration, **jax.tree.map(np.mean, metrics)})

    state = train_in_chunks(
        jax.jit(chunk, donate_argnums=0),
        state,
        train_key,
        args.iterations,
        args.chunk_size,
        f"{LABELS[method]} {shots}-shot",
        on_chunk=log,
        postfix=lambda m: {"loss": float(np.mean(m["post_query_loss"]))},
    )
    return state.params, state.inner_lr, maml


def evaluate(maml, params, inner_lr, eval_batch, num_steps: int) -> np.ndarray:
    """Query MSE after 0..num_steps adaptation steps for every eval task: `[tasks, num_steps + 1]`."""
    curve = jax.vmap(maml.adaptation_curve, in_axes=(None, 0, None, None))
    return np.asarray(jax.jit(curve, static_argnums=2)(params, eval_batch, num_steps, inner_lr))


def _plot_fits(path: Path, args: Args, dist, fitted: dict, eval_tasks, eval_batch, model):
    """Ground truth, support points and each method's fit before and after `eval_steps` steps, 3 held-out tasks."""
    x_grid = jnp.linspace(*dist.input_range, 200)[:, None]
    fig, axes = new_figure(1, 3, figsize=(13, 3.6), sharey=True)
    for i, ax in enumerate(axes):
        task = jax.tree.map(lambda v, i=i: v[i], eval_tasks)
        support = jax.tree.map(lambda v, i=i: v[i], eval_batch[0])
        ax.plot(x_grid[:, 0], dist.evaluate(task, x_grid)[:, 0], "k-", lw=2, label="ground truth")
        ax.plot(support[0][:, 0], support[1][:, 0], "k^", ms=7, label=f"{support[0].shape[0]} support points")
        for method, (maml, params, inner_lr) in fitted.items():
            long_adapt = make_maml(maml.loss_fn, dataclasses.replace(maml.config, num_inner_steps=args.eval_steps))
            for steps, style, adapted in (
                (0, ":", params),
                (args.eval_steps, "-", long_adapt.adapt(params, support, inner_lr)),
            ):
                prediction = model.apply(adapted, (), x_grid)[1][:, 0]
                ax.plot(x_grid[:, 0], prediction, style, label=f"{LABELS[method]}, {steps} steps")
        ax.set_title(f"held-out task {i}")
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def _plot_curves(path: Path, curves: dict):
    shots_list = sorted({s for s, _ in curves})
    fig, axes = new_figure(1, len(shots_list), figsize=(4.5 * len(shots_list), 3.6), squeeze=False)
    for ax, shots in zip(axes[0], shots_list, strict=True):
        for (s, method), mse in curves.items():
            if s != shots:
                continue
            plot_ci_curve(ax, mse, LABELS[method], band=True)
        ax.set_yscale("log")
        ax.set_xlabel("gradient steps on the support")
        ax.set_ylabel("query MSE (95% CI)")
        ax.set_title(f"{shots}-shot, held-out tasks")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def main(args: Args) -> dict:
    run_dir = make_run_dir(args.out_dir)
    write_config(run_dir, args)
    logger = MetricsLog(run_dir / "metrics.jsonl")
    dist = SinusoidDistribution(frequency_range=args.frequency_range)
    root = jax.random.key(args.seed)
    train_root, eval_root = jax.random.split(root)
    results: dict = {"shots": {}, "run_dir": str(run_dir)}
    curves = {}
    rows = []
    for shots in args.shots:
        eval_tasks, eval_batch = _sample_tasks(
            dist, jax.random.fold_in(eval_root, shots), args.eval_tasks, shots, args.eval_points
        )
        fitted = {}
        per_method = {}
        for method_index, method in enumerate(args.methods):
            start = time.perf_counter()
            key = jax.random.fold_in(jax.random.fold_in(train_root, shots), method_index)
            params, inner_lr, maml = train(method, args, shots, dist, key, logger)
            mse = evaluate(maml, params, inner_lr, eval_batch, args.eval_steps)
            curves[(shots, method)] = mse
            fitted[method] = (maml, params, inner_lr)
            mean, half = mean_ci(mse)
            per_method[method] = {
                "mse_mean": mean,
                "mse_ci95": half,
                "train_seconds": time.perf_counter() - start,
            }
            rows.append(
                [shots, LABELS[method]]
                + [format_ci(mse, digits=3)[k] for k in (0, 1, min(5, args.eval_steps), args.eval_steps)]
                + [REFERENCE_META_SGD_PAPER.get(shots, {}).get(method, "")]
            )
        results["shots"][shots] = per_method
        if args.plots:
            selected = {m: fitted[m] for m in ("maml", "pretrained") if m in fitted}
            _plot_fits(run_dir / f"fits_{shots}shot.png", args, dist, selected, eval_tasks, eval_batch, _model(args))
    header = [
        "K",
        "method",
        "0 steps",
        "1 step",
        f"{min(5, args.eval_steps)} steps",
        f"{args.eval_steps} steps",
        "Li et al. 2017, 1 step (ω∈[0.8,1.2])",
    ]
    table = markdown_table(header, rows)
    distribution = f"amplitude U[0.1,5], phase U[0,π], frequency U{list(args.frequency_range)}, x U[-5,5]"
    (run_dir / "results.md").write_text(
        f"# Sinusoid regression, {args.eval_tasks} held-out tasks ({distribution})\n\n"
        f"Query MSE (mean ± 95% CI) after k SGD steps (lr {args.inner_lr}; Meta-SGD uses its learned lr), "
        f"{args.iterations} meta-iterations, meta-batch {args.meta_batch}.\n\n{table}\n\n"
        f"Finn et al. 2017 (ω = 1), 5-shot, after 1/5/10 steps: MAML {REFERENCE_MAML_PAPER['maml']}, "
        f"pretrained {REFERENCE_MAML_PAPER['pretrained']}.\n"
    )
    write_json(run_dir / "results.json", results)
    if args.plots:
        _plot_curves(run_dir / "mse_vs_steps.png", curves)
    print(table)
    print(f"results in {run_dir}")
    return results


if __name__ == "__main__":
    run_main(main, PRESETS, "default")
