import dataclasses

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssm_jax import envs, sweep
from ssm_jax.adapt import AdapterConfig
from ssm_jax.adapt.rl import make_rl_adaptation
from ssm_jax.buffer import experience_windows, make_experience_buffer
from ssm_jax.envs.normalize import normalize
from ssm_jax.meta.policy_losses import prepare_batch
from ssm_jax.models import GaussianHead, ModelConfig, attach_heads, make_model
from ssm_jax.trainers import EvalConfig, HParams, TrainerConfig, make_meta_rl_trainer

CONFIG = TrainerConfig(tasks_per_batch=2, trajectories_per_task=3, horizon=10, window=5, buffer_size=50)
EVALUATION = EvalConfig(adapt_rounds=1)


@pytest.fixture(scope="module")
def setup():
    env = envs.make("navigation-2d", horizon=10)
    core = make_model("mlp", ModelConfig(input_dim=2, output_dim=16, hidden_dim=16, num_layers=2))
    policy = attach_heads(core, pi=GaussianHead(2))
    trainer = make_meta_rl_trainer(env, policy, CONFIG, EVALUATION)
    return env, policy, trainer, jax.jit(trainer.train, static_argnums=2)


def _assert_close(a, b, atol=1e-5):  # jit and vmap fuse the same maths in different orders: float-level differences
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=atol), a, b)


def _leaves_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.slow
def test_trainer_equals_the_hand_written_meta_rl_loop(setup, key):
    env, policy, trainer, train = setup
    hparams = HParams.create(inner_lr=0.1, outer_lr=1e-2, experience_weight=0.1)
    state, metrics = train(trainer.init(key, hparams), jax.random.key(1), 2)

    params_key, task_key, stats_key = jax.random.split(key, 3)
    params = policy.init(params_key, jnp.zeros((1, 2)))
    stats = trainer.parts.meta_rl.initial_obs_stats(stats_key, env.sample_tasks(task_key, 2), params)
    meta = trainer.parts.meta_rl.init(params, optax.adam(1e-2)).replace(inner_lr=jnp.float32(0.1))
    buf = make_experience_buffer(50)
    buffer = buf.init((jnp.zeros((5, 2)), jnp.zeros((5, 2))))
    for k in jax.random.split(jax.random.key(1), 2):
        task_key, update_key = jax.random.split(k)
        tasks = env.sample_tasks(task_key, 2)
        meta, new_stats, hand_metrics, query = jax.jit(trainer.parts.meta_rl.meta_update)(
            meta, stats, update_key, tasks
        )
        buffer = buf.add(buffer, *experience_windows(normalize(stats, query.obs), query.action, query.done, 5))
        stats = new_stats
    _assert_close(state.meta.params, meta.params)
    _assert_close(state.obs_stats, stats)
    _assert_close(state.buffer.items, buffer.items)
    _assert_close(metrics["post_adaptation_return"][-1], hand_metrics["post_adaptation_return"])
    assert int(state.iteration) == 2 and int(state.buffer.size) == int(buffer.size) > 0


def test_same_seed_same_numbers_and_a_traced_hyperparameter_changes_them(setup, key):
    _, _, trainer, train = setup
    outer_lrs = (1e-3, 3e-2)
    runs = [train(trainer.init(key, HParams.create(outer_lr=lr)), jax.random.key(2), 2) for lr in outer_lrs]
    again = train(trainer.init(key, HParams.create(outer_lr=outer_lrs[0])), jax.random.key(2), 2)
    assert _leaves_equal(runs[0], again)  # deterministic
    assert not _leaves_equal(runs[0][0].meta.params, runs[1][0].meta.params)


