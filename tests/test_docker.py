"""The Dockerfile installs and runs what README command 1 tells a newcomer (parsed, not built: no Docker engine
exists on these machines)."""

import json
import re
from pathlib import Path

from experiments import halfcheetah_vel

ROOT = Path(__file__).resolve().parent.parent


def _readme_command_1() -> str:
    return re.findall(r"```bash\n(.*?)\n\s*```", (ROOT / "README.md").read_text(), re.S)[0].strip()


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())  # join continued lines
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_dockerfile_installs_with_readme_command_1_and_runs_the_flagship_smoke_preset():
    install, module = _readme_command_1().split(" && python -m ", 1)
    assert install == "python3 -m venv .venv && . .venv/bin/activate && pip install -e . -c constraints.txt"
    instructions = _dockerfile_instructions()
    runs = [argument for op, argument in instructions if op == "RUN"]
    assert any(argument.startswith(install) for argument in runs), f"no RUN starts with README's install: {runs}"
    command = json.loads(next(argument for op, argument in instructions if op == "CMD"))
    assert command == ["python", "-m", module, "--preset", "smoke"] and "smoke" in halfcheetah_vel.PRESETS
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in instructions and ("FROM", "${BASE_IMAGE}") in instructions
    assert ("USER", "ssm") in instructions  # not root
    assert any(op == "ARG" and argument.startswith("JAX_EXTRA=") for op, argument in instructions)  # the CUDA image
    assert {".git", ".venv", "runs"} <= set((ROOT / ".dockerignore").read_text().split())
    install_page = (ROOT / "docs" / "install.md").read_text()
    assert "docker build -t ssm-jax ." in install_page and "docker run --rm ssm-jax" in install_page
