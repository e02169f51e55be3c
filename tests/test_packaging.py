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
