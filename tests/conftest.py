"""CPU-only test setup: tiny configs and a fresh typed key per test."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

from ssm_jax.models import ModelConfig


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


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
def key():
    return jax.random.key(0)


@pytest.fixture
def tiny_config():
    return ModelConfig(input_dim=3, output_dim=2, state_dim=8, hidden_dim=16, num_layers=2, num_heads=2, window=6)
