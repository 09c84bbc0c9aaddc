import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import sinusoid, smoke
from experiments.common import parse_args
from ssm_jax import run_files
from ssm_jax.config import programs as config_programs
from ssm_jax.config import replace, studies
from ssm_jax.report import budget_study as budget_report
from ssm_jax.report import levers as levers_report


def test_smoke_experiment_fits_every_requested_model():
    results = smoke.main(smoke.Args(seq_len=16, steps=15, models=("ssm", "lstm", "mlp")))
    assert set(results) == {"ssm", "lstm", "mlp"}
    for r in results.values():
        assert r["loss_after"] < r["loss_before"]


@pytest.mark.slow
def test_sinusoid_smoke_preset_adapts_on_held_out_tasks(tmp_path):
    args = dataclasses.replace(sinusoid.PRESETS["smoke"], methods=("maml", "meta_sgd"), out_dir=str(tmp_path))
    results = sinusoid.main(args)
    run_dir = next(tmp_path.iterdir())
    for name in ("config.json", "metrics.jsonl", "results.json", "results.md"):
        assert (run_dir / name).stat().st_size > 0
    stored = json.loads((run_dir / "results.json").read_text())
    for method in ("maml", "meta_sgd"):
        mse = np.asarray(results["shots"][10][method]["mse_mean"])
        assert mse[1] < 0.6 * mse[0], (method, mse[:2])
        assert stored["shots"]["10"][method]["mse_mean"][1] == pytest.approx(mse[1])
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 * args.iterations // args.chunk_size


def test_sinusoid_page_compares_with_the_paper_of_its_distribution(tmp_path):
    from ssm_jax.report.sinusoid import write_report

    curve = {"mse_mean": [3.0] + [0.5] * 10, "mse_ci95": [0.1] * 11, "train_seconds": 1.0}
    (tmp_path / "results.json").write_text(json.dumps({"shots": {"5": {"maml": curve, "pretrained": curve}}}))
    config = dataclasses.replace(sinusoid.PRESETS["paper"], plots=False)
    maml_row = "| 5 | MAML | 3.000 ± 0.100 | 0.500 ± 0.100 | 0.500 ± 0.100 | 0.500 ± 0.100 |"
    maml_paper = write_report(tmp_path, config)
    assert f"{maml_row} 0.67 / 0.38 / 0.35 |" in maml_paper
    assert "Li et al." not in maml_paper
    meta_sgd_paper = write_report(tmp_path, dataclasses.replace(config, frequency_range=(0.8, 1.2)))
    assert "Li et al. 2017, 1 step" in meta_sgd_paper and "| 1.13 ± 0.18 |" in meta_sgd_paper
    assert "Finn et al." not in meta_sgd_paper
    other = write_report(tmp_path, dataclasses.replace(config, frequency_range=(0.5, 2.0)))
    assert "et al." not in other and f"{maml_row}\n" in other and "repeated, that learned step diverges" not in other
    diverged = {"mse_mean": [3.0, 0.4] + [float("nan")] * 9, "mse_ci95": [0.1] * 11, "train_seconds": 1.0}
    (tmp_path / "results.json").write_text(json.dumps({"shots": {"5": {"maml": curve, "meta_sgd": diverged}}}))
    assert "repeated, that learned step diverges" in write_report(tmp_path, config)  # the page says why


SINUSOID_SHORT = ["--preset", "smoke", "--methods", "maml", "pretrained", "--iterations", "600", "--chunk-size", "100",
                  "--checkpoint-every", "100", "--eval-tasks", "20", "--no-plots"]  # fmt: skip


def _sinusoid_results(run_dir) -> tuple[dict, list[dict]]:
    """results.json without timings, and the metrics log."""
    shots = json.loads((run_dir / "results.json").read_text())["shots"]
    without_time = {k: {m: {n: v for n, v in r.items() if n != "train_seconds"} for m, r in by.items()}
                    for k, by in shots.items()}  # fmt: skip
    return without_time, run_files.MetricsLog(run_dir / "metrics.jsonl").records()


