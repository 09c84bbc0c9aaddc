import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from ssm_jax import checkpoint
from ssm_jax.config.io import config_from_json, config_to_json
from ssm_jax.models import ModelConfig, make_model


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _state(key):
    config = ModelConfig(input_dim=3, output_dim=2, state_dim=4, hidden_dim=8)
    params = make_model("ssm", config).init(key, jnp.zeros((5, 3)))
    return (params, optax.adam(1e-3).init(params), jnp.int32(7)), config


def test_round_trip_is_bitwise_and_rebuilds_config(tmp_path, key):
    state, config = _state(key)
    path = checkpoint.save(tmp_path, 3, state, config)
    assert path == tmp_path / "step_3" and checkpoint.steps(tmp_path) == [3]
    restored, restored_config = checkpoint.restore(tmp_path, 3, target=state)
    assert restored_config == config
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        assert np.array_equal(np.asarray(a), np.asarray(b))
    params, _ = checkpoint.restore(tmp_path, 3)
    model = make_model("ssm", restored_config)
    _, ys = model.apply(params[0], model.initial_carry(), jnp.ones((4, 3)))
    _, ys_ref = model.apply(state[0], model.initial_carry(), jnp.ones((4, 3)))
    assert np.array_equal(ys, ys_ref)


def test_the_manager_keeps_the_newest_steps_and_a_saved_step_as_it_is(tmp_path, key):
    state, config = _state(key)
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, (state[0], state[1], jnp.int32(step)), config, keep=2)
    assert checkpoint.steps(tmp_path) == [2, 3] and sorted(p.name for p in tmp_path.iterdir()) == ["step_2", "step_3"]
    checkpoint.save(tmp_path, 3, (state[0], state[1], jnp.int32(30)), config, keep=2)
    assert int(checkpoint.restore(tmp_path, 3, target=state)[0][2]) == 3


def test_an_unstorable_config_writes_nothing(tmp_path, key):
    state, config = _state(key)
    checkpoint.save(tmp_path, 1, state, config)
    with pytest.raises(TypeError, match="cannot store"):
        checkpoint.save(tmp_path, 2, (state[0], state[1], jnp.int32(9)), object())
    assert checkpoint.steps(tmp_path) == [1]
    assert int(checkpoint.restore(tmp_path, 1, target=state)[0][2]) == 7


def test_a_config_naming_a_foreign_class_is_refused_in_one_line():
    foreign = json.dumps({"__dataclass__": "subprocess:Popen", "fields": {"args": ["true"]}})
    with pytest.raises(
        ValueError, match=r"names subprocess:Popen, which is not a registered ssm_jax config class"
    ) as e:
        config_from_json(foreign)
    assert "\n" not in str(e.value)
    assert config_from_json(config_to_json(ModelConfig(3, 2))) == ModelConfig(3, 2)


def test_a_step_written_before_the_manager_still_restores(tmp_path, key):
    """The earlier layout: `step_<n>/state` (orbax PyTree) beside a `config.json` file."""
    state, config = _state(key)
    step = tmp_path / "step_5"
    with ocp.PyTreeCheckpointer() as legacy:
        legacy.save(step / "state", jax.tree.map(np.asarray, state))
    (step / "config.json").write_text(config_to_json(config))
    assert checkpoint.steps(tmp_path) == [5]
    restored, restored_config = checkpoint.restore(tmp_path, 5, target=state)
    assert restored_config == config and int(restored[2]) == 7


