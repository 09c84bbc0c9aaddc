"""XLA's CPU flags that make a program's numbers the same on every x86-64 machine, and how they join a user's own.

    os.environ["XLA_FLAGS"] = with_flags(os.environ.get("XLA_FLAGS", ""), PORTABLE_CPU)  # before JAX is imported

By default XLA's CPU backend picks its kernels for the machine it runs on, so two machines (even two that report
the same CPU name) round one program differently, and a training run carries that difference far past any
tolerance. Measured with jaxlib 0.10.2 on a 2-core AMD EPYC with AVX-512 (`tests/test_golden.py`'s note):
- YNNPACK fusions (reductions, some dots) split their work over the threads the process may use and choose their
  kernels by the CPU's features: a `sum` over 2,500 rows gave other bits on one core than on two, and the sinusoid
  smoke run differed by up to 28% between one and two cores;
- "platform dependent math" lets XLA use faster approximations chosen per CPU;
- LLVM vectorises for the newest instruction set the CPU has.
With YNNPACK's fusions off, platform-dependent math off and the instruction set capped at AVX2 (what every x86-64
CPU of the last decade has), the four golden smoke runs gave the same bits on one core as on two. Eigen's dots remain
(they split long contractions over threads: bit-identical here across thread counts for every golden run, but a
machine whose caches differ may block them differently).

`configure_entry_point()` is what `ssm-jax` and `python -m experiments.x` call before JAX loads (XLA reads its flags
once): the portable flags, each unless the user's XLA_FLAGS set it, and XLA's own C++ log kept off the terminal
(`TF_CPP_MIN_LOG_LEVEL=3`, unless set: XLA's "Very slow compile?" banner is an internal's, not the user's concern; a
failure still reaches the user as a Python exception). This module imports nothing heavy.
"""

from __future__ import annotations

import os
import platform

PORTABLE_CPU: dict[str, object] = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_cpu_enable_platform_dependent_math": False,
    **({"xla_cpu_max_isa": "AVX2"} if platform.machine().lower() in ("x86_64", "amd64") else {}),
}
"""Flags that make CPU numbers independent of the machine (the instruction-set cap only on x86-64)."""
USER_FLAGS_VARIABLE = "SSM_JAX_USER_XLA_FLAGS"
"""Where an entry point (or the test suite) keeps the XLA_FLAGS the user started it with."""


def flag_names(flags: str) -> set[str]:
    """The names of the flags in an `XLA_FLAGS` string (`--name=value` or `--name`)."""
    return {flag.split("=")[0].lstrip("-") for flag in flags.split()}


def with_flags(flags: str, added: dict[str, object]) -> str:
    """`flags` (an `XLA_FLAGS` string) plus each of `added` that it does not set already: a flag the user set wins."""
    present = flag_names(flags)
    extra = [f"--{name}={_text(value)}" for name, value in added.items() if name not in present]
    return " ".join([flags, *extra]).strip()


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def configure_entry_point() -> None:
    """Sets this process's `XLA_FLAGS` to the user's plus `PORTABLE_CPU` (each flag the user did not set), and
    `TF_CPP_MIN_LOG_LEVEL` to 3 unless the user set it. The user's own flags stay in `USER_FLAGS_VARIABLE` (what a
    recorded command names). Call it before JAX is first used."""
    given = os.environ.get("XLA_FLAGS", "")  # the user's, or what a parent (a launcher, the tests) passed on
    os.environ.setdefault(USER_FLAGS_VARIABLE, given)
    os.environ["XLA_FLAGS"] = with_flags(given, PORTABLE_CPU)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
