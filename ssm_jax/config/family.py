"""The one configuration family of every run (the registry of named configs is `ssm_jax.config.registry`).

    config = CONFIGS["navigation"]                       # Finn et al.'s 2D navigation, MAML-RL's settings
    config = replace(config, seed=3, iterations=50, hidden_dim=32)   # by leaf name, nested or not
    env, trainer = build(config)                         # the env and the pure `Trainer`

`ExperimentConfig` is what every run shares: its name, seeds, schedule (iterations, chunks, checkpoints), traced
hyperparameters and output. Each program's config extends it with its own sections: `RunConfig` (meta-RL: the
env, the policy's `NetworkConfig`, the trainer's static `TrainerConfig`, the evaluation protocol `EvalConfig`, and
the baselines an experiment reports), `WorldModelRunConfig` and `SinusoidRunConfig`. `ssm-jax train --config
NAME` and `python -m experiments.<name> --preset P` (a preset is a name in `CONFIGS`) parse these classes the same
way: every leaf field is one flag (`--tasks-per-batch`, `--adapt-rounds`, `--hidden-dim`), leaf names being unique
in each tree. Validation lives in the classes (`__post_init__`), once.

Config files written before this family (`experiments.meta_rl:Args`, `experiments.world_model:Args`,
`experiments.sinusoid:Args`, the CLI's `ssm_jax.cli.configs:RunConfig`, a `TrainerConfig` that held the evaluation
protocol, `adapt_steps` for `adapt_rounds`) load as their new classes through `ExperimentConfig.from_fields`
(`ssm_jax.config.io` reads them; nothing is imported from the file).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

from ssm_jax import envs
from ssm_jax.adapt.adapter import ADAPTATION_MODES
from ssm_jax.config.io import RENAMED_FIELDS, register_config, register_renamed
from ssm_jax.config.leaves import flatten, float_leaves, from_leaves
from ssm_jax.envs.brax_tasks import BACKENDS
from ssm_jax.models import MODEL_NAMES, NetworkConfig
from ssm_jax.trainers.in_context import InContextConfig
from ssm_jax.trainers.meta_rl import TrainerConfig
from ssm_jax.trainers.protocol import EvalConfig, HParams
from ssm_jax.trainers.world_model import WorldModelTrainerConfig

ADAPTATION_MODE_CHOICES = ("both", *ADAPTATION_MODES)
METHODS = ("maml", "pretrained")
WORLD_MODEL_ENVS = ("pendulum-params", "cartpole-params", "halfcheetah-gravity", "ant-mass", "halfcheetah-vel")
SINUSOID_METHODS = ("maml", "fomaml", "meta_sgd", "pretrained")
IN_CONTEXT_ENVS = (*envs.META_RL_ENVS, "cartpole-params")


@register_config
@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """What every run shares, whatever it trains: seeds, schedule, traced hyperparameters, output."""

    FLAT_FLAGS: ClassVar[bool] = True
    """Flags are the leaf names (`--tasks-per-batch`, not `--trainer.tasks-per-batch`)."""
    RESUMABLE: ClassVar[bool] = True
    """Whether the program that runs this config can continue a run (`resume`); else `resume` is refused."""
    LEGACY_FIELDS: ClassVar[frozenset[str]] = frozenset({"preset", "adapt_steps", "later_steps_lr_scale"})
    """Names only the older, flat config files used: a stored config with one is read by `from_fields`."""

    name: str = ""
    """The named config (`CONFIGS`) these values started from."""
    inner_lr: float = 0.1
    """Inner step size in meta-training, and the adaptation step size at test time (the start value of learned
    per-parameter rates)."""
    outer_lr: float = 3e-3
    """Adam learning rate of the outer steps."""
    experience_weight: float = 0.1
    """Weight of the hybrid adapter's term on replayed experience (the sources `replay` names)."""
    iterations: int = 60
    """Meta-iterations in all."""
    chunk_size: int = 5
    """Meta-iterations per jitted call (one host sync, log record and progress update each)."""
    checkpoint_every: int = 20
    """Meta-iterations between checkpoints (a multiple of chunk_size); the last iteration is always saved."""
    keep_checkpoints: int = 2
    """Steps kept under checkpoints/ (the older one stays usable should the newest be damaged)."""
    seed: int = 0
    num_seeds: int = 1
    """Run seeds seed .. seed + num_seeds - 1 as one vmapped run axis and pool their held-out tasks."""
    out_dir: str = "runs"
    """Run directories are made under it, one per start (`<out_dir>/<UTC stamp>/`)."""
    plots: bool = True
    """Write the figures as PNG."""
    resume: str | None = None
    """A run directory to continue from its newest checkpoint, with its own config.json."""

    def __post_init__(self):
        for field, value in float_leaves(self):
            if not math.isfinite(value):
                raise ValueError(f"{field} must be finite, got {value}")
        HParams.check(self.inner_lr, self.outer_lr, self.experience_weight)
        if min(self.iterations, self.chunk_size) < 1:
            raise ValueError(f"iterations and chunk_size must be >= 1, got {self.iterations} and {self.chunk_size}")
        if self.iterations % self.chunk_size:
            raise ValueError(f"iterations={self.iterations} must be a multiple of chunk_size={self.chunk_size}")
        if self.checkpoint_every < 1 or self.checkpoint_every % self.chunk_size:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} must be a multiple of chunk_size")
        if min(self.keep_checkpoints, self.num_seeds) < 1:
            raise ValueError("keep_checkpoints and num_seeds must be >= 1")
        if self.resume is not None and not self.RESUMABLE:
            raise ValueError(f"{type(self).__name__} runs keep no checkpoint to resume from: start the run again")

    @property
    def seeds(self) -> list[int]:
        """The run seeds, `seed .. seed + num_seeds - 1`: one vmapped run each."""
        return list(range(self.seed, self.seed + self.num_seeds))

    @classmethod
    def upgrade_fields(cls, fields: dict) -> dict:
        """Stored fields (still encoded, `config.io`) in today's words: halfcheetah-vel's goal set "seed" is
        "reference"."""
        if fields.get("goals") == "seed":
            fields["goals"] = "reference"
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, Any]):
        """An instance from leaf fields by name (nested dicts are merged in), as an older config file held them:
        renamed fields take their new names, and fields the class no longer has (`preset`) are dropped."""
        flat = flatten(fields)
        for old, new in RENAMED_FIELDS.items():
            if old in flat:
                flat[new] = flat.pop(old)
        return from_leaves(cls, ExperimentConfig.upgrade_fields(flat))


