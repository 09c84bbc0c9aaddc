import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssm_jax import checkpoint
from ssm_jax.models import ModelConfig, make_model


def _state(key):
    config = ModelConfig(input_dim=3, output_dim=2, state_dim=4, hidden_dim=8)
    params = make_model("ssm", config).init(key, jnp.zeros((5, 3)))
    return (params, optax.adam(1e-3).init(params), jnp.int32(7)), config


def test_round_trip_is_bitwise_and_rebuilds_config(tmp_path, key):
    state, config = _state(key)
    checkpoint.save(tmp_path / "ckpt", state, config)
    restored, restored_config = checkpoint.restore(tmp_path / "ckpt", target=state)
    assert restored_config == config
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        assert np.array_equal(np.asarray(a), np.asarray(b))
    params, _ = checkpoint.restore(tmp_path / "ckpt")
    model = make_model("ssm", restored_config)
    _, ys = model.apply(params[0], model.initial_carry(), jnp.ones((4, 3)))
    _, ys_ref = model.apply(state[0], model.initial_carry(), jnp.ones((4, 3)))
    assert np.array_equal(ys, ys_ref)


def test_overwrite_replaces_old_checkpoint(tmp_path, key):
    state, config = _state(key)
    checkpoint.save(tmp_path / "ckpt", state, config)
    newer = (state[0], state[1], jnp.int32(8))
    checkpoint.save(tmp_path / "ckpt", newer, config)
    restored, _ = checkpoint.restore(tmp_path / "ckpt", target=state)
    assert int(restored[2]) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_failed_save_keeps_previous_checkpoint(tmp_path, key):
    state, config = _state(key)
    checkpoint.save(tmp_path / "ckpt", state, config)
    with pytest.raises(TypeError):
        checkpoint.save(tmp_path / "ckpt", (state[0], state[1], jnp.int32(9)), object())
    restored, _ = checkpoint.restore(tmp_path / "ckpt", target=state)
    assert int(restored[2]) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_missing_and_corrupt_checkpoints_raise_clear_errors(tmp_path, key):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nowhere"):
        checkpoint.restore(tmp_path / "nowhere")
    state, config = _state(key)
    path = checkpoint.save(tmp_path / "ckpt", state, config)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt or incomplete checkpoint at .*ckpt"):
        checkpoint.restore(path)
    path = checkpoint.save(tmp_path / "ckpt2", state, config)
    for f in (path / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt or incomplete checkpoint at .*ckpt2"):
        checkpoint.restore(path, target=state)


def test_restore_into_other_shapes_or_dtypes_names_the_first_leaf_that_differs(tmp_path, key):
    config = ModelConfig(input_dim=3, output_dim=2, state_dim=4, hidden_dim=8)
    params = make_model("ssm", config).init(key, jnp.zeros((5, 3)))
    path = checkpoint.save(tmp_path / "ckpt", params, config)
    wider = make_model("ssm", dataclasses.replace(config, hidden_dim=16)).init(key, jnp.zeros((5, 3)))
    first = r"\['params'\]\['mlp_a'\]\['dense_0'\]\['bias'\]"
    with pytest.raises(
        ValueError, match=rf"does not match the target at {first}: stored float32\[8\], expected float32\[16\]$"
    ):
        checkpoint.restore(path, target=wider)
    as_int = jax.tree.map(lambda x: np.zeros(x.shape, np.int32), params)
    with pytest.raises(ValueError, match=r"\['b'\]\['kernel'\]: stored float32\[3, 4\], expected int32\[3, 4\]$"):
        checkpoint.restore(path, target=as_int)
    with pytest.raises(ValueError, match="does not match the target's tree structure$"):
        checkpoint.restore(path, target=jnp.zeros(3))


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
    checkpoint.save(tmp_path / "ckpt", saved, None)
    fresh = {"state": maml.init(params, optax.adam(1e-3)), "buffer": buf.init(jnp.zeros(2)), "iteration": 0}
    restored, config = checkpoint.restore(tmp_path / "ckpt", target=fresh)
    assert config is None and int(restored["iteration"]) == 5
    assert restored["state"].optimizer is fresh["state"].optimizer  # static field comes from the target
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(saved), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    resumed, _ = maml.step(restored["state"], (jnp.ones((2, 3, 2)), jnp.ones((2, 3, 2))))
    assert int(resumed.step) == 2
