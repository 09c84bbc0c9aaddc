"""The results pages: every results table and plot in the docs, regenerated from the recorded runs under
`docs/results/<name>/` (config.json, results.json, metrics.jsonl where the plots need it, and provenance.json: the
command, commit, wall time and machine of the run).

    python -m experiments.results_pages                          # rewrite every page and its plots
    python -m experiments.results_pages --check                  # exit 1 naming the pages that differ or are stale
    python -m experiments.results_pages --record RUN_DIR NAME    # copy a finished run into docs/results/NAME

Each page is the experiment's own results.md, rendered by its `write_report(run_dir, config)` (`WRITERS`) from
the recorded files alone (so the page and the run print the same), with the provenance under its title. The
headline table of README.md and docs/index.md (navigation against Finn et al.'s Table 4) is rendered from the
`navigation` page the same way, between its markers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from experiments.common import parse_args
from ssm_jax import envs
from ssm_jax.cli import exit_with_error
from ssm_jax.cli.parsing import config_differences
from ssm_jax.config import InContextRunConfig, RunConfig, SinusoidRunConfig, WorldModelRunConfig
from ssm_jax.config.io import read_config
from ssm_jax.config.studies import BenchmarkArgs, LeverArgs, ReplayArgs, ReplayWorldModelArgs, StudyArgs, SweepArgs
from ssm_jax.report import REFERENCES, format_mean_ci, markdown_table, provenance, steps_label
from ssm_jax.report import benchmark as benchmark_report
from ssm_jax.report import budget_study as budget_study_report
from ssm_jax.report import in_context as in_context_report
from ssm_jax.report import levers as levers_report
from ssm_jax.report import meta_rl as meta_rl_report
from ssm_jax.report import replay as replay_report
from ssm_jax.report import sinusoid as sinusoid_report
from ssm_jax.report import sweep as sweep_report
from ssm_jax.report import world_model as world_model_report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DRIFT = "drift.json"
"""A page's explained config drift: `{field: {"now": today's value, "why": why the page still stands}}`, for a
default changed since the recording (rendered under its provenance)."""
RECORDED = ("config.json", "results.json", "runs.json", "metrics.jsonl", provenance.FILE, DRIFT)
"""The files of a recorded run; everything else in its directory is generated."""

WRITERS = {
    RunConfig: meta_rl_report.write_report,
    StudyArgs: budget_study_report.write_report,
    LeverArgs: levers_report.write_report,
    InContextRunConfig: in_context_report.write_report,
    SinusoidRunConfig: sinusoid_report.write_report,
    WorldModelRunConfig: world_model_report.write_report,
    BenchmarkArgs: benchmark_report.write_report,
    SweepArgs: sweep_report.write_report,
    ReplayArgs: replay_report.write_report,
    ReplayWorldModelArgs: replay_report.write_report,
}
"""Each experiment's `write_report(run_dir, config) -> markdown`, by the class of the config it records."""


def render(page_dir: Path) -> None:
    """Rewrites `page_dir`'s results.md and plots from its recorded files."""
    recorded = json.loads((page_dir / provenance.FILE).read_text())
    config = read_config(page_dir / "config.json")
    body = WRITERS[type(config)](page_dir, config)
    title, rest = body.split("\n\n", 1)
    note = drift_note(page_dir)
    header = provenance.describe(recorded) + (f"\n\n{note}" if note else "")
    (page_dir / "results.md").write_text(f"{title}\n\n{header}\n\n{rest}")


def pages(root: Path = RESULTS) -> list[Path]:
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


UNCOMPARED = ("out_dir", "resume")
"""Config fields that say where a run was written, not what it computed."""


def _without_physics(config, field: str) -> bool:
    """Whether `field` is a physics backend that its config's task family never reads (navigation, gymnax)."""
    *parents, leaf = field.split(".")
    if leaf != "backend":
        return False
    for parent in parents:
        config = getattr(config, parent)
    return getattr(config, "env", None) not in envs.FAMILIES


def _plain(value):
    """A config value as JSON holds it (tuples as lists)."""
    return json.loads(json.dumps(value))


def drift_note(page_dir: Path) -> str:
    """The page's explained drift as a paragraph ('' without any)."""
    if not (page_dir / DRIFT).exists():
        return ""
    explained = json.loads((page_dir / DRIFT).read_text())
    items = "; ".join(f"`{field}` is now {entry['now']!r}: {entry['why']}" for field, entry in explained.items())
    return f"Defaults changed since this run was recorded: {items}."


def config_drift(page_dir: Path) -> list[str]:
    """Whether the page's command, run now, would run the config it recorded: the command's experiment and flags
    parsed against today's presets, compared field by field with the recorded config.json (as `config_io` reads it:
    a field added since reads as what the run used). A default changed since the recording (a preset's, or a config
    class's) makes the page stale: one line naming the field, so the page is re-recorded or the change undone."""
    recorded = json.loads((page_dir / provenance.FILE).read_text())
    words = [word for word in recorded["command"].split() if "=" not in word or word.startswith("-")]
    module, argv = importlib.import_module(words[2]), words[3:]
    stored = read_config(page_dir / "config.json")
    presets = getattr(module, "PRESETS", {})
    named = lambda config: getattr(config, "name", None) or getattr(config, "preset", None)
    base = [key for key, preset in presets.items() if type(preset) is type(stored) and named(preset) == named(stored)]
    if not base:
        return [f"{page_dir.name}: no preset of {words[2]} is named {named(stored)!r} any more"]
    current = parse_args(presets, base[0], argv)  # the command's own --preset, if it names one, is that base
    explained = json.loads((page_dir / DRIFT).read_text()) if (page_dir / DRIFT).exists() else {}
    drift = [
        (field, now, then)
        for field, now, then in config_differences(stored, current)
        if field.rsplit(".", 1)[-1] not in UNCOMPARED
        and field not in getattr(type(stored), "UNREAD_FIELDS", ())
        and not _without_physics(stored, field)
        and explained.get(field, {}).get("now") != _plain(now)
    ]
    return [
        f"{page_dir.name}: `{recorded['command']}` now runs {field}={now!r}, the recorded run {field}={then!r}: "
        "re-record the page"
        for field, now, then in drift[:3]
    ]


HEADLINE_PAGE = "navigation"
HEADLINE_FILES = {ROOT / "README.md": "docs/", ROOT / "docs" / "index.md": ""}
"""The files that show the headline table, each with the prefix of its links into docs/."""
HEADLINE_BEGIN = "<!-- headline: rendered by python -m experiments.results_pages from docs/results/navigation -->"
HEADLINE_END = "<!-- /headline -->"


def headline(link_prefix: str, root: Path = RESULTS) -> str:
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


def with_headline(text: str, link_prefix: str) -> str:
    """`text` with the block between the headline markers replaced by `headline(link_prefix)`."""
    before, rest = text.split(HEADLINE_BEGIN + "\n", 1)
    _, after = rest.split(HEADLINE_END, 1)
    return f"{before}{HEADLINE_BEGIN}\n{headline(link_prefix)}\n{HEADLINE_END}{after}"


def record(run_dir: Path, name: str, root: Path = RESULTS) -> Path:
    """Copies a finished run's recorded files into `root/name` and renders its page there."""
    if not (run_dir / provenance.FILE).exists():
        exit_with_error(f"{run_dir} has no {provenance.FILE}: record a run that `python -m experiments.x` finished")
    page_dir = root / name
    page_dir.mkdir(parents=True, exist_ok=True)
    for file in RECORDED:
        if (run_dir / file).exists():
            shutil.copy(run_dir / file, page_dir / file)
    render(page_dir)
    return page_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.results_pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    parser.add_argument("--record", nargs=2, metavar=("RUN_DIR", "NAME"), help="add a finished run as a page")
    args = parser.parse_args(argv)
    if args.record:
        print(f"wrote {record(Path(args.record[0]), args.record[1]) / 'results.md'}")
        return 0
    found = []
    for page_dir in pages():
        if args.check:
            found += differences(page_dir) + config_drift(page_dir)
        else:
            render(page_dir)
            print(f"wrote {page_dir / 'results.md'}")
    for path, link_prefix in HEADLINE_FILES.items():
        text = path.read_text()
        if args.check:
            found += [] if with_headline(text, link_prefix) == text else [f"{path.name}: the headline table differs"]
        else:
            path.write_text(with_headline(text, link_prefix))
            print(f"wrote the headline of {path}")
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