@pytest.mark.slow
def test_sweep_of_4_seeds_by_2_inner_lrs_equals_the_8_runs_and_compiles_once(
    setup, fully_optimised_jit, xla_default_optimisation
):
    """At XLA's default optimisation, as users run it."""
    _, _, trainer, _ = setup
    grid = sweep.make_grid(range(4), inner_lr=(0.05, 0.2))
    assert grid.size == 8 and grid.runs()[5] == {"seed": 1, "inner_lr": 0.2}
    counted = trainer._replace(train=chex.assert_max_traces(trainer.train, n=1))
    programs = sweep.make_programs(counted, chunk_size=1, compiler_options=xla_default_optimisation)
    states = programs.init(grid.keys.init, grid.hparams(HParams.create(outer_lr=1e-2)))
    for chunk_keys in sweep.chunk_keys(grid.keys.train, 2):  # two calls of the chunk: the second must not retrace
        states, _ = programs.train(states, chunk_keys)

    init, train = (
        fully_optimised_jit(trainer.init, static_argnums=2),
        fully_optimised_jit(trainer.train, static_argnums=2),
    )
    for i, run in enumerate(grid.runs()):  # each run made alone, with its seed's keys
        keys = sweep.run_keys(run["seed"])
        state = init(keys.init, HParams.create(inner_lr=run["inner_lr"], outer_lr=1e-2), True)
        for chunk_key in sweep.chunk_keys(keys.train, 2):
            state, _ = train(state, chunk_key, 1)
        # Adam's g / |g| turns float32 round-off in near-zero gradient entries into parameter differences of up
        # to about 2e-4 after two steps at 1e-2; the swept value moves parameters 50x further (checked below)
        _assert_close(jax.tree.map(lambda x, i=i: x[i], states.meta.params), state.meta.params, atol=1e-3)
    same_seed = [jax.tree.map(lambda x, i=i: x[i], states.meta.params) for i in (0, 4)]  # seed 0, lr 0.05 / 0.2
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*map(jax.tree.leaves, same_seed), strict=True)) > 5e-2


def test_a_sweep_over_experience_weight_changes_the_hybrid_curve_and_only_it(setup):
    """`evaluate(..., "hybrid")` reads each run's own `hparams.experience_weight`: runs that differ only in it train
    alike, give the same standard curve, and weight 0 gives exactly the standard curve."""
    env, policy, _, _ = setup
    trainer = make_meta_rl_trainer(env, policy, CONFIG, dataclasses.replace(EVALUATION, replay="meta"))
    grid = sweep.make_grid(range(1), experience_weight=(0.0, 2.0))
    programs = sweep.make_programs(trainer, chunk_size=1)
    states, _ = programs.train(programs.init(grid.keys.init, grid.hparams(HParams.create())), grid.keys.train)
    assert int(states.buffer.size[1]) > 0  # the hybrid adapter has windows to replay
    tasks, keys = sweep.held_out_tasks(env, grid.keys.eval, 3)
    standard, hybrid = (np.asarray(programs.evaluate(states, keys, tasks, mode)[0]) for mode in ("standard", "hybrid"))
    np.testing.assert_array_equal(standard[0], standard[1])
    np.testing.assert_array_equal(hybrid[0], standard[0])
    assert not np.allclose(hybrid[1, :, 1:], hybrid[0, :, 1:])


@pytest.mark.parametrize(
    ("replay", "task_loss"), [("task", "clipped_pg"), ("task", "kl_anchor"), ("both", "clipped_pg")]
)
def test_task_replay_at_weight_zero_is_standard_and_leaves_the_meta_buffer_alone(setup, replay, task_loss):
    """Hybrid with the task buffer (alone or with the meta-training buffer): weight 0 is the standard curve bit for
    bit, a positive weight changes it from the first update on (the task buffer holds that round's trajectories),
    and evaluation neither writes nor consumes the meta-training buffer."""
    env, policy, _, _ = setup
    evaluation = dataclasses.replace(EVALUATION, adapt_rounds=2, replay=replay, task_replay_loss=task_loss)
    trainer = make_meta_rl_trainer(env, policy, CONFIG, evaluation)
    grid = sweep.make_grid(range(1), experience_weight=(0.0, 1.0))
    programs = sweep.make_programs(trainer, chunk_size=1)
    states, _ = programs.train(programs.init(grid.keys.init, grid.hparams(HParams.create())), grid.keys.train)
    buffer_before = jax.tree.map(np.array, states.buffer)
    tasks, keys = sweep.held_out_tasks(env, grid.keys.eval, 3)
    standard, hybrid = (np.asarray(programs.evaluate(states, keys, tasks, mode)[0]) for mode in ("standard", "hybrid"))
    np.testing.assert_array_equal(hybrid[0], standard[0])
    assert not np.allclose(hybrid[1, :, 1:], hybrid[0, :, 1:])
    np.testing.assert_array_equal(hybrid[1, :, 0], hybrid[0, :, 0])  # before any update: the same episodes
    assert _leaves_equal(states.buffer, buffer_before) and int(states.buffer.size[0]) > 0


