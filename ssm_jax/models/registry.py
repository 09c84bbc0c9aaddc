"""`make_model(name, config) -> SequenceModel`: the one entry point to every sequence model."""

from __future__ import annotations

import dataclasses
import functools

from ssm_jax.config.io import register_config
from ssm_jax.models.base import ModelConfig, SequenceModel
from ssm_jax.models.heads import CategoricalHead, GaussianHead, HeadedModel, ValueHead, attach_heads
from ssm_jax.models.mlp import MLPCore, mlp_carry
from ssm_jax.models.recurrent import RecurrentCore, gru_carry, lstm_carry
from ssm_jax.models.s5 import S5Core, s5_carry
from ssm_jax.models.ssm import SSMCell, ssm_carry
from ssm_jax.models.transformer import TransformerCore, transformer_carry

_BUILDERS = {
    "ssm": (lambda cfg: SSMCell(cfg), ssm_carry),
    "s5": (lambda cfg: S5Core(cfg), s5_carry),
    "mlp": (lambda cfg: MLPCore(cfg), mlp_carry),
    "lstm": (lambda cfg: RecurrentCore(cfg, "lstm"), lstm_carry),
    "gru": (lambda cfg: RecurrentCore(cfg, "gru"), gru_carry),
    "transformer": (lambda cfg: TransformerCore(cfg), transformer_carry),
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def make_model(name: str, config: ModelConfig) -> SequenceModel:
    """Builds the sequence model `name` (one of `MODEL_NAMES`) with the static sizes in `config`.

    Raises:
        ValueError: unknown name, or a config the model cannot use (transformer heads not dividing width).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
    if name == "transformer" and config.hidden_dim % config.num_heads:
        raise ValueError(
            f"ModelConfig.num_heads={config.num_heads} must divide hidden_dim={config.hidden_dim} for transformer"
        )
    module_fn, carry_fn = _BUILDERS[name]
    return SequenceModel(name, config, module_fn(config), functools.partial(carry_fn, config))


@register_config
@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Sizes of a meta-RL policy network (`make_gaussian_policy`)."""

    state_dim: int = 32
    """SSM / S5 state size."""
    hidden_dim: int = 64
    """Width of every hidden layer (and of the policy features)."""
    num_layers: int = 2
    """Layers of the sequence model (hidden layers for mlp)."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian policy."""

    def __post_init__(self):
        for field in ("state_dim", "hidden_dim", "num_layers"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")


def make_gaussian_policy(
    name: str,
    observation_size: int,
    action_size: int,
    network: NetworkConfig = NetworkConfig(),
    attention_span: int = 16,
) -> HeadedModel:
    """The meta-RL policy: the sequence model `name` reading `[T, observation_size]` observations into
    `network.hidden_dim` features, under a Gaussian head `pi` over `action_size` actions. `attention_span` is the
    transformer's (steps attended to)."""
    core = _policy_core(name, observation_size, network, attention_span)
    return attach_heads(core, pi=GaussianHead(action_size, init_log_std=network.init_log_std))


def make_actor_critic(
    name: str,
    input_size: int,
    action_size: int,
    discrete: bool = False,
    network: NetworkConfig = NetworkConfig(),
    attention_span: int = 16,
) -> HeadedModel:
    """The in-context (RL²) policy: the sequence model `name` reading `[T, input_size]` inputs, under a policy head
    `pi` (Gaussian over `action_size` actions, or categorical logits over `action_size` choices when `discrete`) and
    a value head `value` (`[T]`)."""
    core = _policy_core(name, input_size, network, attention_span)
    pi = CategoricalHead(action_size) if discrete else GaussianHead(action_size, init_log_std=network.init_log_std)
    return attach_heads(core, pi=pi, value=ValueHead())


def _policy_core(name: str, input_size: int, network: NetworkConfig, attention_span: int):
    config = ModelConfig(
        input_size,
        network.hidden_dim,
        state_dim=network.state_dim,
        hidden_dim=network.hidden_dim,
        num_layers=network.num_layers,
        attention_span=attention_span,
    )
    return make_model(name, config)
