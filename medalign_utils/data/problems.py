"""Problems found in input data: one line each, naming the file and the line or row.

Every reader in the package collects problems instead of raising or dropping rows silently, so a
user sees exactly what was skipped or coerced. Only a problem that makes the input unusable (a
missing folder, file or required column) is `fatal`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    where: str | None = None  # "line 12" or "row 7"
    fatal: bool = False

    def __str__(self) -> str:
        place = f"{self.file}:{self.where}" if self.where else self.file
        return f"problem: {place}: {self.message}"


class UnusableReleaseError(Exception):
    """The release cannot be read at all (exit code 2 of `medalign validate`)."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem
