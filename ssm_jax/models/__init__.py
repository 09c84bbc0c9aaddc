"""Sequence models behind one interface: `make_model(name, ModelConfig(...))`."""

from ssm_jax.models.base import ModelConfig, SequenceModel
from ssm_jax.models.heads import (
    CategoricalHead,
    GaussianHead,
    GaussianParams,
    HeadedModel,
    RegressionHead,
    ValueHead,
    attach_heads,
)
from ssm_jax.models.registry import MODEL_NAMES, NetworkConfig, make_actor_critic, make_gaussian_policy, make_model

__all__ = [
    "MODEL_NAMES",
    "CategoricalHead",
    "GaussianHead",
    "GaussianParams",
    "HeadedModel",
    "ModelConfig",
    "NetworkConfig",
    "RegressionHead",
    "SequenceModel",
    "ValueHead",
    "attach_heads",
    "make_actor_critic",
    "make_gaussian_policy",
    "make_model",
]
