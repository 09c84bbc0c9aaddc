"""Losses in the batch convention shared by MAML and the adapters: `loss_fn(params, batch) -> (loss, aux)`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssm_jax.models import SequenceModel
from ssm_jax.types import Array, Params


def sequence_mse_loss(model: SequenceModel):
    """MSE of `model` run from its initial carry over each sequence of `batch = (xs [B, T, D], ys [B, T, O])`.

    Returns `loss_fn(params, batch) -> (loss, {"predictions": [B, T, O]})`.
    """

    def loss_fn(params: Params, batch: tuple[Array, Array]):
        xs, ys = batch
        carry = model.initial_carry((xs.shape[0],))
        _, preds = jax.vmap(model.apply, in_axes=(None, 0, 0))(params, carry, xs)
        return jnp.mean((preds - ys) ** 2), {"predictions": preds}

    return loss_fn