@register_config
@dataclasses.dataclass(frozen=True)
class RunConfig(ExperimentConfig):
    """One meta-RL run (or `num_seeds` of them, as one vmapped run axis). Defaults: the flagship's CPU preset."""

    name: str = "halfcheetah-vel"
    env: Literal[envs.META_RL_ENVS] = "halfcheetah-vel"
    """The meta-RL task family."""
    backend: Literal[BACKENDS] = "mujoco"
    """Physics of the brax families: mujoco (MuJoCo's C library, the CPU's), mjx (its JAX twin, for accelerators), or
    brax's generalized, positional and spring (the recorded pages before December 2026 used spring)."""
    goals: Literal[envs.GOAL_SETS] = "uniform"
    """halfcheetah-vel goals: U[0, 2], or the reference design's 0.5, 1, ..., 2.5."""
    model: Literal[MODEL_NAMES] = "ssm"
    """The policy's sequence model."""
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    evaluation: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    method: Literal[METHODS] = "maml"
    """What `ssm-jax train` trains: maml, or the pretrained baseline (the experiments train both, see pretrained)."""
    adaptation_mode: Literal[ADAPTATION_MODE_CHOICES] = "both"
    """Test-time adapters an experiment evaluates for MAML."""
    pretrained: bool = True
    """Also train and evaluate the pretrained baseline: one policy trained by the same outer step on every
    trajectory of MAML's env budget, with no inner step."""
    random_baseline: bool = True
    """Also evaluate the untrained policy."""
    oracle: bool = False
    """Also train a policy on each held-out task (the random -> oracle gap)."""
    oracle_iterations: int = 30
    out_dir: str = "runs/halfcheetah_vel"

    def __post_init__(self):
        super().__post_init__()
        for field, value, choices in (
            ("env", self.env, envs.META_RL_ENVS),
            ("model", self.model, MODEL_NAMES),
            ("method", self.method, METHODS),
            ("adaptation_mode", self.adaptation_mode, ADAPTATION_MODE_CHOICES),
        ):
            if value not in choices:
                raise ValueError(f"unknown {field} {value!r}; expected one of {', '.join(choices)}")
        if self.oracle_iterations < 1:
            raise ValueError(f"oracle_iterations must be >= 1, got {self.oracle_iterations}")
        if self.resume is not None and self.num_seeds != 1:
            raise ValueError(f"num_seeds must be 1 with --resume; got {self.num_seeds}")


