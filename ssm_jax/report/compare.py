"""Comparisons every report shares: paired differences and gains with CIs, formatted CIs, markdown tables, the
adaptation plot, and the papers' reference numbers beside ours."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssm_jax import envs
from ssm_jax.report.core import mean_ci, new_figure, plot_ci_curve, save_figure

# Finn et al. 2017: mean return after 0/1/2/3 gradient steps (HalfCheetah: MuJoCo, horizon 200; the authors' result
# files and the paper's Fig. 5; navigation: appendix Table 4). Compare shapes for brax, values for navigation.
REFERENCES = {
    "halfcheetah-vel": {
        "MAML (Finn et al. 2017, MuJoCo)": (-129.5, -78.6, -66.6, -60.8),
        "pretrained (Finn et al. 2017, MuJoCo)": (-158.0, -135.4, -128.5, -133.6),
        "random init (Finn et al. 2017, MuJoCo)": (-254.8, -254.3, -246.8, -230.8),
        "oracle (Finn et al. 2017, MuJoCo)": (-54.5,),
    },
    "halfcheetah-dir": {
        "MAML (Finn et al. 2017, MuJoCo)": (-50.7, 293.2),
        "oracle (Finn et al. 2017, MuJoCo)": (442.7,),
    },
    "navigation-2d": {
        "MAML (Finn et al. 2017, Table 4)": (-40.41, -11.68, -3.33, -3.23),
        "context vector (Finn et al. 2017, Table 4)": (-42.42, -13.90, -5.17, -3.18),
    },
}

# MSE after 1 step as quoted from Li et al. 2017, Table 1 (frequency U[0.8, 1.2]); the 10-shot entries could not
# be confirmed against a copy of the paper. Finn et al. 2017 (frequency 1) report 5-shot figures after 1/5/10 steps.
REFERENCE_META_SGD_PAPER = {
    5: {"maml": "1.13 ± 0.18", "meta_sgd": "0.90 ± 0.16"},
    10: {"maml": "0.77 (unconfirmed)", "meta_sgd": "0.53 (unconfirmed)"},
    20: {"maml": "0.48 ± 0.08", "meta_sgd": "0.31 ± 0.05"},
}
REFERENCE_MAML_PAPER = {"maml": (0.67, 0.38, 0.35), "pretrained": (2.41, 2.23, 2.19)}


def physics(env: str, backend: str) -> str:
    """A title's words for the physics: `", <backend> backend"` for a brax family, "" for the others."""
    return f", {backend} backend" if env in envs.FAMILIES else ""


def reference_caption(env: str, backend: str) -> str:
    """What Finn et al.'s numbers beside a run of `env` on `backend` are: comparable on MuJoCo's physics (the
    `mujoco` backend is MuJoCo's C library), shapes only on another physics."""
    if env not in envs.FAMILIES:
        return "Reference (Finn et al. 2017)"
    if backend == "mujoco":
        return (
            "Finn et al. 2017 on MuJoCo, the physics of this run: comparable numbers, after MAML-RL's training (40 "
            "tasks x 20 trajectories x 2 rounds per meta-iteration, up to 1000 meta-iterations in its cheetah script: "
            "up to 320M env steps)"
        )
    return f"Reference (Finn et al. 2017, MuJoCo; this run's physics is {backend}: compare shapes)"


def paper_returns(env: str, backend: str) -> dict[str, tuple[float, ...]]:
    """Finn et al.'s returns after 0, 1, ... steps by method ("MAML", "pretrained", "random init", "oracle") where
    they compare with a run of `env` on `backend` as numbers: the brax families on MuJoCo's physics, navigation;
    else {}."""
    if env in envs.FAMILIES and backend != "mujoco":
        return {}
    return {name.split(" (")[0]: values for name, values in REFERENCES.get(env, {}).items()}


def beside_the_paper(env: str, backend: str, ours: dict[str, Sequence[float]]) -> str:
    """`ours` (method -> return after 0 and 1 steps) beside Finn et al.'s, for the methods both report:
    "MAML a → b (Finn et al. c → d); ..."; "" where the numbers do not compare (`paper_returns`)."""
    paper = paper_returns(env, backend)
    arrow = lambda values: " → ".join(f"{v:.1f}" for v in values[:2])
    pairs = [
        f"{name} {arrow(values)} (Finn et al. {arrow(paper[name])})" for name, values in ours.items() if name in paper
    ]
    return "; ".join(pairs)


