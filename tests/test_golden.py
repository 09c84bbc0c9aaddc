"""Golden smoke results: the smoke preset of each flagship experiment, run as it is, reproduces the `results.json`
committed under `tests/golden/`. Counts and names match exactly; floats to rtol 1e-4 (atol 1e-5), which a change of
the maths exceeds and rounding on machines of one kind does not (XLA on CPU is deterministic run to run).

A change that alters a golden file regenerates it in the same commit (`SSM_JAX_UPDATE_GOLDEN=1 python -m pytest
tests/test_golden.py --runslow`, on each kind of machine that has a directory) and says why in CHANGELOG.md. Each
directory `tests/golden/<kind>/` holds one kind of machine's numbers (its `machine.json`: CPU, AVX-512,
architecture, jaxlib): XLA compiles for the CPU it runs on, and a training run carries another CPU's rounding
far past any tolerance, so the test compares with the directory of the kind it runs on and is skipped, saying so,
where none exists (recording on a new kind makes its directory).
"""

import dataclasses
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
from pathlib import Path

import jax
import pytest

from ssm_jax.runs import to_python

GOLDEN = Path(__file__).parent / "golden"
EXPERIMENTS = ("navigation", "sinusoid", "world_model", "halfcheetah_vel")
UNRECORDED = ("run_dir", "seconds")
"""Keys whose values name where or how fast a run went (any key containing one of these), not what it computed."""


def _recorded(value):
    """`value` without the keys of `UNRECORDED`, as plain JSON values."""
    if isinstance(value, dict):
        return {k: _recorded(v) for k, v in value.items() if not any(word in k for word in UNRECORDED)}
    if isinstance(value, list | tuple):
        return [_recorded(v) for v in value]
    return value


def _differences(got, want) -> list[str]:
    """Where `got` departs from `want`: tree structure, counts and strings exactly, floats beyond rtol 1e-4."""
    if jax.tree.structure(got) != jax.tree.structure(want):
        return [f"the structure differs: {jax.tree.structure(got)} != {jax.tree.structure(want)}"]
    differences = []
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True):
        if isinstance(w, float) and isinstance(g, float):
            same = (math.isnan(g) and math.isnan(w)) or math.isclose(g, w, rel_tol=1e-4, abs_tol=1e-5)
        else:
            same = g == w and type(g) is type(w)
        if not same:
            differences.append(f"{jax.tree_util.keystr(path)}: {g!r} != {w!r}")
    return differences


def _machine() -> dict:
    """The kind of machine the numbers depend on: the CPU's name, whether it has AVX-512 (XLA vectorises for it, and
    two "AMD EPYC" machines, one with and one without, rounded the sinusoid smoke run differently), the architecture
    and jaxlib."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    models = re.findall(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    cpu = models[0].strip() if models else platform.processor()
    return {
        "cpu": cpu,
        "avx512": "avx512f" in text,
        "architecture": platform.machine(),
        "jaxlib": importlib.metadata.version("jaxlib"),
    }


def _golden_directory(machine: dict) -> Path | None:
    """The directory of `machine`'s kind under `GOLDEN`, or None where none was recorded. A directory whose
    machine.json names fewer fields (recorded before `avx512` was one) matches on those it names; one that names
    them all wins."""
    recorded = [(json.loads(path.read_text()), path.parent) for path in sorted(GOLDEN.glob("*/machine.json"))]
    matching = [(len(kind), directory) for kind, directory in recorded if kind.items() <= machine.items()]
    return max(matching, key=lambda match: match[0])[1] if matching else None


def _kind_name(machine: dict) -> str:
    """A directory name for a new kind: the CPU's first two words, AVX-512 where it has it, the architecture and
    jaxlib, e.g. `amd-epyc-avx512-x86_64-jaxlib-0.10.2`."""
    words = re.sub(r"\(.*?\)", "", machine["cpu"]).lower().split()[:2]
    isa = ["avx512"] if machine["avx512"] else []
    return "-".join([*words, *isa, machine["architecture"], "jaxlib", machine["jaxlib"]])


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_smoke_preset_reproduces_its_golden_results(name, tmp_path):
    machine = _machine()
    directory = _golden_directory(machine)
    updating = os.environ.get("SSM_JAX_UPDATE_GOLDEN") == "1"
    if updating and (directory is None or json.loads((directory / "machine.json").read_text()) != machine):
        directory = GOLDEN / _kind_name(machine)
        directory.mkdir(exist_ok=True)
        (directory / "machine.json").write_text(json.dumps(machine, indent=1) + "\n")
    elif directory is None:
        recorded = [json.loads(path.read_text()) for path in sorted(GOLDEN.glob("*/machine.json"))]
        pytest.skip(f"no golden results for this kind of machine, {machine}; recorded on {recorded}")
    golden = directory / f"{name}_smoke.json"
    if not updating and not golden.exists():
        pytest.skip(f"no golden results of {name} for this kind of machine ({directory.name}): record them there")
    experiment = importlib.import_module(f"experiments.{name}")
    experiment.main(dataclasses.replace(experiment.PRESETS["smoke"], out_dir=str(tmp_path)))
    (run_dir,) = tmp_path.iterdir()
    got = _recorded(to_python(json.loads((run_dir / "results.json").read_text())))
    if updating:
        golden.write_text(json.dumps(got, indent=1, allow_nan=True) + "\n")
    differences = _differences(got, json.loads(golden.read_text()))
    assert not differences, f"{len(differences)} values differ from {golden.name}: " + "; ".join(differences[:10])
