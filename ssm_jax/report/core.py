"""Confidence intervals and curve plots, shared by the CLI, the experiments and the notebook.

Figures are `matplotlib.figure.Figure` objects made without pyplot: drawing a file sets no global backend, so
importing this module (or plotting with it) leaves a notebook's inline plotting as it was, and matplotlib loads only
when a figure is made."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ssm_jax import distributed


def steps_label(k: int) -> str:
    """`"1 step"`, `"k steps"`: the column and legend label of k adaptation steps."""
    return f"{k} step{'' if k == 1 else 's'}"


def mean_ci(values: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% normal-approximation half-width over `axis`."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    with np.errstate(invalid="ignore", over="ignore"):  # diverged runs give inf/nan, reported as such
        mean = values.mean(axis=axis)
        half = 1.96 * values.std(axis=axis, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean, half


def aligned_table(rows: list[list[str]]) -> str:
    """`[[name, value], ...]` as lines with the names left-aligned in one column."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any):
    """`(figure, axes)` as `pyplot.subplots(nrows, ncols, **kwargs)` returns them, without pyplot's global state."""
    from matplotlib.figure import Figure

    subplot_keys = ("sharex", "sharey", "squeeze", "width_ratios", "height_ratios", "subplot_kw", "gridspec_kw")
    subplot_kwargs = {key: kwargs.pop(key) for key in subplot_keys if key in kwargs}
    fig = Figure(**kwargs)
    return fig, fig.subplots(nrows, ncols, **subplot_kwargs)


def save_figure(fig, path: Path) -> None:
    """Writes `fig` to `path` (PNG, tight layout); under several processes only process 0 writes."""
    if not distributed.is_writer():
        return
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_ci_curve(ax, values: np.ndarray, label: str, band: bool = False):
    """Mean over the leading axis of `values` `[n, K + 1]` against steps 0..K, with its 95% CI as error bars (or a
    shaded band)."""
    return plot_mean_ci_curve(ax, *mean_ci(values), label, band)


def plot_mean_ci_curve(ax, mean: np.ndarray, half: np.ndarray, label: str, band: bool = False):
    """`mean` `[K + 1]` against steps 0..K with the 95% CI half-widths `half` as error bars (or a shaded band);
    returns the steps."""
    steps = np.arange(mean.size)
    if band:
        ax.plot(steps, mean, marker="o", ms=3, label=label)
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    else:
        ax.errorbar(steps, mean, yerr=half, marker="o", capsize=3, label=label)
    return steps
