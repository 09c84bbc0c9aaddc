"""Configuration: the one config family, the one registry of named configs, JSON io, and building a run from one.

    from ssm_jax.config import CONFIGS, build, replace
    config = replace(CONFIGS["navigation"], seed=3, hidden_dim=32)   # by leaf name, nested or not
    env, trainer = build(config)                                     # the env and the pure `Trainer`

| module | what lives there |
|---|---|
| `io` | configs as JSON, rebuilt only as registered classes (`register_config`); imports nothing from `ssm_jax` |
| `family` | `ExperimentConfig` and each program's run config (`RunConfig`, `InContextRunConfig`, ...), `replace` |
| `leaves` | `replace` and `extend` by leaf name, at any depth |
| `presets` | what every preset of one kind shares (`ppo`, `smoke`, the navigation and study builders) |
| `registry` | `CONFIGS`: every preset of every entry point, by name |
| `programs` | the env and `Trainer` a config describes, a run's initial state and keys, a run directory's config |
| `parsing` | flags for every entry point: tyro with one-line errors, leaf names as flags, resumed configs |

Every layer registers its config classes through `config.io`, so this package's names load on first use (PEP 562)
and importing `ssm_jax.config.io` loads nothing else.
"""

from __future__ import annotations

import importlib

_MODULES = {
    "family": (
        "ADAPTATION_MODE_CHOICES", "ExperimentConfig", "IN_CONTEXT_ENVS", "InContextRunConfig", "METHODS",
        "RunConfig", "SINUSOID_METHODS", "SinusoidRunConfig", "WORLD_MODEL_ENVS", "WorldModelRunConfig",
    ),
    "leaves": ("extend", "replace"),
    "registry": ("CONFIGS", "IN_CONTEXT_CONFIGS", "META_RL_CONFIGS"),
    "presets": ("ppo", "smoke"),
    "programs": (
        "build", "build_in_context", "build_regression", "build_run", "compiled_programs", "initial_state",
        "load_run_config", "training_key", "world_model_env",
    ),
    "parsing": (
        "UsageError", "command_line", "config_differences", "exit_with_error", "parse", "resumed_config",
    ),
    "io": ("config_from_json", "config_to_json", "read_config", "register_config", "register_renamed"),
}  # fmt: skip
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'ssm_jax.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ssm_jax.config.{_HOME[name]}"), name)
