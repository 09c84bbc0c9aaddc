"""The machine-independent XLA flags: how they join a user's own, and what an entry point sets before JAX starts."""

import json
import os
import subprocess
import sys

from ssm_jax.xla_flags import PORTABLE_CPU, USER_FLAGS_VARIABLE, flag_names, with_flags


def test_a_flag_the_user_set_wins_and_the_others_are_added_once():
    user = "--xla_cpu_max_isa=AVX512 --xla_force_host_platform_device_count=4"
    merged = with_flags(user, PORTABLE_CPU)
    assert merged.startswith(user) and merged.count("xla_cpu_max_isa") == 1
    assert flag_names(merged) == flag_names(user) | set(PORTABLE_CPU)
    assert with_flags(merged, PORTABLE_CPU) == merged


def _entry_point_environment(**env: str) -> dict:
    """The environment after `import experiments` (an entry point's preparation) in a fresh interpreter."""
    script = "import json, os, experiments; print(json.dumps(dict(os.environ)))"
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", USER_FLAGS_VARIABLE, "TF_CPP_MIN_LOG_LEVEL")}
    done = subprocess.run(
        [sys.executable, "-c", script], env={**base, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_an_entry_point_adds_the_portable_flags_keeps_the_users_and_quiets_xlas_own_log():
    user = "--xla_force_host_platform_device_count=2"
    env = _entry_point_environment(XLA_FLAGS=user)
    assert env["XLA_FLAGS"] == with_flags(user, PORTABLE_CPU) and env[USER_FLAGS_VARIABLE] == user
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3"  # XLA's C++ log ("Very slow compile?") stays off the terminal
    assert _entry_point_environment(TF_CPP_MIN_LOG_LEVEL="0")["TF_CPP_MIN_LOG_LEVEL"] == "0"  # unless the user says