@pytest.mark.slow
def test_sinusoid_killed_mid_training_resumes_to_the_uninterrupted_numbers(tmp_path):
    """SIGKILL once MAML has logged 3 of its 6 chunks; `--resume` continues each method from its newest
    checkpoint and ends with the uninterrupted run's metrics log and held-out results, bit for bit."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "experiments.sinusoid", *SINUSOID_SHORT, "--out-dir", str(tmp_path / "killed")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        logs = list((tmp_path / "killed").glob("*/metrics.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert process.wait(timeout=300) == -signal.SIGKILL
    (killed,) = (tmp_path / "killed").iterdir()
    assert not (killed / "results.json").exists()
    sinusoid.main(parse_args(sinusoid.PRESETS, "default", ["--resume", str(killed)]))
    uninterrupted = parse_args(sinusoid.PRESETS, "default", [*SINUSOID_SHORT, "--out-dir", str(tmp_path / "whole")])
    sinusoid.main(uninterrupted)
    (whole,) = (tmp_path / "whole").iterdir()
    results, records = _sinusoid_results(killed)
    expected_results, expected_records = _sinusoid_results(whole)
    assert [(r["method"], r["iteration"]) for r in records] == [
        (method, i) for method in ("maml", "pretrained") for i in range(100, 700, 100)
    ]
    assert records == expected_records and results == expected_results


def test_presets_and_overrides_parse():
    from ssm_jax.config import RunConfig, SinusoidRunConfig

    args = parse_args(sinusoid.PRESETS, "default", ["--preset", "smoke", "--iterations", "1000"])
    assert args.name == "sinusoid-smoke" and args.iterations == 1000 and args.eval_tasks == 100
    assert parse_args(sinusoid.PRESETS, "default", []).iterations == 20_000
    with pytest.raises(ValueError, match="unknown methods"):
        SinusoidRunConfig(methods=("reptile",))
    with pytest.raises(ValueError, match="iterations=1500 must be a multiple of chunk_size=1000"):
        SinusoidRunConfig(iterations=1500, chunk_size=1000)
    from experiments import halfcheetah_vel

    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        RunConfig(model="rnn")
    with pytest.raises(ValueError, match="unknown adaptation_mode 'mixed'; expected one of both, standard, hybrid"):
        RunConfig(adaptation_mode="mixed")
    with pytest.raises(ValueError, match="num_seeds must be 1 with --resume"):
        RunConfig(resume="/some/run", num_seeds=2)
    bad_flags = (
        ["--inner-lr", "-1"],
        ["--buffer-size", "0"],
        ["--chunk-size", "0"],
        ["--model", "rnn"],
        ["--resume", "/nonexistent/run"],
        ["--cg-iters", "0"],
    )
    for flags in bad_flags:  # CLI: exit 2 before compiling
        with pytest.raises(SystemExit) as exit_info:
            parse_args(halfcheetah_vel.PRESETS, "cpu", flags)
        assert exit_info.value.code == 2


def _results_without_timing(run_dir) -> dict:
    stored = json.loads((run_dir / "results.json").read_text())
    return {k: v for k, v in stored.items() if k not in ("run_dir", "train_seconds", "total_seconds")}


@pytest.mark.slow
def test_halfcheetah_vel_smoke_writes_all_outputs_and_reproduces_its_results(tmp_path):
    from experiments import halfcheetah_vel

    args = dataclasses.replace(halfcheetah_vel.PRESETS["smoke"], oracle=True, num_seeds=2, out_dir=str(tmp_path / "a"))
    results = halfcheetah_vel.main(args)
    run_dir = next((tmp_path / "a").iterdir())
    for name in (
        "config.json",
        "metrics.jsonl",
        "results.json",
        "results.md",
        "learning_curve.png",
        "adaptation_curve.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    assert run_files.checkpoint_steps(run_dir) == [0, args.iterations]  # both seeds' states, stacked: initial and final
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {(r["phase"], r["seed"]) for r in records} == {(p, s) for p in ("maml", "pretrained") for s in (0, 1)}
    for name in ("inner_kl", "inner_grad_norm", "inner_clip_fraction"):  # the pretrained baseline takes no inner step
        assert all(np.isfinite(r[name]) for r in records if r["phase"] == "maml"), name
    assert all(r["env_steps"] == records[0]["env_steps"] for r in records)  # both methods: MAML's env budget
    expected = {"MAML + standard", "MAML + hybrid", "pretrained", "random init"}
    assert set(results["returns"]) == expected
    for name in expected:
        assert np.all(np.isfinite(results["returns"][name])) and len(results["returns"][name]) == 4
    assert np.isfinite(results["oracle_return"])
    assert set(results["gap_closed"]) == expected - {"random init"}
    assert results["inner_step"]["inner_kl"] > 0
    # the buffers only change what hybrid adapts; before any adaptation both modes act alike: the same keys and
    # params, in two compiled programs (the task buffer's program fuses differently), whose last-bit differences
    # brax's physics amplifies over an episode
    np.testing.assert_allclose(results["returns"]["MAML + hybrid"][0], results["returns"]["MAML + standard"][0], 1e-2)
    stored = json.loads((run_dir / "results.json").read_text())
    assert set(stored["per_task_returns"]) == expected
    per_task = np.asarray(stored["per_task_returns"]["MAML + standard"])
    tasks = args.evaluation.eval_tasks
    assert per_task.shape == (2 * tasks, 4)  # held-out tasks of both seeds, pooled
    assert not np.allclose(per_task[:tasks], per_task[tasks:])  # seeds draw their own goals

    # A second run of the same preset and seeds writes the same results, number for number, on the programs the
    # first one compiled (other seeds, hyperparameters and output directories reuse them too).
    hits = config_programs._compiled.cache_info().hits
    halfcheetah_vel.main(dataclasses.replace(args, out_dir=str(tmp_path / "b"), inner_lr=args.inner_lr * 1.0))
    assert config_programs._compiled.cache_info().hits == hits + 1
    assert _results_without_timing(next((tmp_path / "b").iterdir())) == _results_without_timing(run_dir)


def test_the_headline_line_says_whether_mamls_one_step_gain_clears_the_pretrained_baselines():
    from ssm_jax.report.meta_rl import headline

    line = lambda mean, half: headline(
        {"comparisons": {"one_step_gain_maml_minus_pretrained": {"mean": mean, "ci95": half}}}
    )
    assert line(18.1, 6.5) == (
        "MAML adapts: its one-step gain beats the pretrained baseline's, +18.1 ± 6.5 (MAML − pretrained, paired 95% "
        "CI on held-out tasks)"
    )
    assert line(3.0, 8.4).startswith("No separation:") and line(-9.0, 2.0).startswith("MAML adapts less")
    assert headline({"comparisons": {}}) is None  # a run without the pretrained baseline
    left_out = {"mean": 33.6, "ci95": 13.1, "tasks": 15, "of": 16, "diverged": {"MAML + standard": 0, "pretrained": 1}}
    assert headline({"comparisons": {"one_step_gain_maml_minus_pretrained": left_out}}).endswith(
        "+33.6 ± 13.1 (MAML − pretrained, paired 95% CI on held-out tasks; pretrained's step diverged on 1 of 16 "
        "tasks, left out of the pair)"
    )


def test_a_paired_comparison_leaves_out_the_tasks_where_either_adaptation_diverged():
    from ssm_jax.report.meta_rl import summarise

    maml = np.array([[-10.0, -5.0], [-12.0, -6.0], [-11.0, -4.0]])
    pretrained = np.array([[-9.0, -8.0], [-10.0, np.nan], [-9.5, -9.0]])
    curves = {"MAML + standard": maml, "pretrained": pretrained}
    comparisons = summarise(curves, curves, None, None, [], 1.0, 1.0)["comparisons"]
    gain = comparisons["one_step_gain_maml_minus_pretrained"]
    assert (gain["tasks"], gain["of"], gain["diverged"]) == (2, 3, {"MAML + standard": 0, "pretrained": 1})
    assert gain["mean"] == pytest.approx(np.mean([5.0 - 1.0, 7.0 - 0.5]))
    np.testing.assert_allclose(comparisons["maml_minus_pretrained"]["mean"], [-1.25, 4.0])


def test_finn_et_al_numbers_stand_beside_ours_only_on_the_same_physics():
    from ssm_jax.report import beside_the_paper, paper_returns, reference_caption

    ours = {"MAML": (-150.0, -120.0), "pretrained": (-140.0, -138.0), "random init": (-250.0, -249.0)}
    assert beside_the_paper("halfcheetah-vel", "mujoco", ours) == (
        "MAML -150.0 → -120.0 (Finn et al. -129.5 → -78.6); pretrained -140.0 → -138.0 (Finn et al. -158.0 → -135.4); "
        "random init -250.0 → -249.0 (Finn et al. -254.8 → -254.3)"
    )
    assert beside_the_paper("halfcheetah-vel", "spring", ours) == "" and paper_returns("ant-mass", "mujoco") == {}
    assert "comparable numbers" in reference_caption("halfcheetah-dir", "mujoco")
    assert "compare shapes" in reference_caption("halfcheetah-dir", "spring")


def test_navigation_smoke_checkpoints_the_observation_statistics(tmp_path, capsys):
    from experiments import navigation
    from ssm_jax import checkpoint

    smoke = navigation.PRESETS["smoke"]  # MAML-RL's navigation passes raw positions; here they are standardised
    args = replace(smoke, normalize_observations=True, out_dir=str(tmp_path), plots=False)
    results = navigation.main(args)
    run_dir = next(tmp_path.iterdir())
    stored = json.loads((run_dir / "results.json").read_text())
    assert stored["returns"]["MAML + standard"] == pytest.approx(results["returns"]["MAML + standard"])
    assert results["task_metric_name"] == "distance to goal"
    restored, config = checkpoint.restore(run_dir / "checkpoints", args.iterations)
    assert config == args
    # warm-up round, then (support + query) rounds per meta-iteration, each tasks x trajectories x horizon
    per_round = args.trainer.tasks_per_batch * args.trainer.trajectories_per_task * args.trainer.horizon
    assert np.asarray(restored["obs_stats"]["count"]).tolist() == [per_round * (1 + 2 * args.iterations)]  # [runs]
    assert np.all(np.asarray(restored["obs_stats"]["var"]) > 0)

    # Resuming from another configuration, or from a corrupt checkpoint: one line, exit 2, the run's config kept.
    config_text = (run_dir / "config.json").read_text()
    progress = capsys.readouterr().err  # the training run's progress: each evaluation says it runs, then its time
    tasks = args.num_seeds * args.evaluation.eval_tasks
    assert f"evaluating MAML + standard on {tasks} held-out tasks…" in progress.splitlines()
    assert re.search(rf"^evaluating MAML \+ standard on {tasks} held-out tasks: done, \d+ s$", progress, re.MULTILINE)
    wider = dataclasses.replace(args, resume=str(run_dir), network=dataclasses.replace(args.network, hidden_dim=32))
    with pytest.raises(SystemExit) as exit_info:
        navigation.main(wider)
    message = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in message
    assert message.startswith(f"error: --resume {run_dir}: checkpoint at ") and message.endswith(
        "stored float32[1, 16], expected float32[1, 32]"
    )
    for path in (run_dir / "checkpoints").rglob("*"):  # every step's state: none is left to fall back on
        if path.is_file() and "state" in path.parts:
            path.write_bytes(b"garbage")
    with pytest.raises(SystemExit) as exit_info:
        navigation.main(dataclasses.replace(args, resume=str(run_dir)))
    assert exit_info.value.code == 2 and "corrupt or incomplete checkpoint" in capsys.readouterr().err
    assert (run_dir / "config.json").read_text() == config_text


@pytest.mark.slow
def test_navigation_resumed_after_a_kill_ends_as_the_uninterrupted_run(tmp_path):
    """A run killed after its step-2 checkpoint, with records logged past it, resumes from step 2 and writes the
    uninterrupted run's metrics (each iteration once) and results."""
    from experiments import navigation

    args = dataclasses.replace(
        navigation.PRESETS["smoke"], iterations=4, checkpoint_every=2, pretrained=True, plots=False
    )
    navigation.main(dataclasses.replace(args, out_dir=str(tmp_path / "a")))
    (uninterrupted,) = (tmp_path / "a").iterdir()
    killed = tmp_path / "b" / uninterrupted.name  # a rerun reproduces a run (the halfcheetah smoke test)
    shutil.copytree(uninterrupted, killed, symlinks=True)
    shutil.rmtree(killed / "checkpoints" / "step_4")  # killed before its step-4 checkpoint, after logging to 4
    (killed / "metrics.jsonl").write_text((killed / "metrics.jsonl").read_text() + '{"phase": "maml", "iter')
    navigation.main(dataclasses.replace(args, resume=str(killed)))
    assert run_files.checkpoint_steps(killed) == [2, 4]
    without_time = lambda run: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in run_files.MetricsLog(
        run / "metrics.jsonl").records()]  # fmt: skip
    assert [(r["phase"], r["iteration"]) for r in without_time(killed)] == [
        (phase, i) for phase in ("maml", "pretrained") for i in range(1, 5)
    ]
    assert without_time(killed) == without_time(uninterrupted)
    assert _results_without_timing(killed) == _results_without_timing(uninterrupted)


