"""The seeds' PyTorch MetaMAML, adapter and buffer against ours, same shapes, measured in one run.

    pip install -e ".[bench]"          # torch: an optional extra, never a runtime dependency
    python -m benchmarks.maml_vs_torch [--tasks-per-batch 20] [--length 200] [--torch-device cuda]

The reference is the seeds' design as their documents describe it (`MetaMAML(model, inner_lr, outer_lr)`,
`meta_update(tasks, initial_hidden_state, loss_fn)`; `StateSpaceModel` with `h' = A(h) + B x`, `y = C(h') + D x`),
written here in PyTorch: Python loops over tasks and time steps, fast weights through `torch.func.functional_call`,
second-order gradients (`create_graph=True`), Adam outer step. Ours is `make_maml(sequence_mse_loss(ssm))` with
`MAMLConfig(num_inner_steps=1)`, its update jitted. Both start from the same weights and tasks, and the first
meta-loss of each is reported side by side (they must agree to float32 rounding).

Beside the seeds' loops, the strongest PyTorch formulation of the meta-update (`FunctionalMetaMAML`:
`torch.func.functional_call` + `torch.func.grad` + `torch.func.vmap` over tasks, and the same under
`torch.compile`, or the reason it failed): the rows named "torch.func + vmap" compare ours with that.

Measured: the meta-update (second and first order), the test-time adapter's update (5 Adam steps with gradient
clipping on one task's support), and the ExperienceBuffer's add+sample throughput (`benchmarks.buffer`).
Writes `benchmarks/results/maml_vs_torch.json` and prints a table; `speedup` is the reference's time over ours.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import buffer as buffer_bench
from benchmarks.common import HarnessArgs, compile_and_time, report
from ssm_jax.adapt import AdapterConfig, make_adapter
from ssm_jax.config.parsing import command_line
from ssm_jax.meta import MAMLConfig, make_maml, sequence_mse_loss
from ssm_jax.models import ModelConfig, make_model

try:
    import torch
    from torch import nn
    from torch.func import functional_call
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise SystemExit('benchmarks.maml_vs_torch needs PyTorch: pip install -e ".[bench]"') from error


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    tasks_per_batch: int = 20
    length: int = 200
    """Time steps of each task's support and of its query."""
    task_batch: int = 1
    """Sequences per support (and per query); the seeds' example passes one per task."""
    obs_dim: int = 17
    state_dim: int = 32
    hidden_dim: int = 64
    inner_lr: float = 0.01
    outer_lr: float = 1e-3
    steps_per_round: int = 5
    repeats: int = 5
    reference_repeats: int = 3
    torch_device: str = "cuda" if torch.cuda.is_available() else "cpu"
    torch_compile: bool = True
    """Also time the functional meta-update under `torch.compile` (its compile unrolls the time loop: minutes at
    T = 20, far longer at T = 200)."""
    buffer_capacity: int = 100_000


