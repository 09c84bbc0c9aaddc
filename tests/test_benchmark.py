"""`experiments.world_model` and `experiments.benchmark`: outputs, the aggregated table, resume, matched sizes."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from experiments import benchmark, world_model
from experiments.common import parse_args
from ssm_jax.config.studies import BenchmarkArgs


def test_arguments_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match="are not world_model families"):
        BenchmarkArgs(envs=("navigation-2d",))
    with pytest.raises(ValueError, match="are not rl families"):
        BenchmarkArgs(objective="rl", envs=("cartpole-params",))
    with pytest.raises(ValueError, match="match_params must be >= 1"):
        BenchmarkArgs(match_params=0)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(benchmark.PRESETS, "cpu", ["--methods", "rnn"])
    assert exit_info.value.code == 2


def test_a_harness_refuses_a_count_below_one_in_one_line_before_it_runs():
    """Every harness's flags parse through `ssm_jax.config.parsing.command_line`; their counts are checked alike
    (`benchmarks.common.HarnessArgs`), an empty tuple too, and a seed may be 0."""
    from benchmarks import maml_overhead, models

    with pytest.raises(ValueError, match="--tasks-per-batch must be >= 1"):
        maml_overhead.Args(tasks_per_batch=0)
    with pytest.raises(ValueError, match="--lengths must be >= 1"):
        models.Args(lengths=(200, 0))
    assert maml_overhead.Args(seed=0).seed == 0
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.models", "--batch", "0"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --batch must be >= 1 (and not empty), got 0"
    with pytest.raises(SystemExit) as exit_info:
        parse_args(world_model.PRESETS, "cpu", ["--inner-lr", "0"])
    assert exit_info.value.code == 2


def _cell(standard: list[float], hybrid: list[float]) -> dict:
    """A benchmark cell whose one-step scores are `standard` and `hybrid` per task."""
    curve = lambda scores: [[0.0, score] for score in scores]
    return {"env": "pendulum-params", "method": "ssm", "parameters": 1, "curves": {
        "none": curve([0.0] * len(standard)), "standard": curve(standard), "hybrid": curve(hybrid)}}  # fmt: skip


def test_the_verdict_follows_the_paired_ci_and_the_metric_direction():
    standard = [1.0, 2.0, 3.0, 4.0]
    lower = [s - 0.5 + 0.01 * i for i, s in enumerate(standard)]  # paired: lower by 0.5 +- ~0.01 on every task
    noisy = [s + d for s, d in zip(standard, (0.5, -0.5, 0.4, -0.4), strict=True)]
    verdict = lambda objective, hybrid: benchmark.aggregate(objective, [_cell(standard, hybrid)])[0]["verdict"]
    assert verdict("world_model", lower) == "hybrid helps"  # lower MSE is better
    assert verdict("rl", lower) == "hybrid hurts"  # lower return is worse
    assert verdict("rl", noisy) == "hybrid ties"  # the paired CI contains 0
    assert verdict("rl", [float("nan"), *lower[1:]]) == "hybrid cannot be compared (a mode diverged)"


@pytest.mark.parametrize("objective, env", [("world_model", "pendulum-params"), ("rl", "navigation-2d")])
def test_match_params_picks_the_width_whose_count_is_closest(objective, env):
    args = BenchmarkArgs(objective=objective, envs=(env,), match_params=5000)
    for method in ("mlp", "ssm", "transformer"):
        base = args.world_model.network if objective == "world_model" else args.rl.network
        network = benchmark.matched_network(args, env, method, base)
        count = lambda width, method=method: benchmark.parameter_count(
            args, env, method, dataclasses.replace(base, hidden_dim=width)
        )
        chosen = abs(count(network.hidden_dim) - 5000)
        assert chosen <= abs(count(network.hidden_dim + 4) - 5000)
        assert network.hidden_dim == 4 or chosen <= abs(count(network.hidden_dim - 4) - 5000)
        assert chosen < 0.25 * 5000, (method, network, count(network.hidden_dim))


@pytest.mark.slow
def test_world_model_smoke_writes_every_output(tmp_path):
    args = dataclasses.replace(world_model.PRESETS["smoke"], out_dir=str(tmp_path), num_seeds=2)
    summary = world_model.main(args)
    run_dir = next(tmp_path.iterdir())
    for name in ("config.json", "metrics.jsonl", "results.json", "results.md", "mse.png", "open_loop.png"):
        assert (run_dir / name).stat().st_size > 0
    stored = json.loads((run_dir / "results.json").read_text())
    tasks = 2 * args.trainer.eval_tasks
    for method in ("MAML", "pretrained"):
        assert np.asarray(stored["per_task"]["mse"][f"{method} + standard"]).shape == (tasks, 4)
        assert np.asarray(stored["per_task"]["mse"][f"{method} + none"]).shape == (tasks, 1)
    assert np.asarray(stored["per_task"]["open_loop"]["oracle"]).shape == (tasks, 1)
    assert summary["parameters"] > 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["method"], r["iteration"], r["seed"]) for r in records] == [
        (method, iteration, seed) for method in ("MAML", "pretrained") for iteration in (2, 4) for seed in (0, 1)
    ]  # one record per seed and chunk


@pytest.mark.slow
def test_benchmark_smoke_writes_the_aggregated_table_and_resume_skips_finished_cells(tmp_path):
    command = [sys.executable, "-m", "experiments.benchmark", "--preset", "smoke", "--out-dir", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = next(tmp_path.iterdir())
    table = (run_dir / "results.md").read_text()
    assert "| none | standard, 1 step | hybrid, 1 step | hybrid − standard |" in table
    rows = [line for line in table.splitlines() if line.startswith("| pendulum-params |")]
    assert [row.split("|")[2].strip() for row in rows] == ["ssm", "mlp"]
    for method, row in zip(("ssm", "mlp"), rows, strict=True):
        cell = json.loads((run_dir / "cells" / f"pendulum-params__{method}.json").read_text())
        assert set(cell["curves"]) == {"none", "standard", "hybrid"}
        assert np.asarray(cell["curves"]["hybrid"]).shape == (2 * 3, 4)  # 2 seeds x 3 held-out tasks, 0..3 steps
        assert row.rstrip(" |").endswith(benchmark.aggregate("world_model", [cell])[0]["verdict"])
    assert (run_dir / "benchmark.png").stat().st_size > 0
    written = {p.name: p.stat().st_mtime_ns for p in (run_dir / "cells").glob("*.json")}
    again = subprocess.run([*command[:3], "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "cells").glob("*.json")} == written
    assert (run_dir / "results.md").read_text() == table


def test_the_sweep_scaling_harness_times_vmapped_against_sequential_runs(tmp_path):
    """A harness of `benchmarks/` end to end on the library's current API, at a test's size: its JSON rows hold
    positive timings for each run count (written where SSM_JAX_BENCHMARK_RESULTS says, not over the recorded ones)."""
    env = {**os.environ, "SSM_JAX_BENCHMARK_RESULTS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "benchmarks.sweep_scaling", "--sizes", "1", "2", "--workloads", "sinusoid",
               "--sinusoid-iterations", "5"]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "sweep_scaling.json").read_text())["rows"]
    assert [(row["workload"], row["runs"]) for row in rows] == [("sinusoid", 1), ("sinusoid", 2)]
    assert all(row["vmapped_s"] > 0 and row["sequential_s"] > 0 for row in rows)


def test_the_processes_harness_times_one_sweep_as_one_and_as_two_processes_with_the_same_results(tmp_path):
    env = {**os.environ, "SSM_JAX_BENCHMARK_RESULTS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "benchmarks.processes", "--preset", "smoke"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "processes.json").read_text())["rows"]
    assert [(row["processes"], row["devices"]) for row in rows] == [(1, 1), (1, 2), (2, 2)]
    assert all(row["train_s"] > 0 and row["wall_s"] > row["train_s"] for row in rows)
    assert rows[2]["vs_one_process_same_devices"] < 1e-4 and rows[2]["vs_one_device"] < 1e-3


def test_the_trial_replay_harness_times_every_model_both_ways(tmp_path):
    env = {**os.environ, "SSM_JAX_BENCHMARK_RESULTS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    flags = ["--lengths", "20", "40", "--horizon", "20", "--batch", "4", "--repeats", "1", "--models", "s5", "gru"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.trial_replay", *flags], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "trial_replay.json").read_text())["rows"]
    assert [(row["model"], row["T"]) for row in rows] == [("s5", 20), ("gru", 20), ("s5", 40), ("gru", 40)]
    assert all(min(row["forward_ms"], row["forward_grad_ms"], row["parallel_speedup"]) > 0 for row in rows)
    assert [row["vs_gru"] for row in rows if row["model"] == "gru"] == [1.0, 1.0]
    assert "| s5 | 40 |" in result.stdout


@pytest.mark.slow
def test_the_xla_flags_harness_times_a_chunk_under_both_flag_sets(tmp_path):
    env = {**os.environ, "SSM_JAX_BENCHMARK_RESULTS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    command = [
        sys.executable,
        "-m",
        "benchmarks.xla_flags",
        "--configs",
        "navigation-smoke",
        "--chunk",
        "2",
        "--rounds",
        "1",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "xla_flags.json").read_text())["rows"]
    assert [(row["config"], row["flags"]) for row in rows] == [
        ("navigation-smoke", "default"),
        ("navigation-smoke", "portable"),
    ]
    assert all(row["compile_s"] > 0 and row["iteration_s"] > 0 for row in rows)
    assert rows[0]["iteration_ratio_to_default"] == 1


@pytest.mark.slow
def test_the_envs_harness_times_backends_in_turn_and_gives_their_ratios_to_spring(tmp_path):
    env = {**os.environ, "SSM_JAX_BENCHMARK_RESULTS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    flags = ["--backends", "mujoco", "spring", "--batches", "4", "--horizons", "5", "--repeats", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.envs", *flags], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "envs.json").read_text())["rows"]
    assert [(row["backend"], row["N"], row["horizon"]) for row in rows] == [("mujoco", 4, 5), ("spring", 4, 5)]
    assert all(row["steps_per_s"] > 0 and row["compile_s"] > 0 for row in rows)
    mujoco, spring = rows
    assert spring["steps_vs_spring"] == 1 and mujoco["steps_vs_spring"] == mujoco["steps_per_s"] / spring["steps_per_s"]


@pytest.mark.slow
def test_the_command_time_harness_splits_a_commands_wall_time_into_compiling_and_the_rest(tmp_path):
    env = {**os.environ, "SSM_JAX_BENCHMARK_RESULTS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "benchmarks.command_time", "--preset", "smoke", "--backends", "mujoco"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = json.loads((tmp_path / "command_time.json").read_text())["rows"]
    assert row["backend"] == "mujoco" and row["command"] == "python -m experiments.halfcheetah_vel --preset smoke"
    assert 0 < row["xla_compile_s"] <= row["compile_s"] < row["wall_s"]


@pytest.mark.slow
def test_the_flagship_gpu_script_finishes_a_run_into_its_out_dir_and_a_second_call_does_nothing(tmp_path):
    """The paper-scale script's CPU dry run (`FLAGSHIP_PRESET=smoke`): MAML, pretrained, random init and the oracle on
    the same held-out goals land in OUT_DIR; called again it finds them and runs nothing."""
    out, root = tmp_path / "out", Path(__file__).resolve().parent.parent
    env = {**os.environ, "FLAGSHIP_PRESET": "smoke", "JAX_PLATFORMS": "cpu"}
    runs_dir = root / "runs" / "flagship_gpu_smoke"
    shutil.rmtree(runs_dir, ignore_errors=True)
    try:
        script = ["bash", "benchmarks/flagship_gpu.sh", str(out)]
        first = subprocess.run(script, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stdout[-2000:]
        results = json.loads((out / "results.json").read_text())
        assert set(results["returns"]) == {"MAML + standard", "pretrained", "random init"}
        assert np.isfinite(results["oracle_return"])
        recorded = json.loads((out / "provenance.json").read_text())
        assert recorded["command"].endswith("--adaptation-mode standard --oracle")
        again = subprocess.run(script, cwd=root, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and again.stdout.strip().endswith(f"finished already, {out}/results.md")
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)


def test_the_maml_overhead_harness_times_the_same_update_both_ways(tmp_path, monkeypatch):
    """The direct plain-JAX meta-update the harness compares against is the library's: same meta-loss, same new
    params; and the rows it writes hold each program's time over the direct one's."""
    from benchmarks import common, maml_overhead

    monkeypatch.setattr(common.write_results, "__defaults__", (tmp_path,))
    args = maml_overhead.Args(tasks_per_batch=3, length=12, obs_dim=3, state_dim=4, hidden_dim=8, repeats=1)
    rows = maml_overhead.main(args)
    assert [row["program"] for row in rows] == ["library", "library, loss diagnostics", "direct plain JAX"]
    assert rows[-1]["ratio"] == 1 and all(row["ms"] > 0 for row in rows)
    assert json.loads((tmp_path / "maml_overhead.json").read_text())["rows"] == rows

    from ssm_jax.meta import MAMLConfig, make_maml, sequence_mse_loss
    from ssm_jax.models import ModelConfig, make_model

    model = make_model("ssm", ModelConfig(input_dim=3, output_dim=1, state_dim=4, hidden_dim=8))
    params = model.init(jax.random.key(0), np.zeros((12, 3), np.float32))
    xs = jax.random.normal(jax.random.key(1), (3, 2, 1, 12, 3))
    tasks = ((xs[:, 0], xs[:, 0, ..., :1]), (xs[:, 1], xs[:, 1, ..., :1] ** 2))
    optimizer = optax.adam(1e-3)
    maml = make_maml(sequence_mse_loss(model), MAMLConfig(inner_lr=0.01))
    state, metrics = jax.jit(maml.update)(maml.init(params, optimizer), tasks)
    direct_params, _, direct_loss = jax.jit(maml_overhead.direct_update(optimizer, 0.01))(
        params, optimizer.init(params), tasks
    )
    np.testing.assert_allclose(metrics["meta_loss"], direct_loss, rtol=1e-6)
    for ours, direct in zip(jax.tree.leaves(state.params), jax.tree.leaves(direct_params), strict=True):
        np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-7)
