"""The library's MAML meta-update against the same maths written directly in plain JAX, measured in one run.

    python -m benchmarks.maml_overhead [--tasks-per-batch 20] [--length 200] [--repeats 20]

Both take one second-order meta-update of the seeds' SSM cell (`h' = MLP_A(h) + B x`, `y = MLP_C(h') + D x`) on
`tasks` tasks of one support and one query sequence of `length` steps: one inner SGD step on the support's MSE, the
query's MSE after it, `jax.grad` through both, mean over tasks, an Adam step. The library's is
`make_maml(sequence_mse_loss(make_model("ssm", ...)))`'s `update`; the direct one is one `lax.scan` of
`MLP_A(h) + B x_t` with `B x` and the readout outside it, on the same params pytree. `loss diagnostics` is the
library's step with `MAMLConfig.loss_diagnostics=True`: three more forward passes (the support loss before and
after the step, the query loss before it) for the metrics. Timed interleaved (one call of each per round),
medians; `ratio` is each row's time over the direct one's. Writes `benchmarks/results/maml_overhead.json`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from benchmarks.common import HarnessArgs, compile_and_time_interleaved, report
from ssm_jax.config.parsing import command_line
from ssm_jax.meta import MAMLConfig, make_maml, sequence_mse_loss
from ssm_jax.models import ModelConfig, make_model


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    tasks_per_batch: int = 20
    length: int = 200
    """T: time steps of each task's support and of its query."""
    obs_dim: int = 17
    state_dim: int = 32
    hidden_dim: int = 64
    inner_lr: float = 0.01
    outer_lr: float = 1e-3
    repeats: int = 20
    seed: int = 0


def _dense(layer: dict, x: jax.Array) -> jax.Array:
    return x @ layer["kernel"] + layer["bias"] if "bias" in layer else x @ layer["kernel"]


def _mlp(block: dict, x: jax.Array) -> jax.Array:
    return _dense(block["dense_1"], jax.nn.relu(_dense(block["dense_0"], x)))


def direct_loss(params: dict, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The SSM cell's MSE on `batch = (xs [B, T, D], ys [B, T, O])`, written directly: one `lax.scan` over time."""
    cell = params["params"]
    xs, ys = batch

    def sequence(x):
        def recur(h, bx):
            h = _mlp(cell["mlp_a"], h) + bx
            return h, h

        h0 = jnp.zeros(cell["mlp_a"]["dense_1"]["bias"].shape, x.dtype)
        _, hs = jax.lax.scan(recur, h0, _dense(cell["b"], x))
        return _mlp(cell["mlp_c"], hs) + _dense(cell["d"], x)

    return jnp.mean((jax.vmap(sequence)(xs) - ys) ** 2)


def direct_update(optimizer: optax.GradientTransformation, inner_lr: float):
    """The second-order MAML meta-update in plain JAX: `(params, opt_state, tasks) -> (params, opt_state, loss)`."""

    def meta_loss(params, task):
        support, query = task
        grads = jax.grad(direct_loss)(params, support)
        fast = jax.tree.map(lambda p, g: p - inner_lr * g, params, grads)
        return direct_loss(fast, query)

    def update(params, opt_state, tasks):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(jax.vmap(meta_loss, (None, 0))(p, tasks)))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return update


def main(args: Args) -> list[dict]:
    key = jax.random.key(args.seed)
    model = make_model(
        "ssm",
        ModelConfig(input_dim=args.obs_dim, output_dim=1, state_dim=args.state_dim, hidden_dim=args.hidden_dim),
    )
    params_key, data_key = jax.random.split(key)
    params = model.init(params_key, jnp.zeros((args.length, args.obs_dim)))
    xs = jax.random.normal(data_key, (args.tasks_per_batch, 2, 1, args.length, args.obs_dim))
    ys = jnp.sum(jnp.sin(xs), axis=-1, keepdims=True)
    tasks = ((xs[:, 0], ys[:, 0]), (xs[:, 1], ys[:, 1]))

    optimizer = optax.adam(args.outer_lr)
    calls = {}
    for name, diagnostics in (("library", False), ("library, loss diagnostics", True)):
        config = MAMLConfig(inner_lr=args.inner_lr, loss_diagnostics=diagnostics)
        maml = make_maml(sequence_mse_loss(model), config)
        calls[name] = (maml.update, (maml.init(params, optimizer), tasks))
    calls["direct plain JAX"] = (direct_update(optimizer, args.inner_lr), (params, optimizer.init(params), tasks))

    library_loss = float(calls["library"][0](*calls["library"][1])[1]["meta_loss"])
    direct_loss_value = float(calls["direct plain JAX"][0](*calls["direct plain JAX"][1])[2])
    timed = compile_and_time_interleaved(calls, repeats=args.repeats)
    direct_s = timed["direct plain JAX"][1]
    rows = [
        {"program": name, "compile_s": compile_s, "ms": 1e3 * seconds, "ratio": seconds / direct_s}
        for name, (compile_s, seconds) in timed.items()
    ]
    note = f"meta-loss library {library_loss:.6g}, direct {direct_loss_value:.6g}; medians of {args.repeats}"
    report("maml_overhead", rows, ("program", "ms", "ratio", "compile_s"), note)
    return rows


if __name__ == "__main__":
    main(command_line(Args))