@register_config
@dataclasses.dataclass(frozen=True)
class WorldModelRunConfig(ExperimentConfig):
    """A meta-learned world model (`ssm_jax.trainers.world_model`): MAML against pretrained and the oracle."""

    RESUMABLE: ClassVar[bool] = False

    name: str = "world-model"
    env: Literal[WORLD_MODEL_ENVS] = "pendulum-params"
    """The task family (dynamics: pendulum/cartpole-params, halfcheetah-gravity, ant-mass; reward: halfcheetah-vel)."""
    backend: Literal[BACKENDS] = "mujoco"
    """Physics of the brax families: mujoco (MuJoCo's C library, the CPU's), mjx (its JAX twin, for accelerators), or
    brax's generalized, positional and spring (the recorded pages before December 2026 used spring)."""
    model: Literal[MODEL_NAMES] = "ssm"
    """The world model's sequence model."""
    network: NetworkConfig = dataclasses.field(default_factory=lambda: NetworkConfig(state_dim=16, hidden_dim=32))
    trainer: WorldModelTrainerConfig = dataclasses.field(default_factory=WorldModelTrainerConfig)
    inner_lr: float = 0.3
    iterations: int = 300
    chunk_size: int = 50
    checkpoint_every: int = 50
    out_dir: str = "runs/world_model"

    def __post_init__(self):
        super().__post_init__()
        if self.env not in WORLD_MODEL_ENVS or self.model not in MODEL_NAMES:
            raise ValueError(f"unknown env {self.env!r} or model {self.model!r}")


