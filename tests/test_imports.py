"""Importing the library has no side effects: brax loads with the first brax family built, matplotlib with the
first figure drawn, so a notebook's plotting backend is left as it was."""

from __future__ import annotations

import signal
import subprocess
import sys


def test_importing_the_library_loads_neither_brax_nor_matplotlib_nor_starts_a_jax_backend():
    """Nor does building every named config: `jax.distributed.initialize()` (`experiments.sweep --distributed`)
    must run before any backend starts."""
    script = (
        "import sys\n"
        "import ssm_jax, ssm_jax.envs, ssm_jax.trainers, ssm_jax.agent, ssm_jax.cli, ssm_jax.report, ssm_jax.sweep\n"
        "import ssm_jax.config.registry, ssm_jax.config.programs\n"
        "import experiments.sweep, experiments.budget_study, experiments.benchmark\n"
        "from jax._src import xla_bridge\n"  # private, for the test only: JAX has no public probe
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'brax', 'mujoco', 'matplotlib'}))\n"
        "print(xla_bridge.backends_are_initialized())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "False"]


def test_drawing_a_figure_sets_no_global_backend():
    script = (
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "from ssm_jax.report import new_figure, save_figure\n"
        "fig, ax = new_figure(figsize=(2, 2))\n"
        "ax.plot([0, 1])\n"
        "save_figure(fig, sys.argv[1])\n"
        "import matplotlib.pyplot as plt\n"
        "print(matplotlib.get_backend(), plt.get_fignums())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import sys\n" + script, "/dev/null"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg []"


def test_the_command_line_sets_its_ctrl_c_abort_before_it_imports_jax():
    """`python -m ssm_jax` installs `interrupts.abort` first: a Ctrl-C while JAX loads (seconds) exits 130 cleanly."""
    script = (
        "import sys, signal\n"
        "import ssm_jax.__main__, ssm_jax.interrupts\n"
        "print('jax' in sys.modules, signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n"
    )
    # A shell's background job inherits SIGINT ignored, and Python then keeps it so: start from the default.
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, preexec_fn=restore
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]  # importing installs nothing; main() does, then imports JAX
