"""The front door: a README of at most 150 lines whose links resolve and whose quickstart runs, and a documentation
site that builds with `mkdocs build --strict`, its API reference covering every public module, and results pages
that their recorded runs regenerate."""

import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ssm_jax
from experiments import results_pages
from ssm_jax.report import provenance

ROOT = Path(__file__).parent.parent


def test_the_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    targets = re.findall(r"\]\(([^)#]+)\)", readme)
    local = [target for target in targets if not target.startswith("http")]
    assert len(local) >= 10 and all((ROOT / target).exists() for target in local), local


def _public_modules() -> list[str]:
    found = pkgutil.walk_packages(ssm_jax.__path__, "ssm_jax.")
    return sorted(m.name for m in found if not any(part.startswith("_") for part in m.name.split(".")))


def test_the_site_builds_strictly_and_its_api_reference_lists_every_public_module(tmp_path):
    documented = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: (\S+)$", page.read_text(), re.MULTILINE))
    assert documented == set(_public_modules())
    navigation = (ROOT / "mkdocs.yml").read_text()
    assert all(f"api/{page.name}" in navigation for page in (ROOT / "docs" / "api").glob("*.md"))
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ssm_jax.runs.train_phase" in (tmp_path / "site" / "api" / "runs" / "index.html").read_text()


@pytest.mark.slow
def test_the_readme_quickstart_runs_eight_runs_as_one_program(capsys):
    snippet = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["returns"].shape == (8, 16, namespace["config"].evaluation.adapt_rounds + 1)
    assert len(capsys.readouterr().out.strip().splitlines()) == 8  # one curve per run


RECORDED_PAGES = {
    "budget_study_vel",
    "replay_navigation_cpu",
    "replay_navigation_h200",
    "replay_online_h200",
    "replay_world_model_h200",
    "halfcheetah_vel_cpu",
    "navigation",
    "sinusoid_li",
    "sinusoid_paper",
    "sweep_inner_lr",
    "world_model_benchmark",
    "world_model_halfcheetah_vel",
    "world_model_pendulum",
}


def test_every_results_page_is_what_its_recorded_run_renders():
    recorded = results_pages.pages(results_pages.RESULTS)
    assert {page.name for page in recorded} >= RECORDED_PAGES
    assert all(results_pages.differences(page) == [] for page in recorded), [
        results_pages.differences(p) for p in recorded
    ]
    navigation = (ROOT / "mkdocs.yml").read_text()
    assert all(f"results/{page.name}/results.md" in navigation for page in recorded)


def test_the_headline_table_is_the_recorded_navigation_run():
    for path, link_prefix in results_pages.HEADLINE_FILES.items():
        text = path.read_text()
        assert results_pages.with_headline(text, link_prefix, results_pages.RESULTS) == text, (
            f"{path.name}: run experiments.results_pages"
        )
    page = (results_pages.RESULTS / "navigation" / "results.md").read_text()
    rows = re.findall(r"^\| (?:MAML, ours|random init, ours) \| (.*) \|$", (ROOT / "README.md").read_text(), re.M)
    assert len(rows) == 2 and all(f"| {row} |" in page for row in rows)


def test_the_flagship_line_quotes_the_recorded_budget_study():
    study = (results_pages.RESULTS / "budget_study_vel" / "results.md").read_text()
    (ten_million,) = re.findall(r"^\| 10,000,000 \|.*$", study, re.M)
    for path in results_pages.HEADLINE_FILES:
        (gain,) = re.findall(r"(\+\d+\.\d ± \d+\.\d) at 10M", path.read_text())
        assert f"| {gain} |" in ten_million, (path.name, gain)


def test_a_results_page_whose_recorded_numbers_changed_is_reported(tmp_path):
    page = tmp_path / "budget_study_vel"
    shutil.copytree(results_pages.RESULTS / "budget_study_vel", page)
    results = json.loads((page / "results.json").read_text())
    first = results["rows"][0]
    difference = first["gain_difference"]
    first["per_task_returns"]["MAML"] = [[before, after + 10.0] for before, after in first["per_task_returns"]["MAML"]]
    (page / "results.json").write_text(json.dumps(results))  # MAML's gain, and so the difference, 10 higher per task
    assert results_pages.differences(page) == ["budget_study_vel/results.md differs from what its recorded run renders"]
    results_pages.render(page)
    assert results_pages.differences(page) == []
    assert f"| {difference['mean'] + 10:+.1f} ± {difference['ci95']:.1f} |" in (page / "results.md").read_text()


@pytest.mark.slow
def test_a_finished_experiment_records_its_provenance_and_becomes_a_page(tmp_path):
    command = [sys.executable, "-m", "experiments.navigation", "--preset", "smoke", "--out-dir", str(tmp_path / "runs")]
    unset = (*provenance.NUMERIC_ENVIRONMENT, provenance.USER_FLAGS_VARIABLE)  # the flags given to this command alone
    env = {name: value for name, value in os.environ.items() if name not in unset}
    env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS") or "--xla_cpu_multi_thread_eigen=true"
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    (run_dir,) = (tmp_path / "runs").iterdir()
    recorded = json.loads((run_dir / "provenance.json").read_text())
    assert recorded["command"] == " ".join([f"XLA_FLAGS={env['XLA_FLAGS']}", "python", "-m", *command[2:]])
    assert recorded["experiment"] == "experiments.navigation" and recorded["seconds"] > 0
    page = results_pages.record(run_dir, "navigation_smoke", root=tmp_path / "pages")
    text = (page / "results.md").read_text()
    assert text.split("\n\n")[1].startswith(f"Recorded run: `{recorded['command']}` at commit")
    assert text.split("\n\n", 2)[2] == (run_dir / "results.md").read_text().split("\n\n", 1)[1]  # the run's own
    assert results_pages.differences(page) == []