@pytest.mark.slow
def test_sweep_smoke_rows_equal_the_runs_made_alone(tmp_path):
    """experiments.sweep trains every (seed, inner lr) run in one vmapped program; the row with navigation's own
    inner lr and seed 0 must be the run `experiments.navigation` makes alone with seed 0."""
    from experiments import navigation, sweep
    from ssm_jax.config import CONFIGS, RunConfig, ppo

    results = sweep.main(dataclasses.replace(sweep.PRESETS["smoke"], out_dir=str(tmp_path / "sweep")))
    run_dir = tmp_path / "sweep" / next((tmp_path / "sweep").iterdir()).name
    runs = json.loads((run_dir / "runs.json").read_text())
    assert [(r["seed"], r["inner_lr"]) for r in runs] == [(0, 0.05), (1, 0.05), (0, 0.1), (1, 0.1)]
    assert set(results["aggregate"]["inner_lr"]) == {0.05, 0.1} and (run_dir / "sweep_inner_lr.png").exists()
    nav_args = replace(ppo(CONFIGS["navigation-smoke"]), out_dir=str(tmp_path / "nav"), plots=False)
    shared = [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("name", "num_seeds", "out_dir", "plots")]
    assert all(getattr(nav_args, f) == getattr(sweep.PRESETS["smoke"], f) for f in shared)  # the sweep's runs
    assert nav_args.inner_lr == 0.1 and nav_args.seed == 0
    alone = navigation.main(nav_args)["returns"]["MAML + standard"]
    assert runs[2]["return_mean"] == pytest.approx(alone, rel=1e-3, abs=1e-2)
    assert runs[0]["return_mean"] != pytest.approx(alone, rel=1e-3, abs=1e-2)  # the swept value matters


