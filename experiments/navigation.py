"""2D navigation (Finn et al. 2017, appendix Table 4): MAML-RL with an MLP (2 × 100, ReLU) or SSM policy.

    python -m experiments.navigation                    # default preset: MAML-RL's settings, ~4 min on 2 cores
    python -m experiments.navigation --preset ppo       # PPO outer steps, standardised inputs: ~3.5 min
    python -m experiments.navigation --model ssm        # SSM-MetaRL's SSM policy
    python -m experiments.navigation --preset smoke     # seconds, for tests

A point robot moves from the origin to a goal in U[−0.5, 0.5]² (reward −distance, horizon 100, the episode ends
within 0.01 of the goal). Return after 0 / 1 / 2 / 3 policy-gradient steps on 40 held-out goals, beside the paper's
row (MAML −40.41 / −11.68 / −3.33 / −3.23). The default is MAML-RL's setup: raw positions in, inner lr 0.5, TRPO
outer steps. Meta-trained for one step, the policy takes its first test step at the inner rate and later ones at
a tenth of it (`--later-rounds-lr-scale 1` keeps the rate: steps 2-3 then overshoot).
The pipeline and its outputs are described in `experiments.meta_rl`, every flag in `ssm_jax.config.RunConfig`.
"""

from __future__ import annotations

from experiments.common import run_main
from experiments.meta_rl import main
from ssm_jax.config import CONFIGS

PRESETS = {
    "default": CONFIGS["navigation"],
    "ppo": CONFIGS["navigation-ppo"],
    "smoke": CONFIGS["navigation-smoke"],
}
"""The presets, by their names in `ssm_jax.config.CONFIGS` (where the navigation settings are written)."""

__all__ = ["PRESETS", "main"]

if __name__ == "__main__":
    run_main(main, PRESETS, "default")
