"""The front door: a README of at most 150 lines whose links resolve and whose quickstart runs, and a documentation
site that builds with `mkdocs build --strict`, its API reference covering every public module."""

import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ssm_jax

ROOT = Path(__file__).parent.parent


def test_the_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    targets = re.findall(r"\]\(([^)#]+)\)", readme)
    local = [target for target in targets if not target.startswith("http")]
    assert len(local) >= 10 and all((ROOT / target).exists() for target in local), local


def _public_modules() -> list[str]:
    found = pkgutil.walk_packages(ssm_jax.__path__, "ssm_jax.")
    return sorted(m.name for m in found if not any(part.startswith("_") for part in m.name.split(".")))


def test_the_site_builds_strictly_and_its_api_reference_lists_every_public_module(tmp_path):
    documented = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: (\S+)$", page.read_text(), re.MULTILINE))
    assert documented == set(_public_modules())
    navigation = (ROOT / "mkdocs.yml").read_text()
    assert all(f"api/{page.name}" in navigation for page in (ROOT / "docs" / "api").glob("*.md"))
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ssm_jax.runs.train_phase" in (tmp_path / "site" / "api" / "runs" / "index.html").read_text()


@pytest.mark.slow
def test_the_readme_quickstart_runs_eight_runs_as_one_program(capsys):
    snippet = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["returns"].shape == (8, 16, namespace["config"].evaluation.adapt_rounds + 1)
    assert len(capsys.readouterr().out.strip().splitlines()) == 8  # one curve per run