def test_the_replay_verdict_quotes_its_recorded_runs():
    """Every figure the adaptation guide's verdict table, the README and the docs home quote from the flagship's
    run and budget study, the replay study and the in-context run is on one of their recorded pages (the signs
    aside: the pages print −x as -x)."""
    recorded = (
        "halfcheetah_vel_cpu", "halfcheetah_vel_cpu_seed1", "budget_study_vel", "budget_study_dir",
        "replay_navigation_h200", "replay_online_h200",
        "replay_world_model_h200", "replay_navigation_cpu", "in_context_navigation",
    )  # fmt: skip
    pages = " ".join((results_pages.RESULTS / name / "results.md").read_text().replace("-", "") for name in recorded)
    guide = (ROOT / "docs" / "adaptation.md").read_text().split("## The verdict", 1)[1]
    for path, text in ((ROOT / "README.md", None), (ROOT / "docs" / "index.md", None), ("verdict", guide)):
        text = text if text is not None else path.read_text().split("HalfCheetah-Vel, the flagship", 1)[1]
        figures = re.findall(r"[+−-]?(\d+\.\d+ ± \d+\.\d+)", text)
        assert figures, path
        missing = [figure for figure in figures if figure not in pages]
        assert not missing, (path, missing)


def test_the_in_context_guide_quotes_its_recorded_runs_and_benchmark():
    """Every figure the in-context guide's results quote is on a recorded in-context or MAML page (signs aside), and
    its replay-speed table is `benchmarks/results/trial_replay.json`, row for row."""
    guide = (ROOT / "docs" / "in-context.md").read_text()
    results, replay = guide.split("## Results", 1)[1].split("## Trial replay speed", 1)
    names = [
        page.name
        for page in results_pages.pages(results_pages.RESULTS)
        if page.name.startswith(("in_context_", "maml_"))
    ]
    names.append("halfcheetah_vel_cpu")  # the flagship run the HalfCheetah comparison pairs with
    pages = " ".join((results_pages.RESULTS / name / "results.md").read_text().replace("-", "") for name in names)
    figures = re.findall(r"(\d+\.\d+ ± \d+\.\d+)", results)
    assert figures and not [figure for figure in figures if figure not in pages]
    rows = json.loads((ROOT / "benchmarks" / "results" / "trial_replay.json").read_text())["rows"]
    assert rows and all(f"{row['forward_grad_ms']:.1f} ({row['parallel_speedup']:.2f}x)" in replay for row in rows)


def test_every_table_on_the_results_pages_renders_as_a_table():
    """A `|` inside a cell (the cheetah's `|v - goal|` header) must not break its table into a raw paragraph."""
    import markdown

    for page_dir in results_pages.pages(results_pages.RESULTS):
        html = markdown.markdown((page_dir / "results.md").read_text(), extensions=["tables"])
        raw = [line for line in html.splitlines() if line.startswith("<p>|")]
        assert not raw, f"{page_dir.name}: a table rendered as a paragraph: {raw[0][:120]}"


def test_a_page_whose_command_now_runs_another_config_fails_the_check(tmp_path):
    """A default changed since a page was recorded (here the hybrid replay source) makes the page stale unless the page
    explains the drift."""
    page = tmp_path / "navigation"
    shutil.copytree(results_pages.RESULTS / "navigation", page)
    (page / results_pages.DRIFT).unlink()
    drift = results_pages.config_drift(page)
    assert any("now runs evaluation.replay='task', the recorded run evaluation.replay='meta'" in line for line in drift)
    assert not results_pages.config_drift(results_pages.RESULTS / "navigation")


@pytest.mark.slow
def test_the_test_counts_the_readme_and_install_guide_state_are_the_suites():
    """The README and docs/install.md say how many tests the fast suite has and how many are marked slow."""

    def collected(*flags: str) -> int:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", *flags], cwd=ROOT, capture_output=True, text=True
        )
        return int(re.search(r"(\d+)(?:/\d+)? tests? collected", done.stdout).group(1))

    total, slow = collected(), collected("-m", "slow")
    for path in (ROOT / "README.md", ROOT / "docs" / "install.md"):
        text = " ".join(path.read_text().split())
        assert f"fast suite alone ({total - slow} tests" in text, path.name
        assert f"the {slow} tests marked `slow`" in text, path.name


def test_a_field_the_study_never_reads_does_not_make_its_page_stale(tmp_path):
    """The budget study trains to its budgets and keeps no checkpoint: a moved `iterations` default leaves its page
    standing, a moved PPO epoch count does not."""
    page = tmp_path / "budget_study_dir"
    shutil.copytree(results_pages.RESULTS / "budget_study_dir", page)
    config = json.loads((page / "config.json").read_text())
    config["fields"]["iterations"] = 995
    (page / "config.json").write_text(json.dumps(config))
    assert results_pages.config_drift(page) == []
    config["fields"]["trainer"]["fields"]["outer_epochs"] = 2
    (page / "config.json").write_text(json.dumps(config))
    (line,) = results_pages.config_drift(page)
    assert "now runs trainer.outer_epochs=5, the recorded run trainer.outer_epochs=2" in line
