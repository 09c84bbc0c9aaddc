"""`ssm-jax train | eval | adapt | info`: exact resume after SIGKILL and Ctrl-C, the JSON it writes, and a user's
mistakes as one line with exit code 2."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from ssm_jax import checkpoint, cli, runs, sweep
from ssm_jax.config_io import config_from_json, config_to_json

TINY = [
    "--config", "basic", "--hidden-dim", "16", "--horizon", "20", "--tasks-per-batch", "4",
    "--trajectories-per-task", "4", "--iterations", "40", "--chunk-size", "5", "--checkpoint-every", "5",
]  # fmt: skip


def _train(out_dir: Path, *flags: str) -> Path:
    assert cli.main(["train", "--out-dir", str(out_dir), *TINY, *flags]) == 0
    (run_dir,) = out_dir.iterdir()
    return run_dir


def _train_until(out_dir: Path, records: int, sig: int) -> subprocess.Popen:
    """`ssm-jax train` in a subprocess, sent `sig` once metrics.jsonl holds `records` records."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "ssm_jax", "train", "--out-dir", str(out_dir), *TINY]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        logs = list(out_dir.glob("*/metrics.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= records:
            process.send_signal(sig)
            break
        time.sleep(0.01)
    process.wait(timeout=240)
    return process


def _final(run_dir: Path) -> tuple[list, list[dict]]:
    state, _ = checkpoint.restore(run_dir / runs.CHECKPOINTS, runs.checkpoint_steps(run_dir)[-1])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [np.asarray(x) for x in jax.tree.leaves(state)], records


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("uninterrupted"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_interrupted_then_resumed_run_equals_the_uninterrupted_one_bit_for_bit(tmp_path, uninterrupted, sig, capsys):
    process = _train_until(tmp_path, records=2, sig=sig)
    (run_dir,) = tmp_path.iterdir()
    steps = runs.checkpoint_steps(run_dir)
    assert steps and steps[-1] < 40, steps  # stopped mid-run
    if sig == signal.SIGINT:  # Ctrl-C: the chunk in flight finishes and is saved; exit 0, saying where
        out = process.stdout.read()
        assert process.returncode == 0 and "Traceback" not in process.stderr.read()
        assert f"saved {run_dir.absolute() / runs.CHECKPOINTS / f'step_{steps[-1]}'}" in out
        assert f"ssm-jax train --resume {run_dir}" in out
    else:
        assert process.returncode == -signal.SIGKILL
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert f"(iteration {steps[-1]})" in capsys.readouterr().out

    leaves, records = _final(run_dir)
    expected_leaves, expected_records = _final(uninterrupted)
    assert [r["iteration"] for r in records] == list(range(5, 45, 5))  # each iteration exactly once
    assert records == expected_records
    assert len(leaves) == len(expected_leaves)
    for got, want in zip(leaves, expected_leaves, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_while_compiling_exits_cleanly_and_the_run_resumes_to_the_uninterrupted_one(
    tmp_path, uninterrupted, presses, capsys
):
    """Ctrl-C before the first chunk has run (the run holds its lock: it is compiling): once, the process stops at
    the end of that chunk (exit 0) or, still compiling its initial state, aborts (130); twice, it aborts at once
    (130). Never a traceback or a crash, and --resume then ends as the uninterrupted run."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "ssm_jax", "train", "--out-dir", str(tmp_path), *TINY]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(tmp_path.glob("*/.lock")):
        time.sleep(0.01)
    for _ in range(presses):
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
    _, err = process.communicate(timeout=240)
    assert process.returncode in ((0, 130) if presses == 1 else (130,)), (process.returncode, err[-2000:])
    assert "Traceback" not in err and "Segmentation" not in err, err[-2000:]
    (run_dir,) = tmp_path.iterdir()
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    leaves, records = _final(run_dir)
    expected_leaves, expected_records = _final(uninterrupted)
    assert records == expected_records
    for got, want in zip(leaves, expected_leaves, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_resume_with_more_iterations_extends_a_finished_run_to_the_longer_run(tmp_path, uninterrupted):
    extended = tmp_path / "extended"
    shutil.copytree(uninterrupted, extended, symlinks=True)
    assert cli.main(["train", "--resume", str(extended), "--iterations", "50"]) == 0
    assert config_from_json((extended / "config.json").read_text()).iterations == 50
    longer = _train(tmp_path / "longer", "--iterations", "50")
    (leaves, records), (expected_leaves, expected_records) = _final(extended), _final(longer)
    assert [r["iteration"] for r in records] == list(range(5, 55, 5)) and records == expected_records
    for got, want in zip(leaves, expected_leaves, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path, uninterrupted, capsys):
    """Its config.json is all it left (and a record it logged): --resume trains it from iteration 0, as the
    uninterrupted run."""
    run_dir = tmp_path / uninterrupted.name
    run_dir.mkdir()
    shutil.copy(uninterrupted / "config.json", run_dir / "config.json")
    (run_dir / "metrics.jsonl").write_text((uninterrupted / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert "from the start (no checkpoint yet)" in capsys.readouterr().out
    leaves, records = _final(run_dir)
    expected_leaves, expected_records = _final(uninterrupted)
    assert records == expected_records
    for got, want in zip(leaves, expected_leaves, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_eval_and_adapt_write_their_json_and_a_damaged_step_falls_back(tmp_path, uninterrupted, capsys):
    out = tmp_path / "eval.json"
    result = cli.main(["eval", "--checkpoint", str(uninterrupted), "--tasks", "6", "--output", str(out)])
    assert result == 0
    stored = json.loads(out.read_text())
    assert stored["checkpoint"] == str(uninterrupted.absolute() / runs.CHECKPOINTS / "step_40")
    assert stored["iteration"] == 40 and len(stored["returns"]) == 6
    assert stored["return_mean"] == pytest.approx(np.mean(stored["returns"]), rel=1e-5)
    assert stored["return_ci95"] == pytest.approx(1.96 * np.std(stored["returns"], ddof=1) / np.sqrt(6), rel=1e-4)

    flags = ["--checkpoint", str(uninterrupted), "--tasks", "4", "--adapt-rounds", "2", "--output"]
    online = ["--online", "--online-window", "5", "--online-every", "5"]
    for mode in ("standard", "hybrid"):
        assert cli.main(["adapt", *flags, str(tmp_path / f"{mode}.json"), "--adaptation-mode", mode, *online]) == 0
    standard, hybrid = (json.loads((tmp_path / f"{m}.json").read_text()) for m in ("standard", "hybrid"))
    per_task = np.asarray(standard["per_task_returns"])
    assert per_task.shape == (4, 3) and standard["adaptation_mode"] == "standard"
    np.testing.assert_allclose(standard["paired_gain"]["mean"], (per_task[:, 1:] - per_task[:, :1]).mean(0), 1e-4)
    assert standard["returns"][0] == hybrid["returns"][0]  # the buffer changes the steps, not the policy before them
    assert standard["returns"][1] != hybrid["returns"][1]
    assert "after 2 steps" in capsys.readouterr().out
    # --online: one episode per task adapting at steps 5, 10, 15, 20 of 20, against the same episodes frozen
    assert standard["online"]["adaptations"] == 4 and standard["online"]["window"] == 5
    adapting, frozen = (np.asarray(standard["online"]["per_task"][k]) for k in ("adapting", "frozen"))
    assert adapting.shape == frozen.shape == (4,) and not np.allclose(adapting, frozen)
    assert standard["online"]["paired_gain"] == pytest.approx(np.mean(adapting - frozen), rel=1e-5)
    assert (tmp_path / "standard.png").exists()

    # Damage the newest step: the previous one is used, with a one-line warning.
    damaged = tmp_path / "damaged"
    shutil.copytree(uninterrupted, damaged, symlinks=True)
    for path in (damaged / runs.CHECKPOINTS / "step_40" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    assert cli.main(["eval", "--checkpoint", str(damaged), "--tasks", "2"]) == 0
    err = capsys.readouterr().err
    assert "warning: corrupt or incomplete checkpoint at" in err and "step_40" in err
    assert json.loads((damaged / "eval.json").read_text())["iteration"] == 35


def _error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "Traceback" not in err, err
    assert err.startswith("error: ")
    return err


def test_a_users_mistakes_are_one_line_and_exit_2(tmp_path, uninterrupted, capsys):
    train = ["train", "--out-dir", str(tmp_path / "runs")]
    assert "unknown config 'cheetah'" in _error([*train, "--config", "cheetah"], capsys)
    assert "invalid value 'cheetah' for --env" in _error([*train, "--env", "cheetah"], capsys)
    assert "invalid value 'rnn' for --model" in _error([*train, "--model", "rnn"], capsys)
    assert "inner_lr > 0" in _error([*train, "--inner-lr", "-1"], capsys)
    assert "--inner-lr" in _error([*train, "--inner-lr", "fast"], capsys)
    assert "unrecognized argument(s) --buffer" in _error([*train, "--buffer", "3"], capsys)
    assert "multiple of chunk_size" in _error([*train, "--iterations", "7"], capsys)
    (tmp_path / "file").write_text("")
    message = _error(["train", "--out-dir", str(tmp_path / "file" / "runs")], capsys)
    assert message == f"error: cannot make a run directory under {tmp_path / 'file' / 'runs'}: Not a directory"
    assert not (tmp_path / "runs").exists()  # nothing written for a rejected command
    assert "unknown command 'fit'" in _error(["fit"], capsys)
    assert f"no checkpoint at {tmp_path / 'nope'}" in _error(["eval", "--checkpoint", str(tmp_path / "nope")], capsys)
    assert "not a run directory" in _error(["train", "--resume", str(tmp_path)], capsys)
    assert "tasks must be >= 2" in _error(["eval", "--checkpoint", str(uninterrupted), "--tasks", "1"], capsys)

    # A config.json that is damaged, incomplete or from elsewhere: one line naming the file and what is wrong.
    broken = tmp_path / "broken"
    shutil.copytree(uninterrupted, broken, symlinks=True)
    stored = json.loads((uninterrupted / "config.json").read_text())
    path = broken / "config.json"
    for text, problem in (
        (json.dumps({**stored, "fields": {k: v for k, v in stored["fields"].items() if k != "iterations"}}),
         f"{path}: the stored RunConfig lacks iterations"),
        (json.dumps({**stored, "fields": {**stored["fields"], "iters": 3}}),
         f"{path}: the stored RunConfig has unknown iters"),
        ("{not json", f"{path}: a config this version cannot read (JSONDecodeError"),
        ("[1, 2]", f"{broken} is not a run directory of a meta-RL run"),
    ):  # fmt: skip
        path.write_text(text)
        assert _error(["train", "--resume", str(broken)], capsys).startswith(f"error: {problem}")
    path.write_bytes(b"\xff\xfe")
    assert _error(["train", "--resume", str(broken)], capsys).startswith(f"error: {path}: 'utf-8' codec can't decode")

    resume = ["train", "--resume", str(uninterrupted)]
    message = _error([*resume, "--hidden-dim", "32"], capsys)
    assert message.endswith(
        "--hidden-dim 32 (the run has 16); a resumed run keeps its config (it may only raise --iterations)"
    )
    assert "--iterations 30 (the run has 40)" in _error([*resume, "--iterations", "30"], capsys)

    # A checkpoint another configuration made: the first leaf that differs, by name and size.
    other = tmp_path / "other"
    shutil.copytree(uninterrupted, other, symlinks=True)
    config = config_from_json((other / "config.json").read_text())
    wider = dataclasses.replace(config, network=dataclasses.replace(config.network, hidden_dim=32))
    (other / "config.json").write_text(config_to_json(wider))
    message = _error(["eval", "--checkpoint", str(other / runs.CHECKPOINTS / "step_35")], capsys)
    assert "does not match the target at .meta.params" in message
    assert message.endswith("stored float32[16], expected float32[32]")


def test_a_diverging_run_exits_3_in_one_line_and_eval_refuses_a_non_finite_checkpoint(tmp_path, uninterrupted, capsys):
    capsys.readouterr()
    assert cli.main(["train", "--out-dir", str(tmp_path / "runs"), *TINY, "--outer-lr", "1e6"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: diverged at iteration 5: .meta.params") and "\n" not in err, err
    (diverged_run,) = (tmp_path / "runs").iterdir()
    assert (diverged_run / "metrics.jsonl").read_text()  # kept, to show how it diverged

    nan_run = tmp_path / "nan"
    shutil.copytree(uninterrupted, nan_run, symlinks=True)
    state, config = checkpoint.restore(nan_run / runs.CHECKPOINTS, 40)
    floating = lambda x: np.issubdtype(np.asarray(x).dtype, np.floating)
    nan_state = jax.tree.map(lambda x: np.full_like(x, np.nan) if floating(x) else x, state)
    checkpoint.save(nan_run / runs.CHECKPOINTS, 45, nan_state, config)
    message = _error(["eval", "--checkpoint", str(nan_run / runs.CHECKPOINTS / "step_45")], capsys)
    assert "the checkpoint holds a non-finite .meta" in message and message.endswith("(the run diverged)"), message


def test_one_writer_per_run_directory_and_a_killed_holders_lock_is_taken_over(tmp_path, uninterrupted, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir, symlinks=True)
    script = "\n".join(
        ["import sys, time", "from ssm_jax import runs", "with runs.lock(sys.argv[1]):",
         "    print('held', flush=True)", "    time.sleep(600)"]
    )  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        message = _error(["train", "--resume", str(run_dir)], capsys)
        assert f"{run_dir} is in use by process {holder.pid}" in message
        with pytest.raises(runs.RunInUse), runs.lock(run_dir):
            pass
    finally:
        holder.kill()
        holder.wait()
    with runs.lock(run_dir):  # the killed holder's lock went with it
        assert (run_dir / ".lock").read_text().startswith(f"process {os.getpid()} ")


def test_method_pretrained_trains_the_fair_baseline_with_the_experiments_keys():
    from ssm_jax.configs import CONFIGS, build, initial_state, training_key

    config = dataclasses.replace(CONFIGS["basic"], method="pretrained")
    _, trainer = build(config)
    state = initial_state(config, trainer)
    assert not state.meta_learning and float(state.meta.inner_lr) == 0.0  # train() runs pretrain_update on it
    assert initial_state(CONFIGS["basic"], trainer).meta_learning
    keys = sweep.run_keys(0)
    assert jax.random.key_data(training_key(config)).tolist() == jax.random.key_data(keys.pretrain).tolist()
    assert jax.random.key_data(training_key(CONFIGS["basic"])).tolist() == jax.random.key_data(keys.train).tolist()
