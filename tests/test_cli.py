"""`ssm-jax eval | adapt` and `train --method`: what they compute and the JSON they write. What happens when
a run is interrupted, diverges or meets a mistake is tests/test_reliability.py's."""

import dataclasses
import json
import re
import shutil

import jax
import numpy as np
import pytest

from ssm_jax import cli, run_files, sweep
from ssm_jax.cli.training import TRAINABLE
from ssm_jax.config import CONFIGS


@pytest.mark.slow
def test_eval_and_adapt_write_their_json_tables_and_plot(tmp_path, uninterrupted, capsys):
    out = tmp_path / "eval.json"
    result = cli.main(["eval", "--checkpoint", str(uninterrupted), "--eval-tasks", "6", "--output", str(out)])
    assert result == 0
    said = capsys.readouterr().err.splitlines()  # what it compiles and runs, as it starts and when done: never silent
    assert said[0] == "eval: compiling and running 6 held-out episodes…", said
    assert re.fullmatch(r"eval: compiling and running 6 held-out episodes: done, \d+ s", said[1]), said
    stored = json.loads(out.read_text())
    assert stored["checkpoint"] == str(uninterrupted.absolute() / run_files.CHECKPOINTS / "step_40")
    assert stored["iteration"] == 40 and len(stored["returns"]) == 6
    assert stored["return_mean"] == pytest.approx(np.mean(stored["returns"]), rel=1e-5)
    assert stored["return_ci95"] == pytest.approx(1.96 * np.std(stored["returns"], ddof=1) / np.sqrt(6), rel=1e-4)

    flags = ["--checkpoint", str(uninterrupted), "--eval-tasks", "4", "--adapt-rounds", "2", "--output"]
    online = ["--online", "--online-window", "5", "--online-every", "5"]
    for mode in ("standard", "hybrid"):
        assert cli.main(["adapt", *flags, str(tmp_path / f"{mode}.json"), "--adaptation-mode", mode, *online]) == 0
    standard, hybrid = (json.loads((tmp_path / f"{m}.json").read_text()) for m in ("standard", "hybrid"))
    per_task = np.asarray(standard["per_task_returns"])
    assert per_task.shape == (4, 3) and standard["adaptation_mode"] == "standard"
    np.testing.assert_allclose(standard["paired_gain"]["mean"], (per_task[:, 1:] - per_task[:, :1]).mean(0), 1e-4)
    assert standard["returns"][0] == hybrid["returns"][0]  # the buffer changes the steps, not the policy before them
    # the default hybrid term, KL to the meta-trained policy on the task buffer, is zero (gradient too) at the
    # meta-trained params: the first step is the standard one, and the anchor acts from the second step on
    assert standard["returns"][1] == hybrid["returns"][1] and standard["returns"][2] != hybrid["returns"][2]
    assert (hybrid["replay"], hybrid["task_replay_loss"]) == ("task", "kl_anchor")
    assert "after 2 steps" in capsys.readouterr().out
    # --online: one episode per task adapting at steps 5, 10, 15, 20 of 20, against the same episodes frozen
    assert standard["online"]["adaptations"] == 4 and standard["online"]["window"] == 5
    adapting, frozen = (np.asarray(standard["online"]["per_task"][k]) for k in ("adapting", "frozen"))
    assert adapting.shape == frozen.shape == (4,) and not np.allclose(adapting, frozen)
    assert standard["online"]["paired_gain"] == pytest.approx(np.mean(adapting - frozen), rel=1e-5)
    assert (tmp_path / "standard.png").exists()
    # Without --output: one file per setting, an online run's plot with its own panel, nothing overwritten.
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run, symlinks=True)
    base = ["adapt", "--checkpoint", str(run), "--eval-tasks", "4", "--adapt-rounds", "2"]
    assert cli.main(base) == 0
    for scale in ("0.1", "0.2"):
        assert cli.main([*base, *online, "--online-lr-scale", scale]) == 0
    names = {path.name for path in run.glob("adapt_standard*")}
    stem = "adapt_standard_online_every5_window5_scale"
    assert names == {
        f"{name}.{ext}" for name in ("adapt_standard", f"{stem}0.1", f"{stem}0.2") for ext in ("json", "png")
    }
    assert (run / f"{stem}0.1.png").read_bytes() != (run / "adapt_standard.png").read_bytes()
    scales = {json.loads((run / f"{stem}{s}.json").read_text())["online"]["lr_scale"] for s in ("0.1", "0.2")}
    assert scales == {0.1, 0.2}


