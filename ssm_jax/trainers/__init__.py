"""The training programs: one module per program, each returning the one `Trainer` shape of `protocol`.

| module | program |
|---|---|
| `meta_rl` | MAML-RL (and its pretrained baseline and per-task oracle) |
| `in_context` | RL²: PPO over trials whose carry survives episode boundaries |
| `world_model` | a meta-learned dynamics model (its meta-training pool inside its state) |
| `regression` | few-shot regression (the sinusoid): MAML, FOMAML, Meta-SGD, pretrained |
"""

from ssm_jax.trainers.in_context import InContextConfig, InContextState, make_in_context_trainer
from ssm_jax.trainers.meta_rl import TrainerConfig, TrainState, adaptation_lr, make_meta_rl_trainer
from ssm_jax.trainers.protocol import MATMUL_PRECISIONS, EvalConfig, HParams, Trainer, at_precision
from ssm_jax.trainers.regression import RegressionState, RegressionTrainerConfig, make_regression_trainer
from ssm_jax.trainers.world_model import WorldModelState, WorldModelTrainerConfig, make_world_model_trainer

__all__ = [
    "MATMUL_PRECISIONS",
    "EvalConfig",
    "HParams",
    "InContextConfig",
    "InContextState",
    "RegressionState",
    "RegressionTrainerConfig",
    "TrainState",
    "Trainer",
    "TrainerConfig",
    "WorldModelState",
    "WorldModelTrainerConfig",
    "adaptation_lr",
    "at_precision",
    "make_in_context_trainer",
    "make_meta_rl_trainer",
    "make_regression_trainer",
    "make_world_model_trainer",
]