def test_each_tasks_buffer_holds_only_its_own_trajectories(setup, key):
    """Under vmap each task adapts with a task buffer of its own: a task's curve is the same alone or beside
    another task (nothing leaks between tasks), and the curve does not depend on what was evaluated before."""
    env, policy, _, _ = setup
    evaluation = dataclasses.replace(EVALUATION, adapt_rounds=2, replay="task")
    trainer = make_meta_rl_trainer(env, policy, CONFIG, evaluation)
    state = trainer.init(key, HParams.create(experience_weight=1.0))
    tasks = env.sample_tasks(jax.random.key(3), 2)
    keys = jax.random.split(jax.random.key(4), 2)
    curve = _task_replay_curve(trainer, state)
    together = np.asarray(jax.jit(jax.vmap(curve))(keys, tasks))
    alone = [np.asarray(jax.jit(curve)(keys[i], jax.tree.map(lambda x, i=i: x[i], tasks))) for i in range(2)]
    np.testing.assert_allclose(together, np.stack(alone), rtol=1e-5, atol=1e-5)
    again = np.asarray(jax.jit(curve)(keys[0], jax.tree.map(lambda x: x[0], tasks)))
    np.testing.assert_array_equal(again, alone[0])


def _task_replay_curve(trainer, state):
    """`curve(key, task) -> returns [K + 1]`: the trainer's hybrid task-replay evaluation of one task."""
    adapter_config = AdapterConfig(num_steps=1, optimizer="sgd", grad_clip_norm=CONFIG.inner_grad_clip)
    curve = make_rl_adaptation(
        trainer.parts.meta_rl,
        adapter_config,
        trainer.parts.rl_config,
        trainer.parts.evaluation.adapt_rounds,
        replay="task",
    )
    return lambda k, task: curve(
        k, task, state.meta.params, None, state.hparams.experience_weight, state.obs_stats, state.hparams.inner_lr
    )[0]


def test_a_task_switch_mid_episode_changes_the_second_half_and_a_frozen_agent_forgets_nothing(setup, key):
    env, _, trainer, _ = setup
    state = trainer.init(key, HParams.create(experience_weight=1.0))
    tasks = env.sample_tasks(jax.random.key(5), 3)
    online = jax.jit(trainer.evaluate_online, static_argnames=("mode", "window", "every"))
    moved = jax.tree.map(lambda x: -x, tasks)  # the goal jumps to the opposite corner
    run = lambda every, switch_to: online(state, key, tasks, "hybrid", 4, every, switch_to)[1]
    same, switched, frozen = run(2, tasks), run(2, moved), run(CONFIG.horizon + 1, moved)
    assert set(switched) == {"adaptations", "after_switch", "first_task_at_switch", "first_task_at_end"}
    assert not np.allclose(same["after_switch"], switched["after_switch"])
    np.testing.assert_array_equal(frozen["first_task_at_switch"], frozen["first_task_at_end"])
    assert not np.allclose(switched["first_task_at_switch"], switched["first_task_at_end"])
    assert np.all(np.asarray(frozen["adaptations"]) == 0) and np.all(np.asarray(switched["adaptations"]) > 0)


def test_sweep_fields_are_checked_before_anything_compiles():
    with pytest.raises(ValueError, match="'horizon' is not a traced hyperparameter: inside one program only inner_lr"):
        sweep.make_grid(range(2), horizon=(10, 20))
    with pytest.raises(ValueError, match="'lr' is not a traced hyperparameter"):
        sweep.make_grid(range(2), lr=(0.1,))
    with pytest.raises(ValueError, match="at least one seed"):
        sweep.make_grid([], inner_lr=(0.1,))
    with pytest.raises(ValueError, match="HParams need inner_lr > 0"):
        sweep.make_grid(range(2), inner_lr=(0.1, -0.1))