@register_config
@dataclasses.dataclass(frozen=True)
class SinusoidRunConfig(ExperimentConfig):
    """Sinusoid regression (`ssm_jax.trainers.regression`): MAML, FOMAML, Meta-SGD and pretrained, per shot count."""

    name: str = "sinusoid"
    shots: tuple[int, ...] = (10,)
    """Support (and meta-training query) points per task; each shot count trains every method."""
    methods: tuple[str, ...] = SINUSOID_METHODS
    tasks_per_batch: int = 25
    """Tasks per meta-iteration (E)."""
    inner_steps: int = 1
    """Inner SGD steps in meta-training."""
    hidden_dim: int = 40
    frequency_range: tuple[float, float] = (1.0, 1.0)
    eval_tasks: int = 600
    eval_points: int = 100
    """Query points per held-out task."""
    adapt_rounds: int = 10
    """Adaptation rounds evaluated on held-out tasks (0..adapt_rounds), one SGD step on the support each."""
    inner_lr: float = 0.01
    outer_lr: float = 1e-3
    iterations: int = 20_000
    chunk_size: int = 1000
    checkpoint_every: int = 1000
    out_dir: str = "runs/sinusoid"

    def __post_init__(self):
        super().__post_init__()
        unknown = sorted(set(self.methods) - set(SINUSOID_METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; expected any of {', '.join(SINUSOID_METHODS)}")
        if not self.shots or min(self.shots) < 1:
            raise ValueError(f"shots must be positive ints, got {self.shots}")
        if min(self.tasks_per_batch, self.eval_tasks, self.eval_points, self.adapt_rounds) < 1:
            raise ValueError("tasks_per_batch, eval_tasks, eval_points and adapt_rounds must be >= 1")


@register_config
@dataclasses.dataclass(frozen=True)
class InContextRunConfig(ExperimentConfig):
    """In-context meta-RL (RL², `ssm_jax.trainers.in_context`) for each policy of `models`, seeds vmapped, optionally
    beside a recorded MAML run on the same family (`compare_with`). `outer_lr` is PPO's Adam rate; `inner_lr` and
    `experience_weight` are unused (no gradient step at test time)."""

    name: str = "in-context-navigation"
    env: Literal[IN_CONTEXT_ENVS] = "navigation-2d"
    """The task family."""
    backend: Literal[BACKENDS] = "mujoco"
    """Physics of the brax families: mujoco (MuJoCo's C library, the CPU's), mjx (its JAX twin, for accelerators), or
    brax's generalized, positional and spring (the recorded pages before December 2026 used spring)."""
    goals: Literal[envs.GOAL_SETS] = "uniform"
    """halfcheetah-vel goals."""
    models: tuple[str, ...] = ("s5", "ssm", "gru", "mlp")
    """The policies' sequence models, trained one after another (mlp is memoryless: it cannot adapt in context)."""
    network: NetworkConfig = dataclasses.field(default_factory=lambda: NetworkConfig(state_dim=16, hidden_dim=64))
    trainer: InContextConfig = dataclasses.field(default_factory=InContextConfig)
    evaluation: EvalConfig = dataclasses.field(default_factory=lambda: EvalConfig(eval_tasks=40))
    """Reads `eval_tasks` only (RL²'s trials per held-out task are the trainer's `eval_trials`)."""
    compare_with: tuple[str, ...] = ()
    """Meta-RL run directories (`experiments.navigation`, `experiments.halfcheetah_vel`; one per policy) on the same
    family, horizon and held-out task count, whose MAML, pretrained and random-init curves the report puts beside
    RL² (paired on the seeds both ran)."""
    outer_lr: float = 5e-4
    iterations: int = 320
    chunk_size: int = 20
    checkpoint_every: int = 80
    num_seeds: int = 3
    out_dir: str = "runs/in_context"

    def __post_init__(self):
        super().__post_init__()
        if self.env not in IN_CONTEXT_ENVS:
            raise ValueError(f"unknown env {self.env!r}; expected one of {', '.join(IN_CONTEXT_ENVS)}")
        unknown = sorted(set(self.models) - set(MODEL_NAMES))
        if not self.models or unknown or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct names among {', '.join(MODEL_NAMES)}, got {self.models}")
        if self.trainer.episodes_per_trial < 2:
            raise ValueError("episodes_per_trial must be >= 2: in-context adaptation shows from episode 1 to 2")
        if self.evaluation.eval_trajectories is not None:
            raise ValueError("RL² evaluates trials, not trajectories: set eval_trials, not eval_trajectories")

    @classmethod
    def upgrade_fields(cls, fields: dict) -> dict:
        """As `ExperimentConfig`'s; and RL²'s trials per held-out task, once `eval_trajectories`, are `eval_trials`."""
        fields = super().upgrade_fields(fields)
        evaluation, trainer = fields["evaluation"]["fields"], fields["trainer"]["fields"]
        if "eval_trials" not in trainer:
            trainer["eval_trials"] = evaluation.get("eval_trajectories")
            evaluation["eval_trajectories"] = None
        return fields


_FORMER_CLASSES = {
    "experiments.meta_rl:Args": RunConfig, "ssm_jax.cli.configs:RunConfig": RunConfig,
    "experiments.world_model:Args": WorldModelRunConfig, "experiments.sinusoid:Args": SinusoidRunConfig,
}  # fmt: skip
for _old, _new in _FORMER_CLASSES.items():
    register_renamed(_old, _new.from_fields)
