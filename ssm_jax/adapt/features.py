"""SSM-MetaRL's meta-features of test-time adaptation: moving statistics of a model's outputs on the batches it adapts
on (predictive entropy and confidence from logits; prediction variance and feature shift from any outputs)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax.adapt.strategies import predictive_entropy
from ssm_jax.types import Array


@struct.dataclass
class MetaFeatures:
    """Exponential moving statistics of the model's outputs on the adaptation batches (scalars)."""

    entropy: Array
    confidence: Array
    variance: Array
    output_mean: Array
    output_sq_mean: Array
    updates: Array

    @classmethod
    def zeros(cls) -> MetaFeatures:
        return cls(*(jnp.zeros((), jnp.float32) for _ in range(5)), updates=jnp.zeros((), jnp.int32))


def batch_features(aux: Any) -> dict:
    """Entropy, confidence, variance and mean/second moment of the outputs named in `aux` (zeros if none)."""
    zero = jnp.zeros((), jnp.float32)
    stats = {"entropy": zero, "confidence": zero, "variance": zero, "mean": zero, "sq_mean": zero}
    if not isinstance(aux, dict):
        return stats
    if "logits" in aux:
        logits = aux["logits"]
        probs = jax.nn.softmax(logits)
        stats["entropy"] = predictive_entropy(logits)
        stats["confidence"] = jnp.mean(jnp.max(probs, axis=-1))
        outputs = probs
    elif "predictions" in aux:
        outputs = aux["predictions"]
    else:
        return stats
    flat = outputs.reshape(-1, outputs.shape[-1])
    stats["variance"] = jnp.mean(jnp.var(flat, axis=0))
    stats["mean"] = jnp.mean(flat)
    stats["sq_mean"] = jnp.mean(flat**2)
    return {k: v.astype(jnp.float32) for k, v in stats.items()}


def track_features(features: MetaFeatures, batch: dict, decay: float) -> tuple[MetaFeatures, Array]:
    """Updates the moving statistics; returns them and the feature shift (standardised mean change)."""
    first = features.updates == 0
    rate = jnp.where(first, 1.0, 1.0 - decay)
    mix = lambda old, new: old + rate * (new - old)
    spread = jnp.sqrt(jnp.maximum(features.output_sq_mean - features.output_mean**2, 0.0)) + 1e-6
    shift = jnp.where(first, 0.0, jnp.abs(batch["mean"] - features.output_mean) / spread)
    updated = MetaFeatures(
        entropy=mix(features.entropy, batch["entropy"]),
        confidence=mix(features.confidence, batch["confidence"]),
        variance=mix(features.variance, batch["variance"]),
        output_mean=mix(features.output_mean, batch["mean"]),
        output_sq_mean=mix(features.output_sq_mean, batch["sq_mean"]),
        updates=features.updates + 1,
    )
    return updated, shift
