"""Sharding over 4 host CPU devices equals the single-device computation (in a subprocess: the device count is fixed
when JAX starts)."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from ssm_jax import distributed, envs, sweep
    from ssm_jax.models import GaussianHead, ModelConfig, attach_heads, make_model
    from ssm_jax.trainers import HParams, TrainerConfig, make_meta_rl_trainer

    assert jax.device_count() == 4
    env = envs.make("navigation-2d", horizon=10)
    policy = attach_heads(make_model("mlp", ModelConfig(2, 16, hidden_dim=16, num_layers=2)), pi=GaussianHead(2))
    config = TrainerConfig(tasks_per_batch=4, trajectories_per_task=3, horizon=10, window=5, buffer_size=64)
    close = lambda a, b: jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-4), a, b
    )

    # A sweep's runs split over the devices: each device trains its run; the result is the one-device result.
    trainer = make_meta_rl_trainer(env, policy, config)
    grid = sweep.make_grid(range(4))
    programs = sweep.make_programs(trainer, chunk_size=1)
    states = programs.init(grid.keys.init, grid.hparams(HParams.create(outer_lr=1e-2)))
    keys = sweep.chunk_keys(grid.keys.train, 1)[0]
    single, _ = programs.train(jax.tree.map(jnp.copy, states), keys)
    sharded, _ = programs.train(distributed.shard_runs(states, distributed.make_mesh()), keys)
    assert len(jax.tree.leaves(sharded.meta.params)[0].sharding.device_set) == 4
    close(sharded.meta.params, single.meta.params)

    # Their checkpoint: saved as they are (nothing gathered to one host), restored onto the same shardings.
    import tempfile
    from ssm_jax import checkpoint
    directory = tempfile.mkdtemp()
    checkpoint.save(directory, 1, sharded, None)
    restored, _ = checkpoint.restore(directory, 1, target=sharded)
    assert len(jax.tree.leaves(restored.meta.params)[0].sharding.device_set) == 4
    jax.tree.map(np.testing.assert_array_equal, restored, sharded)

    # One run's tasks split over the devices: XLA reduces the meta-gradient across them (all-reduce in the program).
    task_trainer = make_meta_rl_trainer(
        env, policy, config, task_sharding=distributed.task_sharding(distributed.make_mesh(runs=1, tasks=4))
    )
    state = jax.jit(trainer.init, static_argnums=2)(jax.random.key(0), HParams.create(outer_lr=1e-2), True)
    reference, _ = jax.jit(trainer.train, static_argnums=2)(state, jax.random.key(1), 1)
    compiled = jax.jit(task_trainer.train, static_argnums=2).lower(state, jax.random.key(1), 1).compile()
    assert "all-reduce" in compiled.as_text()
    task_sharded, _ = compiled(state, jax.random.key(1))
    close(task_sharded.meta.params, reference.meta.params)
    print("sharded steps equal the single-device steps")

    # experiments.sweep splits its runs over every device by itself, and refuses a run count that does not divide.
    import dataclasses, json, sys
    from experiments import sweep as sweep_experiment
    smoke = dataclasses.replace(sweep_experiment.PRESETS["smoke"], out_dir=sys.argv[1])
    try:
        sweep_experiment.main(dataclasses.replace(smoke, num_seeds=3, sweep_inner_lr=(0.1,)))
    except SystemExit as exit_info:  # one line on stderr ("3 runs cannot be split evenly over 4 devices"), exit 2
        assert exit_info.code == 2
    else:
        raise AssertionError("3 runs on 4 devices should exit 2")
    print(json.dumps(sweep_experiment.main(smoke)["aggregate"]))
    """
)


@pytest.mark.slow
def test_sharded_runs_and_tasks_on_4_cpu_devices_equal_the_single_device_step(tmp_path):
    from experiments import sweep as sweep_experiment

    # At XLA's default optimisation, as users run it: the user's own flags, not the suite's fast test flags.
    flags = f"{os.environ.get('SSM_JAX_USER_XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-c", SCRIPT, str(tmp_path / "sharded")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded steps equal the single-device steps" in result.stdout
    assert "error: 3 runs cannot be split evenly over 4 devices\n" in result.stderr
    sharded = json.loads(result.stdout.strip().splitlines()[-1])
    smoke = dataclasses.replace(sweep_experiment.PRESETS["smoke"], out_dir=str(tmp_path / "one"))
    alone = json.loads(json.dumps(sweep_experiment.main(smoke)["aggregate"]))  # the same JSON keys as the script's
    for name, by_value in alone.items():
        for value, pooled in by_value.items():
            np.testing.assert_allclose(sharded[name][value]["mean"], pooled["mean"], rtol=1e-3, atol=1e-3)


def test_mesh_and_run_sharding_reject_shapes_that_do_not_divide():
    from ssm_jax import distributed

    with pytest.raises(ValueError, match="must use all 1 devices"):
        distributed.make_mesh(runs=2)
    with pytest.raises(ValueError, match="leading run axis divisible by"):
        distributed.shard_runs({"x": 0.0}, distributed.make_mesh())
