"""Which report a run gets, and the end every run's `main` shares: `WRITERS` maps the class of a run's config to the
`write_report(run_dir, config) -> markdown` of its kind of run; `publish` writes results.json, the report from it,
and says where the run is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssm_jax import run_files
from ssm_jax.config.family import InContextRunConfig, RunConfig, SinusoidRunConfig, WorldModelRunConfig
from ssm_jax.config.studies import BenchmarkArgs, LeverArgs, ReplayArgs, ReplayWorldModelArgs, StudyArgs, SweepArgs
from ssm_jax.report import benchmark, budget_study, in_context, levers, meta_rl, replay, sinusoid, sweep, world_model

WRITERS = {
    RunConfig: meta_rl.write_report,
    StudyArgs: budget_study.write_report,
    LeverArgs: levers.write_report,
    InContextRunConfig: in_context.write_report,
    SinusoidRunConfig: sinusoid.write_report,
    WorldModelRunConfig: world_model.write_report,
    BenchmarkArgs: benchmark.write_report,
    SweepArgs: sweep.write_report,
    ReplayArgs: replay.write_report,
    ReplayWorldModelArgs: replay.write_report,
}
"""Each kind of run's `write_report(run_dir, config) -> markdown`, by the class of the config it records."""


def write_report(run_dir: Path, config: Any) -> str:
    """results.md and its plots for the run in `run_dir` from its recorded files, by the writer of `config`'s kind of
    run; returns the markdown."""
    return WRITERS[type(config)](run_dir, config)


def publish(run_dir: Path, results: dict, config: Any, final: bool = True) -> str:
    """`results` as `run_dir/results.json`, then the report made from it (`write_report`); when `final`, prints the
    report and `results in <run_dir>`. A study publishes after each finished part with `final=False`, so a stopped
    study keeps the parts it finished. Returns the report's markdown."""
    run_files.write_json(run_dir / "results.json", results)
    report = write_report(run_dir, config)
    if final:
        print(report)
        print(f"results in {run_dir}")
    return report
