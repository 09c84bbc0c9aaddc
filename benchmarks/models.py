"""Forward and forward+grad wall time and compile time of every sequence model.

    python -m benchmarks.models [--batch 16] [--lengths 200 1000] [--repeats 5]

Batch of sequences via `jax.vmap` over `model.apply`; the loss is the mean square output. Writes
`benchmarks/results/models.json` and prints a markdown table (milliseconds; compile in seconds).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from benchmarks.common import HarnessArgs, compile_and_time, report
from ssm_jax.config.parsing import command_line
from ssm_jax.models import MODEL_NAMES, ModelConfig, make_model


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    batch: int = 16
    lengths: tuple[int, ...] = (200, 1000)
    repeats: int = 5
    models: tuple[str, ...] = MODEL_NAMES
    state_dim: int = 64
    hidden_dim: int = 64


def main(args: Args) -> list[dict]:
    config = ModelConfig(input_dim=17, output_dim=6, state_dim=args.state_dim, hidden_dim=args.hidden_dim)
    rows = []
    for name in args.models:
        model = make_model(name, config)
        for length in args.lengths:
            key = jax.random.key(length)
            xs = jax.random.normal(key, (args.batch, length, config.input_dim))
            params = model.init(key, xs[0])
            carry = model.initial_carry((args.batch,))
            batched = jax.vmap(model.apply, in_axes=(None, 0, 0))

            def forward(params, xs, batched=batched, carry=carry):
                return batched(params, carry, xs)[1]

            def loss_and_grad(params, xs, forward=forward):
                return jax.value_and_grad(lambda p: jnp.mean(forward(p, xs) ** 2))(params)

            fwd_compile, fwd = compile_and_time(forward, params, xs, repeats=args.repeats)
            grad_compile, grad = compile_and_time(loss_and_grad, params, xs, repeats=args.repeats)
            rows.append(
                {
                    "model": name,
                    "T": length,
                    "batch": args.batch,
                    "forward_ms": fwd * 1e3,
                    "forward_grad_ms": grad * 1e3,
                    "compile_forward_s": fwd_compile,
                    "compile_grad_s": grad_compile,
                }
            )
            print(f"{name} T={length}: forward {fwd * 1e3:.2f} ms, forward+grad {grad * 1e3:.2f} ms", flush=True)
    columns = ["model", "T", "batch", "forward_ms", "forward_grad_ms", "compile_forward_s", "compile_grad_s"]
    report("models", rows, columns)
    return rows


if __name__ == "__main__":
    main(command_line(Args))
