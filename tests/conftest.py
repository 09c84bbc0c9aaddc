"""CPU-only test setup: tiny configs, a fresh typed key per test, one compilation cache per test session and a
cheaper XLA backend."""

import functools
import os
import shutil
import tempfile

from ssm_jax.xla_flags import PORTABLE_CPU, USER_FLAGS_VARIABLE, with_flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite is compile-bound: most tests build a program, run it for milliseconds and compare. XLA's CPU backend
# at LLVM -O0 without its expensive passes, emitting fusions with its classic IR emitter instead of the newer
# MLIR fusion emitters, compiles those programs 2-4x faster (the whole --runslow suite 22:00 -> 8:40 on 2
# cores) and computes the same HLO; only the machine code differs (two programs that fuse the same maths
# differently may then round apart by an ulp). The few execution-bound learning tests and the equivalence tests
# compile at XLA's defaults through `fully_optimised_jit`. The suite also runs with `xla_flags.PORTABLE_CPU`, so its
# numbers (the golden files' above all) are the same on every x86-64 machine. These flags are added to the user's
# own XLA_FLAGS, each unless the user sets it; SSM_JAX_TEST_FAST_XLA=0 leaves XLA_FLAGS untouched. The flags exist
# in the pinned jaxlib (pyproject: jaxlib 0.10.x); a jaxlib that drops one would refuse to start, so re-check them
# with each new pin.
FAST_TEST_XLA_FLAGS = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}
XLA_DEFAULT_OPTIMISATION = {
    "xla_backend_optimization_level": 3,
    "xla_llvm_disable_expensive_passes": False,
    "xla_cpu_use_fusion_emitters": True,
}
TEST_XLA_FLAGS = {**FAST_TEST_XLA_FLAGS, **PORTABLE_CPU}
# The flags the user started pytest with (xdist workers inherit the augmented XLA_FLAGS, and this).
USER_XLA_FLAGS = os.environ.setdefault(USER_FLAGS_VARIABLE, os.environ.get("XLA_FLAGS", ""))
if os.environ.get("SSM_JAX_TEST_FAST_XLA", "1") != "0":
    os.environ["XLA_FLAGS"] = with_flags(USER_XLA_FLAGS, TEST_XLA_FLAGS)
import jax  # noqa: E402  (after XLA_FLAGS: XLA reads them once, at start)
import pytest  # noqa: E402

from ssm_jax.models import ModelConfig  # noqa: E402

# Many tests build the same small programs again (a fresh closure is a fresh `jax.jit`, but the same HLO). One
# persistent compilation cache per session, which xdist workers and the tests' subprocesses inherit through the
# environment, turns those recompiles into loads. It starts empty every session, so no result or timing depends
# on an earlier run.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssm_jax_tests_xla_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Without `--runslow`, slow tests are skipped; with it, they run after every fast test (stable order)."""
    if config.getoption("--runslow"):
        items.sort(key=lambda item: "slow" in item.keywords)
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def xla_default_optimisation():
    """Compiler options that compile one program at XLA's default CPU optimisation whatever XLA_FLAGS say."""
    return XLA_DEFAULT_OPTIMISATION


@pytest.fixture
def fully_optimised_jit():
    """`jax.jit` that compiles at XLA's default CPU optimisation whatever XLA_FLAGS say (long learning runs)."""
    return functools.partial(jax.jit, compiler_options=XLA_DEFAULT_OPTIMISATION)


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def tiny_config():
    return ModelConfig(
        input_dim=3, output_dim=2, state_dim=8, hidden_dim=16, num_layers=2, num_heads=2, attention_span=6
    )


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory):
    """A finished tiny `ssm-jax train` run (`cli_runs.TINY`), made once per test process: what interrupted,
    resumed and extended runs must end as, and what `eval` and `adapt` read."""
    import cli_runs

    return cli_runs.train(tmp_path_factory.mktemp("uninterrupted"))