def test_method_pretrained_trains_the_fair_baseline_with_the_experiments_keys():
    from ssm_jax.config import CONFIGS, build, initial_state, training_key

    config = dataclasses.replace(CONFIGS["basic"], method="pretrained")
    _, trainer = build(config)
    state = initial_state(config, trainer)
    assert not state.meta_learning and float(state.meta.inner_lr) == 0.0  # train() runs pretrain_update on it
    assert initial_state(CONFIGS["basic"], trainer).meta_learning
    keys = sweep.run_keys(0)
    assert jax.random.key_data(training_key(config)).tolist() == jax.random.key_data(keys.pretrain).tolist()
    assert jax.random.key_data(training_key(CONFIGS["basic"])).tolist() == jax.random.key_data(keys.train).tolist()


def test_train_runs_an_in_context_config_for_one_policy_and_resumes_it_exactly(tmp_path, capsys):
    flags = ["--config", "in-context-smoke", "--models", "gru", "--num-seeds", "1", "--no-plots"]
    assert cli.main(["train", *flags, "--iterations", "6", "--out-dir", str(tmp_path / "whole")]) == 0
    assert cli.main(["train", *flags, "--iterations", "4", "--out-dir", str(tmp_path / "part")]) == 0
    (part,) = (tmp_path / "part").iterdir()
    assert cli.main(["train", "--resume", str(part), "--iterations", "6"]) == 0  # extends it to the whole run
    (whole,) = (tmp_path / "whole").iterdir()
    final = lambda run: json.loads((run / "train.json").read_text())["final_metrics"]
    assert final(part) == final(whole) and "episode_2_return" in final(whole)
    assert run_files.checkpoint_steps(part)[-1] == 6
    # eval and adapt serve it through the protocol: episode 1 of one trial, then episodes 1..M of the run's trials
    assert cli.main(["eval", "--checkpoint", str(whole), "--eval-tasks", "4"]) == 0
    assert len(json.loads((whole / "eval.json").read_text())["returns"]) == 4
    assert cli.main(["adapt", "--checkpoint", str(whole), "--eval-tasks", "4"]) == 0
    adapted = json.loads((whole / "adapt_in_context.json").read_text())
    per_task = np.asarray(adapted["per_task_returns"])
    assert per_task.shape == (4, 2) and adapted["adaptation_mode"] == "in_context"
    np.testing.assert_allclose(adapted["paired_gain"]["mean"], (per_task[:, 1:] - per_task[:, :1]).mean(0), 1e-5)
    assert "episode 2" in capsys.readouterr().out and (whole / "adapt_in_context.png").exists()
    for flags, said in (
        (["--adaptation-mode", "hybrid"], "so --adaptation-mode hybrid does not apply"),
        (["--online"], "so --online does not apply"),
        (["--adapt-rounds", "3"], "whose trials have 2 episodes: its adaptation rounds are the 1 after the first"),
    ):
        with pytest.raises(SystemExit) as exit_info:  # one line, before anything compiles
            cli.main(["adapt", "--checkpoint", str(whole), *flags, "--output", str(tmp_path / "refused.json")])
        assert exit_info.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "refused.json").exists()
    with pytest.raises(SystemExit) as exit_info:  # two policies: one line, before anything compiles
        cli.main(["train", "--config", "in-context-smoke", "--models", "gru", "mlp", "--out-dir", str(tmp_path / "no")])
    assert (
        exit_info.value.code == 2 and "trains one policy: pass --models with one of gru mlp" in capsys.readouterr().err
    )
    assert not (tmp_path / "no").exists()
    # Its own defaults train: the config's first policy, one seed (the preset runs 2 policies x 2 seeds).
    assert (
        cli.main(["train", "--config", "in-context-smoke", "--iterations", "2", "--out-dir", str(tmp_path / "own")])
        == 0
    )
    (own,) = (tmp_path / "own").iterdir()
    stored = json.loads((own / "config.json").read_text())
    assert "learning_curve.png" in {p.name for p in own.iterdir()} and not (part / "learning_curve.png").exists()
    assert json.dumps(stored).count('"gru"') == 1 and '"mlp"' not in json.dumps(stored)


def test_info_lists_every_named_config_by_what_runs_it(capsys):
    result = cli.info()
    assert set(result["configs"]) == set(TRAINABLE) and "in-context-smoke" in result["configs"]
    assert set(result["configs"]) | set(result["experiment_configs"]) == set(CONFIGS)
    assert not set(result["configs"]) & set(result["experiment_configs"])
    printed = capsys.readouterr().out
    assert all(name in printed for name in CONFIGS)
