"""Separate processes on localhost, joined by JAX's multi-process runtime (gloo collectives on CPU) and started by
`python -m ssm_jax.launch`: what they compute equals one process, only process 0 writes, every process draws the
same keys, and a killed 2-process run resumes bit for bit. Every launch has a timeout, so a process that hangs
fails its test instead of hanging the suite."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from cli_runs import TINY, assert_same_run, final, train

from ssm_jax import cli, launch, run_files

LAUNCH_TIMEOUT = 100
"""Seconds after which the launcher kills its processes (exit 124); each test waits a little longer."""


def launch_command(processes: int, command: list[str], devices_per_process: int = 0) -> list[str]:
    devices = ["--devices-per-process", str(devices_per_process)] if devices_per_process else []
    return [
        sys.executable, "-m", "ssm_jax.launch", "-n", str(processes), *devices, "--timeout", str(LAUNCH_TIMEOUT),
        "--", *command,
    ]  # fmt: skip


def run_launched(processes: int, command: list[str], devices_per_process: int = 0) -> subprocess.CompletedProcess:
    """`command` as `processes` processes; asserts they all exit 0."""
    result = subprocess.run(
        launch_command(processes, command, devices_per_process),
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT + 30,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def train_command(out_dir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "ssm_jax", "train", "--distributed", "--out-dir", str(out_dir), *TINY, *flags]


def test_the_launcher_refuses_bad_input_in_one_line_and_stops_every_process_when_one_fails_or_hangs(capsys):
    assert launch.main(["-n", "2"]) == 2
    assert "error: name the command after --" in capsys.readouterr().err
    assert launch.main(["-n", "0", "--", "true"]) == 2
    assert capsys.readouterr().err.startswith("error: need processes >= 1")

    # Process 1 fails while process 0 would wait for ever: the launcher kills 0 and exits with 1's code, its output.
    script = "import os, sys, time; i = int(os.environ['SSM_JAX_PROCESS_ID']); print('process', i); i or time.sleep(60)"
    started = time.monotonic()
    failing = subprocess.run(
        [sys.executable, "-m", "ssm_jax.launch", "-n", "2", "--", sys.executable, "-c", f"{script}; sys.exit(5)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failing.returncode == 5 and time.monotonic() - started < 30
    assert "process 1 exited with code 5; its last lines:\n  [1] process 1\n" in failing.stderr
    hanging = subprocess.run(
        [sys.executable, "-m", "ssm_jax.launch", "-n", "2", "--timeout", "1", "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert hanging.returncode == launch.TIMED_OUT
    assert "error: the 2 processes ran past --timeout 1 s" in hanging.stderr


def test_distributed_without_a_coordinator_is_one_line_and_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSM_JAX_NUM", "SSM_JAX_PROCESS", "JAX_COORD"))}
    command = [sys.executable, "-m", "ssm_jax", "train", "--config", "navigation-smoke", "--distributed", "--out-dir"]
    result = subprocess.run([*command, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: cannot start JAX's multi-process runtime")
    assert "python -m ssm_jax.launch -n N" in result.stderr


KEYS_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, numpy as np
    from jax.experimental import multihost_utils
    from ssm_jax import distributed, run_files, sweep
    from ssm_jax.config import CONFIGS, training_key

    distributed.initialize()
    assert jax.process_count() == 2
    keys = [training_key(CONFIGS["navigation"]), *sweep.run_keys(7), *sweep.chunk_keys(sweep.run_keys(7).train, 3)]
    data = np.stack([np.asarray(jax.random.key_data(key)) for key in keys])
    gathered = multihost_utils.process_allgather(data)  # [processes, keys, 2]
    assert (gathered[0] == gathered[1]).all(), gathered
    run_dir = str(run_files.make_run_dir(sys.argv[1]))
    names = multihost_utils.process_allgather(np.frombuffer(run_dir.encode().ljust(256), np.uint8))
    assert (names[0] == names[1]).all()
    if distributed.is_writer():
        print("the same keys and run directory on both processes:", run_dir)
    """
)


def test_every_process_draws_the_same_keys_and_names_the_same_run_directory(tmp_path):
    result = run_launched(2, [sys.executable, "-c", KEYS_SCRIPT, str(tmp_path)])
    assert "the same keys and run directory on both processes:" in result.stdout
    assert len(list(tmp_path.iterdir())) == 1  # made once, by process 0