def test_progress_off_a_terminal_is_one_plain_line_per_chunk(capsys):
    from ssm_jax.runs import train_in_chunks

    def update_chunk(state, key):
        return state + 1, {"loss": np.full(2, 10.0 - state)}

    final = train_in_chunks(update_chunk, 0, jax.random.key(0), 6, 2, "demo", postfix=lambda m: {"loss": m["loss"][0]})
    assert final == 3
    err = capsys.readouterr().err  # captured: not a terminal
    assert "\r" not in err
    lines = [line.rsplit(",", 1)[0] for line in err.splitlines()]  # without the elapsed seconds
    assert lines == ["demo: 0/6", "demo: 2/6, loss 10", "demo: 4/6, loss 9", "demo: 6/6, loss 8"]
    assert err.splitlines()[0] == "demo: 0/6, compiling the first chunk"  # a log shows the wait before the first chunk


def test_budget_study_rounds_budgets_up_to_whole_chunks_and_checks_them():
    from experiments import budget_study, halfcheetah_vel

    vel = budget_study.PRESETS["vel"]
    assert vel.trainer.env_steps_per_iteration == 5 * 2 * 8 * 200
    # 0.56M, 1.04M, 2.0M, 3.04M, 5.04M, 10.0M env steps
    assert budget_study.budget_iterations(vel) == [35, 65, 125, 190, 315, 625]
    long = halfcheetah_vel.PRESETS["long"]  # the budget where MAML separated, on the study's batch
    assert long.iterations == 190 and long.trainer.env_steps_per_iteration == 16_000
    for bad in ((), (3e6, 1e6), (1e6, 1e6), (0.0,)):
        with pytest.raises(ValueError, match="budgets must be positive and strictly ascending"):
            dataclasses.replace(vel, budgets=bad)


