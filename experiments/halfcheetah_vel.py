"""Flagship: MAML-RL on HalfCheetah-Vel (brax) with standard and experience-augmented hybrid test-time adaptation.

    python -m experiments.halfcheetah_vel                       # cpu preset: 2M env steps, mujoco, ~5.5 min on 2 cores
    python -m experiments.halfcheetah_vel --preset smoke        # under a minute, for tests
    python -m experiments.halfcheetah_vel --preset long         # 3M env steps per method (the budget study's)
    python -m experiments.halfcheetah_vel --preset paper        # MAML-RL scale, mjx backend, for a GPU
    python -m experiments.halfcheetah_vel --env halfcheetah-dir # forward/backward (Finn et al. Fig. 5)
    python -m experiments.halfcheetah_vel --model mlp --learn-inner-lr --inner-steps 3
    python -m experiments.halfcheetah_vel --num-seeds 3         # seeds 0, 1, 2; CIs over held-out tasks and seeds

The pipeline and its outputs are described in `experiments.meta_rl`, every flag in `ssm_jax.config.RunConfig`
(`--help` lists them).
"""

from __future__ import annotations

from experiments.common import run_main
from experiments.meta_rl import main
from ssm_jax.config import CONFIGS

PRESETS = {
    "cpu": CONFIGS["halfcheetah-vel"],
    "long": CONFIGS["halfcheetah-vel-long"],
    "smoke": CONFIGS["halfcheetah-vel-smoke"],
    "paper": CONFIGS["halfcheetah-vel-paper"],
}
"""The presets, by their names in `ssm_jax.config.CONFIGS`."""

__all__ = ["PRESETS", "main"]

if __name__ == "__main__":
    run_main(main, PRESETS, "cpu")