@pytest.fixture(scope="module")
def single_process_sweep(tmp_path_factory):
    """The smoke sweep (2 seeds x 2 inner rates) in this one process, on one device."""
    from experiments import sweep as sweep_experiment

    smoke = sweep_experiment.PRESETS["smoke"]
    return sweep_experiment.main(dataclasses.replace(smoke, out_dir=str(tmp_path_factory.mktemp("one"))))


def _assert_same_sweep(launched: subprocess.CompletedProcess, single: dict, processes: int, devices: int) -> None:
    """The launched sweep's results equal the single process's to float tolerance, and only process 0 wrote."""
    run_dir = Path(launched.stdout.strip().splitlines()[-1].removeprefix("results in "))
    results = json.loads((run_dir / "results.json").read_text())
    assert (results["processes"], results["devices"]) == (processes, devices)
    for name, by_value in single["aggregate"].items():
        for value, pooled in by_value.items():
            got = results["aggregate"][name][str(value)]["mean"]
            np.testing.assert_allclose(got, pooled["mean"], rtol=1e-4, atol=1e-4)
    records = run_files.MetricsLog(run_dir / "metrics.jsonl").records()
    assert len(records) == single["runs"] * 2  # one record per run and chunk: written once, not once per process
    assert launched.stdout.count("results in ") == 1


def test_a_sweep_of_4_runs_split_over_2_processes_equals_the_single_process_sweep(tmp_path, single_process_sweep):
    command = [sys.executable, "-m", "experiments.sweep", "--preset", "smoke", "--distributed", "--out-dir"]
    launched = run_launched(2, [*command, str(tmp_path)])
    _assert_same_sweep(launched, single_process_sweep, processes=2, devices=2)


def test_runs_and_tasks_split_in_one_program_over_2_processes_equal_the_single_process_sweep(
    tmp_path, single_process_sweep
):
    command = [sys.executable, "-m", "experiments.sweep", "--preset", "smoke", "--distributed", "--task-devices", "2"]
    launched = run_launched(2, [*command, "--out-dir", str(tmp_path)], devices_per_process=2)  # a (2, 2) mesh
    _assert_same_sweep(launched, single_process_sweep, processes=2, devices=4)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """The tiny `ssm-jax train` run (`cli_runs.TINY`) on 2 processes of one device each: its tasks split over
    them; the launcher's stdout and the run directory."""
    out_dir = tmp_path_factory.mktemp("two")
    launched = run_launched(2, train_command(out_dir))
    (run_dir,) = out_dir.iterdir()
    return launched.stdout, run_dir


