"""ExperienceBuffer add+sample throughput: jitted pytree ring buffer vs the seeds' deque + random.sample design.

    python -m benchmarks.buffer [--capacities 10000 100000 1000000] [--add-size 1000] [--batch-size 256]

Items are the seeds' HalfCheetah experiences, `(observation [17], target [17])` float32 pairs. One round adds
`add_size` items and samples `batch_size`; throughput counts both, in items per second. The JAX side runs
`rounds` rounds in one jitted `lax.scan` with the state donated. The reference is the seeds' documented
`ExperienceBuffer` (a `deque(maxlen=capacity)` of per-item tensor pairs, `random.sample` and `torch.stack`),
re-typed here from its API; it uses PyTorch when installed (`pip install torch`), else numpy arrays, and the JSON
says which. Writes `benchmarks/results/buffer.json` and prints a table with the speed-up.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import HarnessArgs, report
from ssm_jax.buffer import make_experience_buffer
from ssm_jax.config.parsing import command_line

try:
    import torch

    BACKEND, as_array, stack = "torch", torch.from_numpy, torch.stack
except ImportError:
    BACKEND, as_array, stack = "numpy", np.asarray, np.stack

OBS_DIM = 17


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    capacities: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    add_size: int = 1000
    batch_size: int = 256
    rounds: int = 200
    reference_rounds: int = 20


class SeedExperienceBuffer:
    """The seeds' design: per-item tensor pairs in a bounded deque, sampled with random.sample."""

    def __init__(self, max_size: int):
        self.buffer: deque = deque(maxlen=max_size)

    def add(self, observations, targets) -> None:
        for obs, target in zip(observations, targets, strict=True):
            self.buffer.append((obs, target))

    def get_batch(self, batch_size: int):
        if len(self.buffer) < batch_size:
            return None
        observations, targets = zip(*random.sample(self.buffer, batch_size), strict=True)
        return stack(observations), stack(targets)


def _items(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal((n, OBS_DIM), dtype=np.float32) for _ in range(2))


def jax_throughput(capacity: int, args: Args) -> float:
    buf = make_experience_buffer(capacity)
    state = buf.init((jnp.zeros(OBS_DIM), jnp.zeros(OBS_DIM)))
    items = jax.tree.map(jnp.asarray, _items(args.add_size))

    def rounds(state, key):
        def body(state, key):
            state = buf.add(state, items)
            (obs, target), _ = buf.sample(state, key, args.batch_size)
            return state, jnp.sum(obs) + jnp.sum(target)

        return jax.lax.scan(body, state, jax.random.split(key, args.rounds))

    run = jax.jit(rounds, donate_argnums=0)
    state, _ = jax.block_until_ready(run(state, jax.random.key(0)))  # compile + fill
    start = time.perf_counter()
    jax.block_until_ready(run(state, jax.random.key(1)))
    return args.rounds * (args.add_size + args.batch_size) / (time.perf_counter() - start)


def reference_throughput(capacity: int, args: Args) -> float:
    observations, targets = (as_array(x) for x in _items(args.add_size))
    memory = SeedExperienceBuffer(capacity)
    for _ in range(max(1, min(capacity, 20 * args.add_size) // args.add_size)):
        memory.add(observations, targets)
    start = time.perf_counter()
    for _ in range(args.reference_rounds):
        memory.add(observations, targets)
        memory.get_batch(args.batch_size)
    return args.reference_rounds * (args.add_size + args.batch_size) / (time.perf_counter() - start)


def main(args: Args) -> list[dict]:
    rows = []
    for capacity in args.capacities:
        ours = jax_throughput(capacity, args)
        reference = reference_throughput(capacity, args)
        rows.append(
            {
                "capacity": capacity,
                "jax_items_per_s": ours,
                "reference_items_per_s": reference,
                "reference_backend": BACKEND,
                "speedup": ours / reference,
            }
        )
        print(f"capacity {capacity}: jax {ours:.3g} items/s, seeds' deque ({BACKEND}) {reference:.3g} items/s")
    report("buffer", rows, ["capacity", "jax_items_per_s", "reference_items_per_s", "reference_backend", "speedup"])
    return rows


if __name__ == "__main__":
    main(command_line(Args))