def test_a_budget_row_leaves_out_the_tasks_where_an_adaptation_diverged_for_both_methods():

    maml = np.array([[-10.0, -5.0], [-12.0, -6.0], [-11.0, -4.0]])
    pretrained = np.array([[-9.0, -8.0], [-10.0, np.nan], [-9.5, -9.0]])  # its step diverged on task 1
    row = budget_report.budget_row(1e6, 65, 1_040_000, {"MAML": maml, "pretrained": pretrained}, {"MAML": 1.0})
    assert row["diverged"] == {"MAML": 0, "pretrained": 1}
    kept = [0, 2]  # paired: task 1 leaves both methods' statistics
    expected = np.mean((maml[kept, 1] - maml[kept, 0]) - (pretrained[kept, 1] - pretrained[kept, 0]))
    assert row["gain_difference"]["mean"] == pytest.approx(expected)
    assert row["returns"]["MAML"][0]["mean"] == pytest.approx(-10.5)
    assert np.isnan(row["per_task_returns"]["pretrained"][1, 1])  # the raw returns are kept as they were
    trained_to_nan = np.full_like(pretrained, np.nan)  # its training diverged: no task left to pair
    row = budget_report.budget_row(1e6, 65, 1_040_000, {"MAML": maml, "pretrained": trained_to_nan}, {"MAML": 1.0})
    assert row["diverged"] == {"MAML": 0, "pretrained": 3} and np.isnan(row["gain_difference"]["mean"])
    assert row["returns"]["MAML"][1]["mean"] == pytest.approx(-5.0)  # MAML keeps all of its own tasks


