"""What each notebook declares: its parameters, and which of them name files it reads or writes.

A notebook's cell tagged ``parameters`` is the one place: its code declares the parameters (as
papermill reads them), and its metadata names the parameters that are files it reads and writes::

    "metadata": {"tags": ["parameters"],
                 "medalign": {"reads": ["prompts_path"], "writes": ["generations_path"]}}

The runner derives everything else from these declarations (`plan_notebooks`): the order notebooks
run in (a notebook after every notebook that writes what it reads), which notebooks a failure skips
(the readers of what it writes: a failed 03 would leave 05 reading an older run's answers), and what
a notebook's reuse key holds besides its parameters (the contents of the files it reads). The
release itself is read through ``data_dir`` and keyed by its fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

METADATA_KEY = "medalign"
# The config's settings that every notebook opening the release declares, so that the config's
# value reaches it as a parameter (`open_release(data_dir, follow_external_links=..., min_cell_patients=...)`).
RELEASE_SETTINGS = ("follow_external_links", "min_cell_patients")


@dataclass(frozen=True)
class NotebookSpec:
    """One notebook's declarations (`from_path`)."""

    path: Path
    parameters: frozenset[str]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.stem

    @classmethod
    def from_path(cls, path: str | Path) -> NotebookSpec:
        """Read a notebook's parameters cell. A `reads` or `writes` entry that is not one of its
        parameters is an error naming the notebook (it would otherwise key or order nothing)."""
        import nbformat
        from papermill.translators import PythonTranslator

        path = Path(path)
        try:
            nb = nbformat.read(str(path), as_version=4)
        except (OSError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable notebook ({type(err).__name__}: {str(err)[:200]})") from None
        cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
        if cell is None:
            return cls(path, frozenset())
        parameters = frozenset(p.name for p in PythonTranslator.inspect(cell))
        declared = cell.metadata.get(METADATA_KEY, {})
        if not isinstance(declared, dict):
            raise ValueError(f"{path}: the parameters cell's metadata.{METADATA_KEY} must be a mapping")
        reads, writes = (tuple(declared.get(k, ())) for k in ("reads", "writes"))
        unknown = sorted(set(reads + writes) - parameters)
        if unknown:
            raise ValueError(
                f"{path}: metadata.{METADATA_KEY} names {', '.join(unknown)}, "
                "which its parameters cell does not declare"
            )
        return cls(path, parameters, reads, writes)

    def reads_from(self, other: NotebookSpec) -> set[str]:
        """The parameters naming files `other` writes and this notebook reads."""
        return set(self.reads) & set(other.writes) if other.name != self.name else set()

    def missing_release_settings(self) -> list[str]:
        """The release settings (`RELEASE_SETTINGS`) a notebook that opens the release fails to declare."""
        if "data_dir" not in self.parameters:
            return []
        return [k for k in RELEASE_SETTINGS if k not in self.parameters]


def plan_notebooks(paths) -> list[NotebookSpec]:
    """The notebooks in the order they run: each after every notebook that writes a file it reads,
    otherwise in name order (the numbers in their names). A cycle is an error naming its notebooks."""
    specs = sorted((NotebookSpec.from_path(p) for p in paths), key=lambda s: s.name)
    planned: list[NotebookSpec] = []
    waiting = list(specs)
    while waiting:
        ready = next((s for s in waiting if not any(s.reads_from(o) for o in waiting if o is not s)), None)
        if ready is None:
            names = ", ".join(s.name for s in waiting)
            raise ValueError(f"notebooks {names} read each other's files in a cycle: no order runs them")
        planned.append(ready)
        waiting.remove(ready)
    return planned


def dependencies(spec: NotebookSpec, specs: list[NotebookSpec]) -> list[str]:
    """The notebooks among `specs` whose output `spec` reads (they run before it)."""
    return [o.name for o in specs if spec.reads_from(o)]


def notebook_table(specs: list[NotebookSpec]):
    """One row per notebook: what it reads, writes and depends on (`medalign run --plan`, the docs)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "notebook": [s.name for s in specs],
            "reads": [", ".join(s.reads) for s in specs],
            "writes": [", ".join(s.writes) for s in specs],
            "after": [", ".join(dependencies(s, specs)) for s in specs],
            "parameters": [len(s.parameters) for s in specs],
        }
    )


def parameter_defaults(notebook: Path) -> dict:
    """The literal defaults a notebook's parameters cell assigns (what it runs with when the config
    sets nothing): ``name = <literal>`` lines; others (computed) are left out."""
    import ast
    import json

    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    cell = next((c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out
