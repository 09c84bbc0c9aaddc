"""End-to-end smoke run of every sequence model: build, run over a sequence, take Adam steps, print a table.

    python -m experiments.smoke [--seq-len 64] [--steps 20]

Each model regresses a fixed random linear-recurrent target from the same input sequence; the table shows the
loss before and after `steps` jitted Adam updates, the parameter count and the wall time.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import optax

from ssm_jax.config.io import register_config
from ssm_jax.config.parsing import command_line
from ssm_jax.models import MODEL_NAMES, ModelConfig, make_model


@register_config
@dataclasses.dataclass(frozen=True)
class Args:
    seq_len: int = 64
    steps: int = 20
    learning_rate: float = 3e-3
    seed: int = 0
    models: tuple[str, ...] = MODEL_NAMES

    def __post_init__(self):
        if self.seq_len < 1 or self.steps < 1:
            raise ValueError(f"seq_len and steps must be >= 1, got {self.seq_len}, {self.steps}")
        unknown = sorted(set(self.models) - set(MODEL_NAMES))
        if unknown:
            raise ValueError(f"unknown models {unknown}; expected any of {', '.join(MODEL_NAMES)}")


def _target(xs: jax.Array) -> jax.Array:
    """A smoothed, delayed copy of the input: a target only a model with memory fits well."""

    def body(h, x):
        h = 0.9 * h + 0.1 * x[:2]
        return h, h

    return jax.lax.scan(body, jnp.zeros(2), xs)[1]


def main(args: Args) -> dict:
    config = ModelConfig(input_dim=4, output_dim=2, state_dim=16, hidden_dim=32, attention_span=args.seq_len)
    data_key, init_key = jax.random.split(jax.random.key(args.seed))
    xs = jax.random.normal(data_key, (args.seq_len, config.input_dim))
    ys = _target(xs)
    optimizer = optax.adam(args.learning_rate)
    results = {}
    for name, key in zip(args.models, jax.random.split(init_key, len(args.models)), strict=True):
        model = make_model(name, config)
        params = model.init(key, xs)

        def loss_fn(params, model=model):
            return jnp.mean((model.apply(params, model.initial_carry(), xs)[1] - ys) ** 2)

        @jax.jit
        def train(params, loss_fn=loss_fn):
            def update(carry, _):
                params, opt_state = carry
                loss, grads = jax.value_and_grad(loss_fn)(params)
                updates, opt_state = optimizer.update(grads, opt_state)
                return (optax.apply_updates(params, updates), opt_state), loss

            (params, _), losses = jax.lax.scan(update, (params, optimizer.init(params)), length=args.steps)
            return params, losses[0], loss_fn(params)

        start = time.perf_counter()
        _, before, after = jax.block_until_ready(train(params))
        results[name] = {
            "params": sum(p.size for p in jax.tree.leaves(params)),
            "loss_before": float(before),
            "loss_after": float(after),
            "seconds": time.perf_counter() - start,
        }
    print(f"{'model':<12} {'params':>8} {'loss before':>12} {'loss after':>11} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:<12} {r['params']:>8} {r['loss_before']:>12.4f} {r['loss_after']:>11.4f} {r['seconds']:>8.2f}")
    return results


if __name__ == "__main__":
    main(command_line(Args))
