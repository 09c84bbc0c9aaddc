"""Meta-learning: the MAML core and the losses it shares with the adapters."""

from ssm_jax.meta.losses import sequence_mse_loss
from ssm_jax.meta.maml import MAML, MAMLConfig, MetaState, check_tasks, make_maml

__all__ = ["MAML", "MAMLConfig", "MetaState", "check_tasks", "make_maml", "sequence_mse_loss"]