class SeedStateSpaceModel(nn.Module):
    """The seeds' `StateSpaceModel`: `h' = A(h) + B x`, `y = C(h') + D x`, one step per call."""

    def __init__(self, input_dim: int, state_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.state_dim = state_dim
        self.A = nn.Sequential(nn.Linear(state_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, state_dim))
        self.B = nn.Linear(input_dim, state_dim, bias=False)
        self.C = nn.Sequential(nn.Linear(state_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, output_dim))
        self.D = nn.Linear(input_dim, output_dim, bias=False)

    def init_hidden(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.state_dim, device=self.B.weight.device)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.A(hidden) + self.B(x)
        return self.C(hidden) + self.D(x), hidden


def _unroll(step, xs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The seeds' Python loop over time: `step(x_t [B, D], h) -> (y_t, h)` for each t of `xs: [B, T, D]`."""
    outputs = []
    for t in range(xs.shape[1]):
        y, hidden = step(xs[:, t], hidden)
        outputs.append(y)
    return torch.stack(outputs, dim=1)


class SeedMetaMAML:
    """The seeds' `MetaMAML`: a Python loop over tasks, and over time steps inside each forward."""

    def __init__(self, model: nn.Module, inner_lr: float, outer_lr: float, first_order: bool = False):
        self.model, self.inner_lr, self.first_order = model, inner_lr, first_order
        self.optimizer = torch.optim.Adam(model.parameters(), lr=outer_lr)

    def _sequence(self, params: dict, xs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return _unroll(lambda x, h: functional_call(self.model, params, (x, h)), xs, hidden)

    def meta_update(self, tasks: list, initial_hidden_state: torch.Tensor, loss_fn) -> float:
        self.optimizer.zero_grad()
        params = dict(self.model.named_parameters())
        meta_loss = 0.0
        for support_x, support_y, query_x, query_y in tasks:
            hidden = initial_hidden_state[: support_x.shape[0]]
            support_loss = loss_fn(self._sequence(params, support_x, hidden), support_y)
            grads = torch.autograd.grad(support_loss, list(params.values()), create_graph=not self.first_order)
            fast = {name: p - self.inner_lr * g for (name, p), g in zip(params.items(), grads, strict=True)}
            meta_loss = meta_loss + loss_fn(self._sequence(fast, query_x, hidden), query_y)
        meta_loss = meta_loss / len(tasks)
        meta_loss.backward()
        self.optimizer.step()
        return float(meta_loss.detach())


class FunctionalMetaMAML:
    """The strongest PyTorch formulation of the same meta-update: one pure function of the parameters
    (`torch.func.functional_call`), its inner step by `torch.func.grad` and `torch.func.vmap` over tasks (no Python
    loop over tasks; the loop over time steps stays, PyTorch has no scan), the outer gradient by `torch.func.grad`
    through it (second order unless `first_order`), then Adam. With `compile`, the meta-gradient function goes
    through `torch.compile`."""

    def __init__(self, model: nn.Module, inner_lr: float, outer_lr: float, first_order: bool, compile: bool):
        self.model, self.inner_lr, self.first_order = model, inner_lr, first_order
        self.optimizer = torch.optim.Adam(model.parameters(), lr=outer_lr)
        meta_grad = torch.func.grad_and_value(self._meta_loss)
        self._meta_grad = torch.compile(meta_grad) if compile else meta_grad

    def _loss(self, params: dict, xs: torch.Tensor, ys: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        predictions = _unroll(lambda x, h: functional_call(self.model, params, (x, h)), xs, hidden)
        return torch.mean((predictions - ys) ** 2)

    def _task_loss(self, params, support_x, support_y, query_x, query_y, hidden):
        grads = torch.func.grad(self._loss)(params, support_x, support_y, hidden)
        if self.first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        fast = {name: p - self.inner_lr * grads[name] for name, p in params.items()}
        return self._loss(fast, query_x, query_y, hidden)

    def _meta_loss(self, params, support_x, support_y, query_x, query_y, hidden):
        per_task = torch.func.vmap(self._task_loss, in_dims=(None, 0, 0, 0, 0, None))
        return per_task(params, support_x, support_y, query_x, query_y, hidden).mean()

    def meta_update(self, stacked_tasks: tuple, hidden: torch.Tensor) -> float:
        params = {name: p.detach() for name, p in self.model.named_parameters()}
        grads, loss = self._meta_grad(params, *stacked_tasks, hidden)
        for name, p in self.model.named_parameters():
            p.grad = grads[name]
        self.optimizer.step()
        return float(loss.detach())


def seed_adapter_update(model: nn.Module, optimizer, batch, hidden, loss_fn, steps: int, clip: float) -> float:
    """The seeds' `Adapter`: `steps` Adam steps on the current batch with gradient clipping."""
    xs, ys = batch
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(_unroll(model, xs, hidden), ys)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    return float(loss)


def _copy_flax_weights(params: dict, model: SeedStateSpaceModel) -> None:
    """Loads our SSM's flax params into the torch module (a Dense kernel `[in, out]` is a Linear weight's `.T`)."""
    p = params["params"]
    pairs = {
        "A.0": p["mlp_a"]["dense_0"],
        "A.2": p["mlp_a"]["dense_1"],
        "B": p["b"],
        "C.0": p["mlp_c"]["dense_0"],
        "C.2": p["mlp_c"]["dense_1"],
        "D": p["d"],
    }
    state = {}
    for name, dense in pairs.items():
        state[f"{name}.weight"] = torch.from_numpy(np.asarray(dense["kernel"]).T.copy())
        if "bias" in dense:
            state[f"{name}.bias"] = torch.from_numpy(np.asarray(dense["bias"]).copy())
    model.load_state_dict(state)


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(args: Args) -> list[dict]:
    config = ModelConfig(
        input_dim=args.obs_dim, output_dim=args.obs_dim, state_dim=args.state_dim, hidden_dim=args.hidden_dim
    )
    model = make_model("ssm", config)
    loss_fn = sequence_mse_loss(model)
    key_init, key_data = jax.random.split(jax.random.key(0))
    shape = (args.tasks_per_batch, 2, args.task_batch, args.length, args.obs_dim)  # [tasks, support|query, B, T, D]
    xs = jax.random.normal(key_data, shape)
    ys = jnp.roll(xs, 1, axis=-2)  # predict the previous observation: a task the recurrence can solve
    tasks = (xs[:, 0], ys[:, 0]), (xs[:, 1], ys[:, 1])
    params = model.init(key_init, xs[0, 0, 0])

    device = args.torch_device
    torch_model = SeedStateSpaceModel(args.obs_dim, args.state_dim, args.hidden_dim, args.obs_dim)
    _copy_flax_weights(params, torch_model)
    torch_model.to(device)
    xs_t, ys_t = (torch.from_numpy(np.array(a)).to(device) for a in (xs, ys))
    torch_tasks = [(xs_t[i, 0], ys_t[i, 0], xs_t[i, 1], ys_t[i, 1]) for i in range(args.tasks_per_batch)]
    hidden = torch_model.init_hidden(args.task_batch)
    mse = torch.nn.functional.mse_loss
    stacked = (xs_t[:, 0], ys_t[:, 0], xs_t[:, 1], ys_t[:, 1])  # [tasks, B, T, D] each, for vmap over tasks

    rows = []
    for first_order in (False, True):
        maml = make_maml(loss_fn, MAMLConfig(inner_lr=args.inner_lr, first_order=first_order))
        state = maml.init(params, optax.adam(args.outer_lr))
        jax_loss = float(maml.outer_loss(params, None, tasks)[0])
        compile_s, jax_s = compile_and_time(maml.update, state, tasks, repeats=args.repeats)
        reference = SeedMetaMAML(torch_model, args.inner_lr, args.outer_lr, first_order=first_order)
        _copy_flax_weights(params, torch_model)
        torch_loss = reference.meta_update(torch_tasks, hidden, mse)

        def reference_step(reference=reference):
            reference.meta_update(torch_tasks, hidden, mse)
            _sync(device)

        torch_s = _median_seconds(reference_step, args.reference_repeats)
        order = "first" if first_order else "second"
        rows.append(_row(f"meta-update, {order} order", jax_s, torch_s, compile_s, jax_loss, torch_loss))
        print(f"meta-update ({order} order): jax {jax_s * 1e3:.2f} ms, torch {torch_s * 1e3:.1f} ms", flush=True)
        for compiled in (False, True) if args.torch_compile else (False,):
            name = f"meta-update, {order} order, torch.func + vmap{' + torch.compile' if compiled else ''}"
            ours = (jax_s, compile_s, jax_loss)
            rows.append(_functional_row(name, args, torch_model, params, stacked, hidden, first_order, compiled, ours))
            print(f"{name}: {rows[-1]['torch_ms']} ms ({rows[-1]['torch_note']})", flush=True)

    support = tasks[0][0][0], tasks[0][1][0]  # one task's support, [B, T, D]
    adapter = make_adapter(
        "standard", loss_fn, AdapterConfig(learning_rate=1e-3, num_steps=args.steps_per_round, grad_clip_norm=1.0)
    )
    update = lambda astate, params, batch, key: adapter.update(astate, params, batch, None, key)
    compile_s, jax_s = compile_and_time(update, adapter.init(params), params, support, key_init, repeats=args.repeats)
    _copy_flax_weights(params, torch_model)
    optimizer = torch.optim.Adam(torch_model.parameters(), lr=1e-3)
    batch_t = xs_t[0, 0], ys_t[0, 0]

    def reference_adapt():
        seed_adapter_update(torch_model, optimizer, batch_t, hidden, mse, args.steps_per_round, 1.0)
        _sync(device)

    torch_s = _median_seconds(reference_adapt, args.reference_repeats)
    rows.append(_row(f"adapter update ({args.steps_per_round} steps)", jax_s, torch_s, compile_s))
    print(f"adapter: jax {jax_s * 1e3:.2f} ms, torch {torch_s * 1e3:.1f} ms", flush=True)

    buffer_args = buffer_bench.Args(capacities=(args.buffer_capacity,))
    ours = buffer_bench.jax_throughput(args.buffer_capacity, buffer_args)
    theirs = buffer_bench.reference_throughput(args.buffer_capacity, buffer_args)
    per_round = buffer_args.add_size + buffer_args.batch_size
    rows.append(
        _row(
            f"buffer add {buffer_args.add_size} + sample {buffer_args.batch_size}",
            per_round / ours,
            per_round / theirs,
            None,
        )
    )
    for row in rows:
        row["torch_device"] = device
    columns = ["operation", "jax_ms", "torch_ms", "speedup", "jax_compile_s", "loss_rel_diff", "torch_note"]
    report("maml_vs_torch", rows, columns, note=f"{args.tasks_per_batch} tasks, T = {args.length}, torch on {device}")
    return rows


def _functional_row(name, args, torch_model, params, stacked, hidden, first_order, compiled, ours) -> dict:
    """`FunctionalMetaMAML`'s meta-update against ours (`ours`: our seconds, compile seconds and first loss): its
    time and first loss, or why it did not run."""
    _copy_flax_weights(params, torch_model)
    functional = FunctionalMetaMAML(torch_model, args.inner_lr, args.outer_lr, first_order, compiled)
    jax_s, compile_s, jax_loss = ours
    try:
        started = time.perf_counter()
        torch_loss = functional.meta_update(stacked, hidden)  # the first call compiles, with torch.compile
        first_call_s = time.perf_counter() - started

        def step():
            functional.meta_update(stacked, hidden)
            _sync(args.torch_device)

        torch_s = _median_seconds(step, args.reference_repeats)
    except Exception as error:  # torch.compile's failures are many: the row says which
        row = _row(name, jax_s, math.nan, compile_s)
        row["torch_note"] = f"failed: {type(error).__name__}: {' '.join(str(error).split())[:200]}"
        return row
    row = _row(name, jax_s, torch_s, compile_s, jax_loss, torch_loss)
    row["torch_note"] = f"first call {first_call_s:.1f} s"
    return row


def _row(operation, jax_s, torch_s, compile_s, jax_loss=None, torch_loss=None) -> dict:
    return {
        "operation": operation,
        "jax_ms": jax_s * 1e3,
        "torch_ms": torch_s * 1e3,
        "speedup": torch_s / jax_s,
        "jax_compile_s": compile_s,
        "jax_loss": jax_loss,
        "torch_loss": torch_loss,
        "loss_rel_diff": None if jax_loss is None else abs(jax_loss - torch_loss) / abs(torch_loss),
        "torch_note": "the seeds' Python loops",
    }


if __name__ == "__main__":
    main(command_line(Args))
