"""Levers: which of the CPU preset's settings make MAML's one-step gain beat the pretrained baseline's soonest,
chosen on validation goals.

    python -m experiments.levers                             # HalfCheetah-Vel: every variant, 0.5M and 1M, 64 goals
    python -m experiments.levers --variants base "10 tasks"  # some of them
    python -m experiments.levers --preset smoke              # seconds, for tests

Each variant is the budget study (`experiments.budget_study.evaluated_budgets`) of one setting of the structural
levers (`VARIANTS`: batch shape at equal env steps, PPO epochs, TRPO, learned inner rates, inner steps; each its own
program) over a grid of the traced ones (inner and outer lr: one vmapped program for the whole grid). Every setting
is evaluated on *validation* goals, drawn from each seed's evaluation key folded with `sweep.VALIDATION`, never on the
held-out goals the recorded pages report on. The choice: the setting whose paired one-step gain difference (MAML −
pretrained) clears zero at the smallest budget, ties broken by the larger difference there.

Writes under `<out_dir>/<timestamp>/`: config.json, metrics.jsonl, results.json (rewritten after every variant),
results.md and levers.png (the gain difference per setting at each budget).
"""

from __future__ import annotations

from experiments.budget_study import evaluated_budgets
from experiments.common import run_main
from ssm_jax import run_files, sweep
from ssm_jax.config import CONFIGS, replace
from ssm_jax.config.studies import VARIANTS, LeverArgs
from ssm_jax.report.budget_study import budget_row
from ssm_jax.report.levers import choose
from ssm_jax.report.writers import publish


def main(args: LeverArgs) -> dict:
    """Runs every variant's grid to each budget on validation goals; writes the table, the choice and the plot."""
    run_dir = run_files.make_run_dir(args.out_dir)
    run_files.write_config(run_dir, args)
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    settings, results = [], {}
    for variant in args.variants:
        changes = dict(VARIANTS[variant])
        swept = {name: changes.pop(f"sweep_{name}") for name in sweep.SWEEPABLE if f"sweep_{name}" in changes}
        config = replace(args, **changes)
        grid = sweep.make_grid(args.seeds, **swept)
        budgets = evaluated_budgets(config, grid, sweep.validation_keys, log, f"{variant}: ")
        next(budgets)  # the untrained policy: not compared here
        rows = {}
        for budget, (until, seconds, curves) in zip(args.budgets, budgets, strict=True):
            env_steps = until * config.trainer.env_steps_per_iteration
            for values, members in _settings(grid).items():
                setting = {name: returns[members].reshape(-1, returns.shape[-1]) for name, returns in curves.items()}
                row = budget_row(budget, until, env_steps, setting, seconds)
                rows.setdefault(values, []).append(
                    {
                        "budget": budget,
                        "env_steps": env_steps,
                        "maml_after_one_step": row["returns"]["MAML"][1],
                        "gain_difference": row["gain_difference"],
                        "diverged": row["diverged"],
                    }
                )
        settings += [{"variant": variant, "values": dict(values), "rows": r} for values, r in rows.items()]
        results = {"run_dir": str(run_dir), "settings": settings, "chosen": choose(settings)}
        publish(run_dir, results, args, final=variant == args.variants[-1])
    return results


def _settings(grid: sweep.Grid) -> dict[tuple, list[int]]:
    """The grid's runs grouped by their traced values (every seed of one setting together): values -> run indices."""
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(grid.runs()):
        groups.setdefault(tuple((name, value) for name, value in run.items() if name != "seed"), []).append(i)
    return groups


PRESETS = {name.removeprefix("levers-"): CONFIGS[name] for name in CONFIGS if name.startswith("levers-")}
"""The presets, by their names in `ssm_jax.config.CONFIGS` (`levers-<preset>`)."""

if __name__ == "__main__":
    run_main(main, PRESETS, "vel")