@pytest.mark.slow
def test_pretrained_baseline_keeps_inner_lr_zero_and_evaluation_has_the_documented_shape(setup, key):
    env, _, trainer, train = setup
    hparams = HParams.create()
    maml, _ = train(trainer.init(key, hparams), jax.random.key(3), 2)
    pretrained, _ = train(trainer.init(key, hparams, adapt=False), jax.random.key(3), 2)
    assert float(pretrained.meta.inner_lr) == 0.0 and float(maml.meta.inner_lr) == pytest.approx(0.1)
    assert _leaves_equal(trainer.init(key, hparams).meta.params, trainer.init(key, hparams, adapt=False).meta.params)
    assert not _leaves_equal(maml.meta.params, pretrained.meta.params)
    tasks = env.sample_tasks(jax.random.key(4), 3)
    returns, _ = jax.jit(trainer.evaluate)(pretrained, jax.random.key(5), tasks)
    assert returns.shape == (3, EVALUATION.adapt_rounds + 1) and bool(jnp.all(jnp.isfinite(returns)))
    assert not np.allclose(returns[:, 0], returns[:, 1])  # evaluation adapts with the hyperparameter's rate, not 0
    oracle = jax.jit(trainer.oracle, static_argnums=3)(trainer.init(key, hparams), jax.random.key(6), tasks, 2)
    assert oracle.shape == (3, 2)
    donating = jax.jit(trainer.train, static_argnums=2, donate_argnums=0)
    for adapt in (True, False):  # an eager init's state shares no buffer with `hparams` or with itself
        donating(trainer.init(key, hparams, adapt=adapt), jax.random.key(7), 1)
    assert float(hparams.inner_lr) == pytest.approx(0.1)


def test_pretrained_baseline_samples_maml_budget_and_learns_from_every_trajectory(setup, key):
    env, _, trainer, _ = setup
    meta_rl, rounds, n = trainer.parts.meta_rl, CONFIG.inner_steps + 1, CONFIG.trajectories_per_task
    hparams = HParams.create(outer_lr=1e-2)
    state = trainer.init(key, hparams, adapt=False)
    tasks = env.sample_tasks(jax.random.key(1), CONFIG.tasks_per_batch)
    new, _, metrics, trajs = jax.jit(meta_rl.pretrain_update)(state.meta, state.obs_stats, jax.random.key(2), tasks)
    maml = trainer.init(key, hparams)
    maml_metrics = jax.jit(meta_rl.meta_update)(maml.meta, maml.obs_stats, jax.random.key(2), tasks)[2]
    budget = CONFIG.tasks_per_batch * rounds * n * CONFIG.horizon
    assert float(metrics["env_steps"]) == float(maml_metrics["env_steps"]) == budget
    assert trajs.obs.shape[:3] == (CONFIG.tasks_per_batch, CONFIG.horizon, rounds * n)

    def ppo_epochs(trajs):  # the outer step by hand, on the trajectories given
        batches = jax.vmap(lambda t: prepare_batch(t, trainer.parts.rl_config, state.obs_stats))(trajs)
        objective = lambda p: jnp.mean(jax.vmap(lambda b: meta_rl.outer_loss(p, b)[0])(batches))
        params, opt_state = state.meta.params, state.meta.opt_state
        for _ in range(CONFIG.outer_epochs):
            updates, opt_state = state.meta.optimizer.update(jax.grad(objective)(params), opt_state, params)
            params = optax.apply_updates(params, updates)
        return params

    every = jax.jit(ppo_epochs)(trajs)
    query_only = jax.tree.map(lambda x: x[:, :, -n:], trajs._replace(initial_carry=None))  # leaves [E, T, N', ...]
    query_only = query_only._replace(initial_carry=jax.tree.map(lambda x: x[:, -n:], trajs.initial_carry))
    query_only = jax.jit(ppo_epochs)(query_only)
    _assert_close(new.params, every)  # the update is the outer step on all (K + 1) x N trajectories ...
    moved = lambda params: np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])
    assert not np.allclose(moved(every), moved(query_only), atol=1e-4)  # ... so it depends on the support rounds'


def test_bad_configs_raise_one_line_errors():
    with pytest.raises(ValueError, match="TrainerConfig.window=20 must not exceed horizon=10"):
        TrainerConfig(horizon=10, window=20)
    with pytest.raises(ValueError, match="eval_tasks, adapt_rounds and steps_per_round must be >= 1"):
        EvalConfig(adapt_rounds=0)
    with pytest.raises(ValueError, match="eval_tasks, adapt_rounds and steps_per_round must be >= 1"):
        EvalConfig(steps_per_round=0)
    with pytest.raises(ValueError, match="unknown replay 'all'; expected one of meta, task, both"):
        EvalConfig(replay="all")
    with pytest.raises(ValueError, match="unknown task_replay_loss 'bc'; expected one of clipped_pg, kl_anchor"):
        EvalConfig(task_replay_loss="bc")
    with pytest.raises(ValueError, match="later_rounds_lr_scale must be > 0"):
        EvalConfig(later_rounds_lr_scale=0.0)
    with pytest.raises(ValueError, match="TrainerConfig.cg_iters must be a positive int"):
        TrainerConfig(cg_iters=0)
    with pytest.raises(ValueError, match="HParams need inner_lr > 0"):
        HParams.create(inner_lr=0.0)
    with pytest.raises(ValueError, match="TrainerConfig.matmul_precision must be one of"):
        TrainerConfig(matmul_precision="fp8")


