"""The one layer that writes a run's results: numbers with CIs, comparisons, tables, figures, provenance.

| module | what lives there |
|---|---|
| `core` | confidence intervals, step labels, aligned tables, figures made without pyplot's global state |
| `compare` | paired differences and gains, formatted CIs, markdown tables, the adaptation plot, the papers' numbers |
| `provenance` | where a recorded run came from: command, commit, machine, wall time |
| one per kind of run | `write_report(run_dir, config)`: results.md and its plots from the recorded files alone |
| `writers` | which kind of run gets which `write_report`; `publish`, the end of every run: results.json, report, path |
| `pages` | the results pages: every recorded run's page rendered and checked, the headline table |

The kinds of run: `meta_rl`, `in_context`, `world_model`, `sinusoid`, `budget_study`, `levers`, `replay`, `sweep`,
`benchmark`. matplotlib loads with the first figure drawn, never on import.
"""

from ssm_jax.report.compare import (
    REFERENCE_MAML_PAPER,
    REFERENCE_META_SGD_PAPER,
    REFERENCES,
    beside_the_paper,
    both_finite,
    format_ci,
    format_mean_ci,
    gap_closed,
    markdown_table,
    paired_difference,
    paired_gains,
    paper_returns,
    physics,
    plot_adaptation,
    reference_caption,
)
from ssm_jax.report.core import (
    aligned_table,
    mean_ci,
    new_figure,
    plot_ci_curve,
    plot_mean_ci_curve,
    save_figure,
    steps_label,
)

__all__ = [
    "REFERENCES",
    "REFERENCE_MAML_PAPER",
    "REFERENCE_META_SGD_PAPER",
    "aligned_table",
    "beside_the_paper",
    "both_finite",
    "format_ci",
    "format_mean_ci",
    "gap_closed",
    "markdown_table",
    "mean_ci",
    "new_figure",
    "paired_difference",
    "paired_gains",
    "paper_returns",
    "physics",
    "plot_adaptation",
    "plot_ci_curve",
    "plot_mean_ci_curve",
    "reference_caption",
    "save_figure",
    "steps_label",
]
