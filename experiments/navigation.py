"""2D navigation (Finn et al. 2017, appendix Table 4): MAML-RL with an MLP (2 × 100, ReLU) or SSM policy.

    python -m experiments.navigation                    # default preset: MAML-RL's settings, ~4 min on 2 cores
    python -m experiments.navigation --preset ppo       # PPO outer steps, standardised inputs: ~3.5 min
    python -m experiments.navigation --model ssm        # SSM-MetaRL's SSM policy
    python -m experiments.navigation --preset smoke     # seconds, for tests

A point robot moves from the origin to a goal in U[−0.5, 0.5]² (reward −distance, horizon 100, the episode ends
within 0.01 of the goal). Return after 0 / 1 / 2 / 3 policy-gradient steps on 40 held-out goals, beside the paper's
row (MAML −40.41 / −11.68 / −3.33 / −3.23). The default is MAML-RL's setup: raw positions in, inner lr 0.5, TRPO
outer steps. Meta-trained for one step, the policy takes its first test step at the inner rate and later ones at
a tenth of it (`--later-steps-lr-scale 1` keeps the rate: steps 2-3 then overshoot).
The pipeline, its outputs and every flag are described in `experiments.meta_rl`.
"""

from __future__ import annotations

import dataclasses

from experiments.common import run_main
from experiments.meta_rl import Args, main
from ssm_jax.models import NetworkConfig

PRESETS = {
    "default": Args(
        preset="default",
        env="navigation-2d",
        horizon=100,
        model="mlp",
        network=NetworkConfig(state_dim=32, hidden_dim=100, num_layers=2),
        iterations=100,
        chunk_size=10,
        tasks_per_batch=20,
        trajectories_per_task=20,
        inner_lr=0.5,  # MAML-RL's fast learning rate for the point robot
        outer_optimizer="trpo",  # MAML-RL's outer step: TRPO with a 0.01-nat bound on the adapted policies
        cg_iters=4,  # rllab's 10 costs 2.5x the time for the same returns (README)
        normalize_observations=False,  # MAML-RL's policy sees the raw position (standardised: σ stays ≈ 0.85)
        adaptation_mode="standard",
        buffer_size=10_000,
        window=10,
        eval_tasks=40,
        eval_trajectories=40,  # MAML-RL's test script adapts with twice the training batch
        later_steps_lr_scale=0.1,  # steps 2 and 3 at a tenth of the rate (MAML-RL's test script halves it)
        pretrained=False,  # the paper's table has no pretrained row; --pretrained adds one (doubles the time)
        oracle=False,
        checkpoint_every=50,
        out_dir="runs/navigation",
    ),
}
PPO = {"outer_optimizer": "ppo", "normalize_observations": True, "inner_lr": 0.1}
"""The `ppo` preset's changes to a navigation `Args` (standardised inputs, inner lr 0.1, three PPO epochs)."""
PRESETS["ppo"] = dataclasses.replace(PRESETS["default"], preset="ppo", **PPO)  # ~3.5 min on 2 cores
PRESETS["smoke"] = dataclasses.replace(
    PRESETS["default"],
    preset="smoke",
    network=NetworkConfig(state_dim=8, hidden_dim=16, num_layers=2),
    iterations=2,
    chunk_size=1,
    tasks_per_batch=2,
    trajectories_per_task=2,
    horizon=20,
    window=5,
    eval_tasks=2,
    checkpoint_every=2,
)

__all__ = ["PPO", "PRESETS", "Args", "main"]

if __name__ == "__main__":
    run_main(main, PRESETS, "default")
