"""Results pages: a recorded run's results.md and plots regenerated from its recorded files alone (config.json,
results.json, metrics.jsonl where the plots need it, provenance.json), by the `write_report` of the kind of run its
config records (`writers.WRITERS`), with its provenance and any explained config drift under its title; the check
that a page still renders from its files; and the headline table of the navigation page. `experiments.results_pages` is
the command."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ssm_jax.config.io import read_config
from ssm_jax.report import provenance
from ssm_jax.report.compare import REFERENCES, format_mean_ci, markdown_table
from ssm_jax.report.core import steps_label
from ssm_jax.report.writers import write_report

DRIFT = "drift.json"
"""A page's explained config drift: `{field: {"now": today's value, "why": why the page still stands}}`, for a
default changed since the recording (rendered under its provenance)."""
RECORDED = ("config.json", "results.json", "runs.json", "metrics.jsonl", provenance.FILE, DRIFT)
"""The files of a recorded run; everything else in its directory is generated."""


def render(page_dir: Path) -> None:
    """Rewrites `page_dir`'s results.md and plots from its recorded files."""
    recorded = json.loads((page_dir / provenance.FILE).read_text())
    config = read_config(page_dir / "config.json")
    body = write_report(page_dir, config)
    title, rest = body.split("\n\n", 1)
    note = drift_note(page_dir)
    header = provenance.describe(recorded) + (f"\n\n{note}" if note else "")
    (page_dir / "results.md").write_text(f"{title}\n\n{header}\n\n{rest}")


def pages(root: Path) -> list[Path]:
    """The recorded runs' directories under `root`."""
    return sorted(path.parent for path in root.glob(f"*/{provenance.FILE}"))


def differences(page_dir: Path) -> list[str]:
    """The generated files of `page_dir` that its recorded files no longer reproduce: results.md byte for byte,
    plots pixel for pixel (to a mean difference of 1e-3, as font rendering may differ between builds)."""
    from matplotlib.image import imread

    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / page_dir.name
        fresh.mkdir()
        for name in RECORDED:
            if (page_dir / name).exists():
                shutil.copy(page_dir / name, fresh / name)
        render(fresh)
        generated = sorted(p.name for p in fresh.iterdir() if p.name not in RECORDED)
        committed = sorted(p.name for p in page_dir.iterdir() if p.name not in RECORDED)
        found = [f"{page_dir.name}: files {committed} != regenerated {generated}"] if generated != committed else []
        for name in set(generated) & set(committed):
            new, old = fresh / name, page_dir / name
            if name.endswith(".png"):
                a, b = imread(new), imread(old)
                same = a.shape == b.shape and float(np.mean(np.abs(a - b))) < 1e-3
            else:
                same = new.read_text() == old.read_text()
            if not same:
                found.append(f"{page_dir.name}/{name} differs from what its recorded run renders")
        return found


def drift_note(page_dir: Path) -> str:
    """The page's explained drift as a paragraph ('' without any)."""
    if not (page_dir / DRIFT).exists():
        return ""
    explained = json.loads((page_dir / DRIFT).read_text())
    items = "; ".join(f"`{field}` is now {entry['now']!r}: {entry['why']}" for field, entry in explained.items())
    return f"Defaults changed since this run was recorded: {items}."


HEADLINE_PAGE = "navigation"
HEADLINE_BEGIN = "<!-- headline: rendered by python -m experiments.results_pages from docs/results/navigation -->"
HEADLINE_END = "<!-- /headline -->"


def headline(link_prefix: str, root: Path) -> str:
    """The headline: the recorded navigation run's MAML and random-init rows beside Finn et al.'s Table 4, with its
    command, commit and wall time; links start with `link_prefix` (the path from the including file to docs/)."""
    page_dir = root / HEADLINE_PAGE
    results = json.loads((page_dir / "results.json").read_text())
    recorded = json.loads((page_dir / provenance.FILE).read_text())
    config = read_config(page_dir / "config.json")
    steps = range(config.evaluation.adapt_rounds + 1)
    ours = lambda name: list(map(format_mean_ci, results["returns"][name], results["returns_ci95"][name]))
    (paper,) = [values for name, values in REFERENCES[config.env].items() if name.startswith("MAML")]
    table = markdown_table(
        ["", *[steps_label(k) for k in steps]],
        [
            ["MAML, ours", *ours("MAML + standard")],
            ["MAML, Finn et al. 2017", *[f"{value:.2f}" for value in paper]],
            ["random init, ours", *ours("random init")],
        ],
    )
    link = f"{link_prefix}results/{HEADLINE_PAGE}/results.md"
    return (
        f"**2D navigation reproduces Finn et al.'s Table 4** ({config.trainer.outer_optimizer.upper()} outer steps; "
        f"{config.num_seeds} seeds pooled, {config.num_seeds * config.evaluation.eval_tasks} held-out goals; mean "
        f"return, 95% CI; [the recorded run]({link}): `{recorded['command']}` at commit {recorded['commit']}, "
        f"{provenance.wall_time(recorded['seconds'])} on a {provenance.describe_machine(recorded['machine'])}):\n\n"
        f"{table}"
    )


def with_headline(text: str, link_prefix: str, root: Path) -> str:
    """`text` with the block between the headline markers replaced by `headline(link_prefix, root)`."""
    before, rest = text.split(HEADLINE_BEGIN + "\n", 1)
    _, after = rest.split(HEADLINE_END, 1)
    return f"{before}{HEADLINE_BEGIN}\n{headline(link_prefix, root)}\n{HEADLINE_END}{after}"
