"""Golden smoke results: the smoke preset of each flagship experiment, run as it is, reproduces the `results.json`
committed under `tests/golden/`. Counts and names match exactly; floats to rtol 1e-4 (atol 1e-5), which a change of
the maths exceeds.

The numbers are the same on every machine of one architecture: the suite runs with `ssm_jax.xla_flags.PORTABLE_CPU`
(tests/conftest.py), which turns off what XLA chooses per CPU (YNNPACK's thread- and CPU-dependent kernels,
platform-dependent math, instruction sets past AVX2). Without them two "AMD EPYC" machines with AVX-512 disagreed
in 15 sinusoid values and 130 cheetah values, and one machine disagreed with itself between one core and two; with
them the four runs give the same bits on one core and on two. So there is one directory per architecture and
jaxlib, `tests/golden/<architecture>-jaxlib-<version>/`, whose `environment.json` names the XLA flags it was
recorded with; a run whose XLA_FLAGS override one of them is not comparable and says so.

A change that alters a golden file regenerates it in the same commit (`SSM_JAX_UPDATE_GOLDEN=1 python -m pytest
tests/test_golden.py --runslow`) and says why in CHANGELOG.md.
"""

import dataclasses
import importlib
import importlib.metadata
import json
import math
import os
import platform
from pathlib import Path

import jax
import pytest
from conftest import TEST_XLA_FLAGS

from ssm_jax.run_files import to_python
from ssm_jax.xla_flags import with_flags

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


def _environment() -> dict:
    """What the numbers depend on: the architecture, jaxlib and the XLA flags that pin XLA's CPU code."""
    return {
        "architecture": platform.machine(),
        "jaxlib": importlib.metadata.version("jaxlib"),
        "xla_flags": with_flags("", TEST_XLA_FLAGS),
    }


def _overridden(recorded_flags: str) -> list[str]:
    """The recorded flags not in effect in this process: set otherwise in the user's XLA_FLAGS (which win in
    conftest), or absent (SSM_JAX_TEST_FAST_XLA=0)."""
    given = {flag.split("=")[0]: flag for flag in os.environ.get("XLA_FLAGS", "").split()}
    return [flag for flag in recorded_flags.split() if given.get(flag.split("=")[0]) != flag]


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_smoke_preset_reproduces_its_golden_results(name, tmp_path):
    environment = _environment()
    directory = GOLDEN / f"{environment['architecture']}-jaxlib-{environment['jaxlib']}"
    updating = os.environ.get("SSM_JAX_UPDATE_GOLDEN") == "1"
    if updating:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "environment.json").write_text(json.dumps(environment, indent=1) + "\n")
    elif not directory.is_dir():
        recorded = sorted(path.name for path in GOLDEN.iterdir())
        pytest.skip(f"no golden results for {directory.name} (recorded: {', '.join(recorded)})")
    recorded_flags = json.loads((directory / "environment.json").read_text())["xla_flags"]
    overridden = _overridden(recorded_flags)
    if overridden:
        flags = " ".join(overridden)
        pytest.skip(f"the golden runs' {flags} are not in effect (XLA_FLAGS): the numbers are not comparable")
    experiment = importlib.import_module(f"experiments.{name}")
    experiment.main(dataclasses.replace(experiment.PRESETS["smoke"], out_dir=str(tmp_path)))
    (run_dir,) = tmp_path.iterdir()
    got = _recorded(to_python(json.loads((run_dir / "results.json").read_text())))
    golden = directory / f"{name}_smoke.json"
    if updating:
        golden.write_text(json.dumps(got, indent=1, allow_nan=True) + "\n")
    differences = _differences(got, json.loads(golden.read_text()))
    assert not differences, f"{len(differences)} values differ from {golden.name}: " + "; ".join(differences[:10])