def test_missing_and_corrupt_checkpoints_raise_clear_errors(tmp_path, key):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*step_1"):
        checkpoint.restore(tmp_path / "nowhere", 1)
    state, config = _state(key)
    path = checkpoint.save(tmp_path / "a", 1, state, config)
    (path / "config" / "metadata").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt or incomplete checkpoint at .*a/step_1"):
        checkpoint.restore(tmp_path / "a", 1)
    path = checkpoint.save(tmp_path / "b", 1, state, config)
    for f in (path / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt or incomplete checkpoint at .*b/step_1"):
        checkpoint.restore(tmp_path / "b", 1, target=state)


def test_one_flipped_byte_anywhere_in_a_step_is_detected_and_the_step_before_is_used(tmp_path, key, capsys):
    """A byte flipped in any of the state's files, at five offsets: the step never restores other values silently
    (orbax refuses it, or the checksum recorded at save time does), and the run falls back to the step before it."""
    from ssm_jax import run_files

    config = ModelConfig(input_dim=3, output_dim=2, state_dim=4, hidden_dim=8)
    params = make_model("ssm", config).init(key, jnp.zeros((5, 3)))
    older = jax.tree.map(lambda x: x + 1.0, params)
    files = []
    for directory in ("a", "b"):
        path = checkpoint.save(tmp_path / directory / run_files.CHECKPOINTS, 1, params, config)
        files += [(directory, f) for f in sorted((path / "state").rglob("*")) if f.is_file() and f.stat().st_size]
    caught = []
    for directory, f in files:
        size = f.stat().st_size
        for offset in sorted({0, size // 4, size // 2, 3 * size // 4, size - 1}):
            fresh = tmp_path / "flipped"
            shutil.rmtree(fresh, ignore_errors=True)
            shutil.copytree(tmp_path / directory, fresh)
            victim = fresh / f.relative_to(tmp_path / directory)
            data = bytearray(victim.read_bytes())
            data[offset] ^= 0x01
            victim.write_bytes(bytes(data))
            try:
                restored, _ = checkpoint.restore(fresh / run_files.CHECKPOINTS, 1, target=params)
            except checkpoint.CorruptCheckpoint as error:
                caught.append(str(error))
                continue
            assert _leaves_equal(restored, params), (victim, offset)  # a byte orbax never reads changes nothing
    assert len(caught) >= len(files)  # every file holds bytes whose flip is caught
    # Flips orbax decodes into other values (values up to 2.5e38 were seen) meet the recorded checksum:
    recorded = path / "checksum" / "metadata"
    recorded.write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(checkpoint.CorruptCheckpoint, match="the state's contents differ from the checksum"):
        checkpoint.restore(tmp_path / "b" / run_files.CHECKPOINTS, 1, target=params)
    checkpoint.save(tmp_path / "c" / run_files.CHECKPOINTS, 1, older, config)
    path = checkpoint.save(tmp_path / "c" / run_files.CHECKPOINTS, 2, params, config)
    data_file = max((f for f in (path / "state").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    data = bytearray(data_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    data_file.write_bytes(bytes(data))
    restored, used = run_files.restore_latest(tmp_path / "c", params)
    assert used.name == "step_1" and _leaves_equal(restored, older)
    assert "step_2: " in capsys.readouterr().err


def test_restore_into_other_shapes_or_dtypes_names_the_first_leaf_that_differs(tmp_path, key):
    config = ModelConfig(input_dim=3, output_dim=2, state_dim=4, hidden_dim=8)
    params = make_model("ssm", config).init(key, jnp.zeros((5, 3)))
    checkpoint.save(tmp_path, 1, params, config)
    path = tmp_path
    wider = make_model("ssm", dataclasses.replace(config, hidden_dim=16)).init(key, jnp.zeros((5, 3)))
    first = r"\['params'\]\['mlp_a'\]\['dense_0'\]\['bias'\]"
    with pytest.raises(
        ValueError, match=rf"does not match the target at {first}: stored float32\[8\], expected float32\[16\]$"
    ):
        checkpoint.restore(path, 1, target=wider)
    as_int = jax.tree.map(lambda x: np.zeros(x.shape, np.int32), params)
    with pytest.raises(ValueError, match=r"\['b'\]\['kernel'\]: stored float32\[3, 4\], expected int32\[3, 4\]$"):
        checkpoint.restore(path, 1, target=as_int)
    with pytest.raises(ValueError, match="does not match the target's tree structure$"):
        checkpoint.restore(path, 1, target=jnp.zeros(3))


def test_train_state_with_static_optimizer_and_buffer_round_trips(tmp_path, key):
    from ssm_jax.buffer import make_experience_buffer
    from ssm_jax.meta import make_maml
    from ssm_jax.models import ModelConfig, make_model

    model = make_model("mlp", ModelConfig(input_dim=2, output_dim=1, hidden_dim=4))
    params = model.init(key, jnp.zeros((1, 2)))
    maml = make_maml(lambda p, b: (jnp.mean(model.apply(p, (), b)[1] ** 2), {}))
    state = maml.init(params, optax.adam(1e-3))
    state, _ = maml.step(state, (jnp.ones((2, 3, 2)), jnp.ones((2, 3, 2))))
    buf = make_experience_buffer(4)
    buffer_state = buf.add(buf.init(jnp.zeros(2)), jnp.arange(6.0).reshape(3, 2))
    saved = {"state": state, "buffer": buffer_state, "iteration": 5}
    checkpoint.save(tmp_path, 1, saved, None)
    fresh = {"state": maml.init(params, optax.adam(1e-3)), "buffer": buf.init(jnp.zeros(2)), "iteration": 0}
    restored, config = checkpoint.restore(tmp_path, 1, target=fresh)
    assert config is None and int(restored["iteration"]) == 5
    assert restored["state"].optimizer is fresh["state"].optimizer  # static field comes from the target
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(saved), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    resumed, _ = maml.step(restored["state"], (jnp.ones((2, 3, 2)), jnp.ones((2, 3, 2))))
    assert int(resumed.step) == 2


def test_configs_recorded_by_earlier_commits_still_load():
    """The recorded runs under docs/results were written by `experiments.meta_rl:Args`, a class that is gone, with
    `adapt_steps` for `adapt_rounds`; they load as `RunConfig`s (and the study's as its subclass) with their values.
    So does a config of the CLI's former `RunConfig`, whose env was a nested `EnvConfig` and whose `TrainerConfig`
    held the evaluation protocol."""
    from ssm_jax.config import RunConfig
    from ssm_jax.config.studies import StudyArgs

    recorded = {
        path.parent.name: path for path in (Path(__file__).parents[1] / "docs" / "results").rglob("config.json")
    }
    flagship = config_from_json(recorded["halfcheetah_vel_cpu"].read_text())
    assert type(flagship) is RunConfig and flagship.env == "halfcheetah-vel" and flagship.model == "ssm"
    assert (flagship.trainer.tasks_per_batch, flagship.evaluation.adapt_rounds, flagship.network.hidden_dim) == (
        5,
        3,
        64,
    )
    study = config_from_json(recorded["budget_study_vel"].read_text())
    assert type(study) is StudyArgs and study.evaluation.adapt_rounds == 1
    assert study.budgets == (5e5, 1e6, 2e6, 3e6, 5e6, 1e7) and study.evaluation.eval_tasks == 64

    cli_config = {"__dataclass__": "ssm_jax.cli.configs:RunConfig", "fields": {
        "env": {"__dataclass__": "ssm_jax.cli.configs:EnvConfig", "fields": {
            "name": "halfcheetah-dir", "backend": "generalized", "goals": "uniform"}},
        "model": "gru", "seed": 4, "method": "pretrained",
        "trainer": {"__dataclass__": "ssm_jax.train_config:TrainerConfig", "fields": {
            "horizon": 50, "window": 10, "adapt_rounds": 2, "eval_trajectories": 40, "later_rounds_lr_scale": 0.5}},
    }}  # fmt: skip
    config = config_from_json(json.dumps(cli_config))
    assert (config.env, config.backend, config.model, config.seed, config.method) == (
        "halfcheetah-dir",
        "generalized",
        "gru",
        4,
        "pretrained",
    )
    assert (config.trainer.horizon, config.trainer.window) == (50, 10)
    evaluation = config.evaluation
    assert (evaluation.adapt_rounds, evaluation.eval_trajectories, evaluation.later_rounds_lr_scale) == (2, 40, 0.5)


def test_configs_stored_under_the_glossarys_older_words_load_under_the_new_ones():
    """The recorded world-model, sinusoid and RL² pages were written before the glossary gave each thing one word:
    `adapt_steps` / `eval_steps` (adaptation rounds), `scratch_steps` (the oracle's iterations), `meta_batch`
    (tasks per batch), RL²'s trials per held-out task as the evaluation's `eval_trajectories`, and the reference
    goal set named "seed". They load with the same values under today's names, and the round trip is exact."""
    recorded = {
        path.parent.name: path for path in (Path(__file__).parents[1] / "docs" / "results").rglob("config.json")
    }
    assert '"adapt_steps"' in recorded["replay_world_model_h200"].read_text()
    world_model = config_from_json(recorded["replay_world_model_h200"].read_text())
    stored = json.loads(recorded["replay_world_model_h200"].read_text())["fields"]["trainer"]["fields"]
    assert (world_model.trainer.adapt_rounds, world_model.trainer.oracle_iterations, world_model.trainer.oracle_lr) == (
        stored["adapt_steps"], stored["scratch_steps"], stored["scratch_lr"]
    )  # fmt: skip
    sinusoid = json.loads(recorded["sinusoid_paper"].read_text())["fields"]
    loaded = config_from_json(recorded["sinusoid_paper"].read_text())
    assert (loaded.tasks_per_batch, loaded.adapt_rounds, loaded.inner_steps) == (
        sinusoid["meta_batch"], sinusoid["eval_steps"], sinusoid["train_inner_steps"]
    )  # fmt: skip
    in_context = json.loads(recorded["in_context_navigation"].read_text())["fields"]
    rl2 = config_from_json(recorded["in_context_navigation"].read_text())
    assert rl2.trainer.eval_trials == in_context["evaluation"]["fields"]["eval_trajectories"] == 10
    assert rl2.evaluation.eval_trajectories is None

    from ssm_jax.config import CONFIGS, replace

    seed_goals = json.loads(config_to_json(replace(CONFIGS["halfcheetah-vel"], goals="reference")))
    seed_goals["fields"]["goals"] = "seed"
    assert config_from_json(json.dumps(seed_goals)).goals == "reference"
    for config in (world_model, loaded, rl2):
        assert config_from_json(config_to_json(config)) == config
    with pytest.raises(ValueError, match="RL² evaluates trials, not trajectories"):
        replace(rl2, eval_trajectories=4)


def test_checkpoint_calls_leave_the_processs_hooks_filters_and_warnings_as_they_were(tmp_path):
    """orbax's noise is kept off stderr only within each call: a user's program keeps its own error reporting."""
    import logging
    import sys
    import warnings

    def reporting():
        loggers = [logging.getLogger(name).filters[:] for name in ("absl", "asyncio")]
        return sys.excepthook, sys.unraisablehook, list(warnings.filters), loggers

    before = reporting()
    state = {"w": np.arange(4.0)}
    checkpoint.save(tmp_path, 1, state, None)
    assert checkpoint.steps(tmp_path) == [1]
    restored, _ = checkpoint.restore(tmp_path, 1, target=state)
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert reporting() == before
