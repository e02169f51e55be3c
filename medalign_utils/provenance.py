"""What made a result: library versions, git commit, machine. Recorded beside every output."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

TRACKED_PACKAGES = (
    "medalign-suite",
    "numpy",
    "pandas",
    "pyarrow",
    "lxml",
    "scipy",
    "statsmodels",
    "torch",
    "transformers",
    "tokenizers",
    "tiktoken",
    "bm25s",
    "sacrebleu",
    "rouge-score",
    "nltk",
    "bert-score",
    "papermill",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: str | Path | None = None) -> str:
    """The commit of the project checkout (with '+dirty' when it has uncommitted changes)."""
    cwd = Path(path) if path else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def environment_record() -> dict:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
