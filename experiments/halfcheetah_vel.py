"""Flagship: MAML-RL on HalfCheetah-Vel (brax) with standard and experience-augmented hybrid test-time adaptation.

    python -m experiments.halfcheetah_vel                       # cpu preset: 1M env steps, spring, ~10 min on 2 cores
    python -m experiments.halfcheetah_vel --preset smoke        # under a minute, for tests
    python -m experiments.halfcheetah_vel --preset long         # 3M env steps per method: MAML adapts (~25-30 min)
    python -m experiments.halfcheetah_vel --preset paper        # MAML-RL scale, generalized backend, for a GPU
    python -m experiments.halfcheetah_vel --env halfcheetah-dir # forward/backward (Finn et al. Fig. 5)
    python -m experiments.halfcheetah_vel --model mlp --learn-inner-lr --inner-steps 3
    python -m experiments.halfcheetah_vel --num-seeds 3         # seeds 0, 1, 2; CIs over held-out tasks and seeds

The pipeline, its outputs and every flag are described in `experiments.meta_rl`.
"""

from __future__ import annotations

from experiments.common import run_main
from experiments.meta_rl import Args, main
from ssm_jax.models import NetworkConfig

PRESETS = {
    "cpu": Args(),
    # The smallest budget at which MAML's one-step gain beats the pretrained baseline's (`experiments.budget_study`).
    "long": Args(preset="long", iterations=190, eval_tasks=64, checkpoint_every=20),
    "smoke": Args(
        preset="smoke",
        horizon=20,
        network=NetworkConfig(state_dim=8, hidden_dim=16),
        iterations=2,
        chunk_size=1,
        tasks_per_batch=2,
        trajectories_per_task=2,
        outer_epochs=1,
        buffer_size=64,
        experience_batch_size=4,
        window=5,
        eval_tasks=2,
        oracle_iterations=2,
        checkpoint_every=2,
    ),
    "paper": Args(
        preset="paper",
        backend="generalized",
        iterations=500,
        chunk_size=10,
        tasks_per_batch=40,
        trajectories_per_task=20,
        outer_lr=1e-3,
        outer_epochs=5,
        buffer_size=20_000,
        eval_tasks=40,
        oracle=True,
        oracle_iterations=200,
        checkpoint_every=50,
    ),
}

__all__ = ["PRESETS", "Args", "main"]

if __name__ == "__main__":
    run_main(main, PRESETS, "cpu")