def format_mean_ci(mean: float, half: float, digits: int = 1) -> str:
    """`"mean ± half-width"`, or "diverged" where the mean is not finite or exceeds 1e6."""
    return f"{mean:.{digits}f} ± {half:.{digits}f}" if np.isfinite(mean) and abs(mean) < 1e6 else "diverged"


def format_ci(values: np.ndarray, digits: int = 1) -> list[str]:
    """`format_mean_ci` per column of `values` `[n, ...]` (95% CI over the leading axis)."""
    mean, half = mean_ci(values)
    return [format_mean_ci(m, h, digits) for m, h in zip(np.atleast_1d(mean), np.atleast_1d(half), strict=True)]


def gap_closed(curves: dict, oracle: np.ndarray | None) -> dict:
    """Fraction of the random-init → oracle gap closed after 0 and 1 steps (Finn et al.'s MuJoCo HalfCheetah-Vel:
    MAML 0.63 → 0.88, pretrained 0.48 → 0.60), from per-task means pooled over seeds."""
    if oracle is None or "random init" not in curves:
        return {}
    floor, ceiling = float(np.mean(curves["random init"][:, 0])), float(np.mean(oracle))
    return {
        name: [(float(np.mean(returns[:, k])) - floor) / (ceiling - floor) for k in range(min(2, returns.shape[1]))]
        for name, returns in curves.items()
        if name != "random init"
    }


def paired_gains(curves: dict) -> dict:
    """Per method, the paired change in return from 0 steps after each step `[K]` (mean and 95% CI half-width)."""
    gains = {}
    for name, returns in curves.items():
        mean, half = mean_ci(returns[:, 1:] - returns[:, :1])
        gains[name] = {"mean": mean, "ci95": half}
    return gains


def both_finite(curves: dict, a: str, b: str) -> np.ndarray:
    """The tasks `[E]` on which `curves[a]` and `curves[b]` (`[E, K + 1]`) are finite at every step: where a
    method's adaptation diverged on a task, a paired comparison leaves that task out for both."""
    return np.isfinite(curves[a]).all(axis=1) & np.isfinite(curves[b]).all(axis=1)


def paired_difference(curves: dict, a: str, b: str) -> dict | None:
    """Mean and CI of `curves[a] − curves[b]` per step (same tasks and keys) over the tasks both keep finite
    (`tasks` of them), or None if either is missing."""
    if a not in curves or b not in curves:
        return None
    finite = both_finite(curves, a, b)
    mean, half = mean_ci((curves[a] - curves[b])[finite])
    return {"mean": mean, "ci95": half, "tasks": int(finite.sum())}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], float_format: str = ".3f") -> str:
    """A Markdown table; a `|` inside a cell (`|v - goal|`) is escaped, or it would split the cell and the table."""

    def fmt(value):
        text = format(value, float_format) if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(fmt, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_adaptation(path: Path, curves: dict, oracle: np.ndarray | None, reference: dict):
    """Return after each adaptation round per method (`curves[name]: [tasks, K + 1]`), the paper's rows in grey and
    the oracle as a dashed line."""
    fig, ax = new_figure(figsize=(6, 3.8))
    for name, returns in curves.items():
        steps = plot_ci_curve(ax, returns, name)
    curves_of_reference = [(name, values) for name, values in reference.items() if len(values) > 1]  # no oracles
    for (name, values), marker in zip(curves_of_reference, "xs^v", strict=False):
        shown = values[: steps.size]
        ax.plot(np.arange(len(shown)), shown, color="grey", ls=":", marker=marker, mfc="none", label=name)
    if oracle is not None:
        mean, half = mean_ci(oracle)
        ax.axhline(mean, color="k", ls="--", label=f"oracle ({mean:.1f} ± {half:.1f})")
    ax.set_xticks(steps)
    ax.set_xlabel("adaptation rounds on the held-out task")
    ax.set_ylabel("episode return\n(mean, 95% CI over tasks and seeds)")
    ax.legend(fontsize=8)
    save_figure(fig, path)