@pytest.mark.slow
def test_budget_study_smoke_preset_evaluates_both_methods_at_each_budget(tmp_path):
    from experiments import budget_study

    # The study is env-agnostic; the point robot compiles in seconds where brax's cheetah takes minutes.
    smoke = dataclasses.replace(budget_study.PRESETS["smoke"], env="navigation-2d", out_dir=str(tmp_path))
    results = budget_study.main(smoke)
    assert [(r["iterations"], r["env_steps"]) for r in results["rows"]] == [(1, 160), (2, 320)]
    for row in results["rows"]:
        assert set(row["returns"]) == {"MAML", "pretrained"}
        assert all(np.isfinite(np.asarray(r)).all() for r in row["per_task_returns"].values())
    run_dir = next(tmp_path.iterdir())
    for name in ("config.json", "results.json", "results.md", "budget_study.png"):
        assert (run_dir / name).stat().st_size > 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["iteration"]) for r in records] == [
        ("MAML", 1), ("pretrained", 1), ("MAML", 2), ("pretrained", 2)
    ]  # fmt: skip
    assert all(r["env_steps"] == 160 for r in records)


def test_levers_choose_the_setting_that_clears_zero_at_the_smallest_budget_and_refuse_unknown_variants():
    from experiments import levers

    row = lambda mean, half: {"gain_difference": {"mean": mean, "ci95": half}}
    settings = [
        {"rows": [row(1.0, 2.0), row(9.0, 1.0)]},  # clears at the second budget only
        {"rows": [row(3.0, 1.0), row(2.0, 5.0)]},  # clears at the first
        {"rows": [row(4.0, 1.0), row(0.0, 1.0)]},  # clears at the first, by more: chosen
        {"rows": [row(-1.0, 0.5), row(-2.0, 0.5)]},
    ]
    assert levers_report.choose(settings) == 2
    assert levers_report.choose(settings[:2]) == 1 and levers_report.choose(settings[3:]) is None
    with pytest.raises(ValueError, match="unknown variant"):
        dataclasses.replace(levers.PRESETS["vel"], variants=("base", "more cheetahs"))
    for changes in studies.VARIANTS.values():  # every variant is a config the flagship accepts
        changes = {k: v for k, v in changes.items() if not k.startswith("sweep_")}
        replace(levers.PRESETS["vel"], **changes)