def test_every_matmul_of_the_training_program_is_traced_at_the_configured_precision(setup, key):
    env, policy, trainer, _ = setup
    state = jax.eval_shape(trainer.init, key, HParams.create())  # shapes are all tracing needs: nothing compiles

    def dot_precisions(trainer):
        jaxpr = jax.make_jaxpr(trainer.train, static_argnums=2)(state, key, 1)
        found = set()

        def visit(jaxpr):
            for eqn in jaxpr.eqns:
                if eqn.primitive.name == "dot_general":
                    found.add(eqn.params["precision"])
                for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                    visit(sub)

        visit(jaxpr.jaxpr)
        return found

    highest = jax.lax.Precision.HIGHEST
    assert dot_precisions(trainer) == {(highest, highest)}  # full float32 even where a GPU would use TF32
    backend_default = make_meta_rl_trainer(env, policy, dataclasses.replace(CONFIG, matmul_precision=None), EVALUATION)
    assert None in dot_precisions(backend_default)  # the policy's matmuls at the backend's default


def test_each_method_is_scored_at_its_best_step_size_chosen_on_validation_tasks(setup):
    """`sweep.at_best_step_size` picks the multiple of the adaptation rate (and the schedule) with the best mean
    over runs, tasks and rounds 1..K, a diverged value the worst, the other way round where lower is better; its
    scores are the real program's on validation tasks, which are never the held-out ones."""
    env, _, trainer, _ = setup
    grid = sweep.make_grid(range(2))
    programs = sweep.make_programs(trainer, chunk_size=1)
    states = programs.init(grid.keys.init, grid.hparams(HParams.create(inner_lr=0.2)))
    scales = (0.1, 0.3, 1.0, 10.0)

    def peaked(bonus):  # a curve whose rounds 1..K peak where the rate is 0.06 and diverge at 10x
        def evaluate(s, keys, tasks, mode):
            lr = s.hparams.inner_lr[:, None, None] * jnp.ones((1, 3, 2))
            value = -(jnp.log(lr / 0.06) ** 2) + bonus
            return jnp.where(lr > 1.0, jnp.nan, value.at[:, :, 0].set(100.0)), {}  # round 0 is not scored

        return evaluate

    tasks, keys = sweep.held_out_tasks(env, sweep.validation_keys(grid.keys.eval), 3)
    chosen, choice = sweep.at_best_step_size({"a": peaked(0.0), "b": peaked(1.0)}, states, keys, tasks, scales)
    assert (choice["schedule"], choice["scale"]) == ("b", 0.3) and choice["scores"].shape == (2, 4)
    assert choice["scores"][0, 3] == -np.inf and choice["scores"][1, 1] == pytest.approx(1.0)
    np.testing.assert_allclose(np.asarray(chosen.hparams.inner_lr), [0.06, 0.06], rtol=1e-6)
    _, lowest = sweep.at_best_step_size({"a": peaked(0.0)}, states, keys, tasks, scales[:3], higher_is_better=False)
    assert lowest["scale"] == 1.0  # lower is better: the curve's lowest point in the grid

    held_out, _ = sweep.held_out_tasks(env, grid.keys.eval, 3)
    assert not np.any(np.isin(np.asarray(jax.tree.leaves(tasks)[0]), np.asarray(jax.tree.leaves(held_out)[0])))
    chosen, choice = sweep.at_best_step_size({None: programs.evaluate}, states, keys, tasks, (0.5, 2.0))
    direct = np.asarray(programs.evaluate(chosen, keys, tasks)[0])[..., 1:].mean()
    assert choice["scores"][0, (0.5, 2.0).index(choice["scale"])] == pytest.approx(direct, rel=1e-4)
