"""The results pages: every results table and plot in the docs, regenerated from the recorded runs under
`docs/results/<name>/` (config.json, results.json, metrics.jsonl where the plots need it, and provenance.json: the
command, commit, wall time and machine of the run).

    python -m experiments.results_pages                          # rewrite every page and its plots
    python -m experiments.results_pages --check                  # exit 1 naming the pages that differ or are stale
    python -m experiments.results_pages --record RUN_DIR NAME    # copy a finished run into docs/results/NAME

Each page is the experiment's own results.md, rendered by its `write_report(run_dir, config)`
(`ssm_jax.report.writers.WRITERS`) from the recorded files alone (so the page and the run print the same), with
the provenance under its title. The
headline table of README.md and docs/index.md (navigation against Finn et al.'s Table 4) is rendered from the
`navigation` page the same way, between its markers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
from pathlib import Path

from experiments.common import parse_args
from ssm_jax import envs
from ssm_jax.config.io import read_config
from ssm_jax.config.parsing import config_differences, exit_with_error
from ssm_jax.report import provenance
from ssm_jax.report.pages import DRIFT, RECORDED, differences, pages, render, with_headline

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
HEADLINE_FILES = {ROOT / "README.md": "docs/", ROOT / "docs" / "index.md": ""}
"""The files that show the headline table, each with the prefix of its links into docs/."""
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
    for page_dir in pages(RESULTS):
        if args.check:
            found += differences(page_dir) + config_drift(page_dir)
        else:
            render(page_dir)
            print(f"wrote {page_dir / 'results.md'}")
    for path, link_prefix in HEADLINE_FILES.items():
        text = path.read_text()
        if args.check:
            found += (
                []
                if with_headline(text, link_prefix, RESULTS) == text
                else [f"{path.name}: the headline table differs"]
            )
        else:
            path.write_text(with_headline(text, link_prefix, RESULTS))
            print(f"wrote the headline of {path}")
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