def test_validation_goals_are_not_the_held_out_goals():
    from ssm_jax import envs, sweep

    env = envs.make_meta_rl("halfcheetah-vel", 20, "mujoco")
    eval_keys = sweep.make_grid([0, 1]).keys.eval
    held_out, _ = sweep.held_out_tasks(env, eval_keys, 32)
    validation, _ = sweep.held_out_tasks(env, sweep.validation_keys(eval_keys), 32)
    assert not np.intersect1d(np.asarray(held_out.velocity), np.asarray(validation.velocity)).size


@pytest.mark.slow
def test_levers_smoke_scores_every_setting_of_every_variant_at_each_budget(tmp_path):
    from experiments import levers

    # Env-agnostic like the study; the point robot compiles in seconds.
    smoke = dataclasses.replace(levers.PRESETS["smoke"], env="navigation-2d", out_dir=str(tmp_path))
    results = levers.main(smoke)
    labels = [levers_report._label(s) for s in results["settings"]]
    assert len(labels) == 3 * 2 + 1 and labels[-1] == "TRPO"  # the base grid: 3 inner x 2 outer rates
    assert "base (inner_lr 0.05, outer_lr 0.01)" in labels
    for setting in results["settings"]:
        assert [row["env_steps"] for row in setting["rows"]] == [160, 320]
        assert all(np.isfinite(row["gain_difference"]["mean"]) for row in setting["rows"])
    assert results["chosen"] == levers_report.choose(results["settings"])
    run_dir = next(tmp_path.iterdir())
    assert (run_dir / "levers.png").stat().st_size > 0
    page = (run_dir / "results.md").read_text()
    assert page.count("\n| base (") + page.count("\n| **chosen:** base (") == 6
    phases = {r["phase"] for r in run_files.MetricsLog(run_dir / "metrics.jsonl").records()}
    assert phases == {"base: MAML", "base: pretrained", "TRPO: MAML", "TRPO: pretrained"}


@pytest.mark.slow
def test_replay_smoke_scores_every_regime_and_source_against_the_same_standard(tmp_path):
    """Every variant's α = 0 run is the standard adapter on the same keys: one standard per regime, whatever the
    variant's replay source (each a program of its own, so XLA may order a sum differently: float-level
    differences after several steps); the verdicts are words with paired CIs."""
    from experiments import replay

    results = replay.main(dataclasses.replace(replay.PRESETS["smoke"], out_dir=str(tmp_path)))
    assert set(results["regimes"]) == set(studies.REGIMES)
    for regime, scores in results["scores"].items():
        variants = [np.asarray(scores[label]) for label in studies.RL_VARIANTS]
        for values in variants[1:]:
            np.testing.assert_allclose(values[0], variants[0][0], rtol=1e-4, atol=1e-4)
        assert all(v.shape == (2, 1, 4) for v in variants)  # [alphas, seeds, tasks]
        words = {entry["verdict"]["word"] for entry in results["regimes"][regime].values()}
        assert words <= {"helps", "hurts", "ties"}
    assert "frozen" in results["scores"]["online"] and "meta: forgetting" in results["scores"]["task_switch"]
    run_dir = Path(results["run_dir"])
    for name in ("config.json", "results.json", "results.md", "alpha_sweep.png"):
        assert (run_dir / name).exists()
    assert "## task switch" in (run_dir / "results.md").read_text()
    with pytest.raises(ValueError, match="alphas must start with 0"):
        dataclasses.replace(replay.PRESETS["smoke"], alphas=(0.1, 1.0))
    with pytest.raises(ValueError, match="eval_tasks must be even"):
        replace(replay.PRESETS["smoke"], eval_tasks=3)


@pytest.mark.slow
def test_replay_world_model_smoke_scores_every_source_against_one_standard(tmp_path):
    from experiments import replay

    results = replay.main(dataclasses.replace(replay.PRESETS["world-model-smoke"], out_dir=str(tmp_path)))
    scores = results["scores"]["world_model"]
    assert set(scores) == set(replay.WORLD_MODEL_VARIANTS)
    standards = [np.asarray(values)[0] for values in scores.values()]  # α = 0 of each source's program
    for standard in standards[1:]:
        np.testing.assert_allclose(standard, standards[0], rtol=1e-4)
    assert "## world model" in (Path(results["run_dir"]) / "results.md").read_text()