def test_a_task_sharded_meta_update_over_2_processes_equals_the_single_process_update(tmp_path):
    one_update = ("--iterations", "1", "--chunk-size", "1", "--checkpoint-every", "1")
    run_launched(2, train_command(tmp_path / "two", *one_update))  # each process samples and adapts 2 of the 4 tasks
    (two_process_dir,) = (tmp_path / "two").iterdir()
    single_dir = train(tmp_path / "one", *one_update)
    (leaves, records), (expected_leaves, expected_records) = final(two_process_dir), final(single_dir)
    for got, want in zip(leaves, expected_leaves, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    for name, value in expected_records[0].items():
        np.testing.assert_allclose(records[0][name], value, rtol=1e-4, atol=1e-6, err_msg=name)


def test_only_process_0_writes_the_run_directory(two_process_run, tmp_path, monkeypatch):
    stdout, run_dir = two_process_run
    records = run_files.MetricsLog(run_dir / "metrics.jsonl").records()
    assert [r["iteration"] for r in records] == list(range(5, 41, 5))  # each chunk logged once
    assert json.loads((run_dir / run_files.PROCESSES).read_text()) == {"processes": 2, "devices": 2}
    assert stdout.count("pre_adaptation_return") == 1  # the summary table, printed by process 0 alone

    from ssm_jax import report

    monkeypatch.setattr(jax, "process_index", lambda: 1)  # as process 1 sees itself: nothing it writes lands
    run_files.MetricsLog(tmp_path / "metrics.jsonl").log({"iteration": 1})
    run_files.write_json(tmp_path / "results.json", {"a": 1})
    run_files.write_config(tmp_path, None)
    fig, _ = report.new_figure()
    report.save_figure(fig, tmp_path / "plot.png")
    assert list(tmp_path.iterdir()) == []


def test_a_2_process_run_killed_with_sigkill_resumes_on_2_processes_bit_for_bit(tmp_path, two_process_run, capsys):
    process = subprocess.Popen(
        launch_command(2, train_command(tmp_path)),
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the launcher and both processes, killed at once
    )
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    logged = lambda: sum(len(log.read_text().splitlines()) for log in tmp_path.glob("*/metrics.jsonl"))
    while time.monotonic() < deadline and process.poll() is None and logged() < 3:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    (run_dir,) = tmp_path.iterdir()
    steps = run_files.checkpoint_steps(run_dir)
    assert steps and steps[-1] < 40, steps  # killed mid-run

    with pytest.raises(SystemExit) as exit_info:  # one process cannot resume a 2-process run: one line, exit 2
        cli.main(["train", "--resume", str(run_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "started on 2 process(es) and this is 1" in err, err

    resumed = run_launched(2, [sys.executable, "-m", "ssm_jax", "train", "--resume", str(run_dir), "--distributed"])
    assert f"(iteration {steps[-1]})" in resumed.stdout
    assert_same_run(run_dir, two_process_run[1])


def _train_until(out_dir: Path, ready) -> subprocess.Popen:
    """The tiny run on 2 processes under the launcher (text pipes), returned once `ready()` holds (or it ended)."""
    process = subprocess.Popen(
        launch_command(2, train_command(out_dir)),
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None and not ready():
        time.sleep(0.01)
    return process


def test_sigterm_while_a_2_process_run_compiles_ends_it_at_once_with_143(tmp_path):
    """JAX's multi-process runtime takes SIGTERM over when it starts (its preemption notifier): the entry point takes
    it back, so a SIGTERM before training aborts every process at once."""
    process = _train_until(tmp_path, lambda: bool(list(tmp_path.glob("*/config.json"))))
    time.sleep(1.0)  # both processes have joined the runtime and compile
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, err = process.communicate(timeout=LAUNCH_TIMEOUT)
    assert process.returncode == 143 and "Traceback" not in err, err[-3000:]
    assert time.monotonic() - signalled < 15


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["launcher", "process 1"])
def test_sigterm_stops_a_2_process_run_after_the_chunk_in_flight_saved_and_it_resumes_bit_for_bit(
    tmp_path, two_process_run, receiver
):
    """A scheduler's SIGTERM, sent to the launcher (which passes it on) or to one process alone: every process stops
    at the end of the same chunk, the run saves it, all exit 143 within the grace period, and a resume on 2
    processes ends as the uninterrupted run."""
    logged = lambda: sum(len(log.read_text().splitlines()) for log in tmp_path.glob("*/metrics.jsonl"))
    process = _train_until(tmp_path, lambda: logged() >= 2)
    if receiver == "launcher":
        process.send_signal(signal.SIGTERM)
    else:
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        os.kill(int(children[1]), signal.SIGTERM)
    signalled = time.monotonic()
    out, err = process.communicate(timeout=LAUNCH_TIMEOUT)
    assert process.returncode == 143 and "Traceback" not in err, err[-3000:]
    assert time.monotonic() - signalled < 30
    (run_dir,) = tmp_path.iterdir()
    steps = run_files.checkpoint_steps(run_dir)
    assert steps and steps[-1] < 40, steps
    assert f"stopped by SIGTERM at iteration {steps[-1]}: saved" in out
    resumed = run_launched(2, [sys.executable, "-m", "ssm_jax", "train", "--resume", str(run_dir), "--distributed"])
    assert f"(iteration {steps[-1]})" in resumed.stdout
    assert_same_run(run_dir, two_process_run[1])


def test_a_launched_process_without_distributed_is_refused_in_one_line(tmp_path):
    command = [sys.executable, "-m", "ssm_jax", "train", "--out-dir", str(tmp_path), *TINY]
    result = subprocess.run(launch_command(2, command), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT + 30)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: started as one of 2 processes by python -m ssm_jax.launch without --distributed" in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_2_process_run_refused_for_its_task_split_leaves_nothing_behind(tmp_path):
    command = train_command(tmp_path, "--tasks-per-batch", "3")
    result = subprocess.run(launch_command(2, command), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT + 30)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: --tasks-per-batch 3 cannot be split evenly over 2 devices" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_process_stopped_alone_by_sigterm_ends_the_others_after_the_grace(monkeypatch):
    """Process 1 exits 143 (a SIGTERM while it compiled) while process 0 would wait for it for ever: the launcher
    kills process 0 once `STOP_GRACE` has passed and exits 143."""
    monkeypatch.setattr(launch, "STOP_GRACE", 1.0)
    script = "import os, sys, time; int(os.environ['SSM_JAX_PROCESS_ID']) and sys.exit(143); time.sleep(60)"
    started = time.monotonic()
    assert launch.launch([sys.executable, "-c", script], launch.LaunchArgs(processes=2)) == launch.TERMINATED
    assert time.monotonic() - started < 20
