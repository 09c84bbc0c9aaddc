"""Test-time adaptation: pure `standard` / `hybrid` adapters, guards, strategies, online helper."""

from ssm_jax.adapt.adapter import (
    ADAPTATION_MODES,
    Adapter,
    AdapterConfig,
    AdaptState,
    MetaFeatures,
    make_adapter,
)
from ssm_jax.adapt.online import OnlineAdaptation, OnlineState, make_online_adaptation
from ssm_jax.adapt.strategies import get_strategy, predictive_entropy, register_strategy, strategy_names

__all__ = [
    "ADAPTATION_MODES",
    "AdaptState",
    "Adapter",
    "AdapterConfig",
    "MetaFeatures",
    "OnlineAdaptation",
    "OnlineState",
    "get_strategy",
    "make_adapter",
    "make_online_adaptation",
    "predictive_entropy",
    "register_strategy",
    "strategy_names",
]
