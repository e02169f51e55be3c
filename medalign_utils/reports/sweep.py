"""Sweeps: the suite run over a matrix of settings, each cell an ordinary run, on Dask.

A sweep file is a config plus three keys: `matrix` (dotted config keys, each with the values to
try: ``notebooks.03_model_generation.max_new_tokens: [32, 48]``), `only` (as `medalign run --only`)
and `plot` (the findings to draw along each axis; default the first three every cell has). Each
cell is a `run_suite` run in its own folder, `<out>/<cell>/`, with its own pages, findings and
scan. A cell is keyed by its resolved config, `only`, the package's code version and the data's
fingerprint: a rerun skips every cell whose key it has already run (`--force` runs them again).

The cells share one notebook cache (`<out>/.cache`), each entry made under a lock, so a notebook
whose inputs two cells share runs once. What notebooks write beside the pages (prompts,
generations, judgments) goes to a folder named by the writing notebook and everything it was
given (`data/sweeps/<sweep>/<notebook>-<hash>/`): cells that give it the same inputs share it,
others cannot overwrite each other's.

Cells run on `dask.distributed`: a `LocalCluster` of worker processes on loopback by default, or an
existing scheduler (`tcp://HOST:8786`, e.g. dask-jobqueue's on Slurm; its workers must see the
sweep folder). A cell that fails is reported with its reason; the others go on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ..config import ConfigError, SuiteConfig, deep_merge, load_config, project_path, project_root, read_yaml_mapping

SWEEP_KEYS = ("matrix", "only", "plot")
CELL_RECORD = "cell.json"


@dataclass(frozen=True)
class SweepCell:
    """One combination of the matrix's values (dotted key -> value)."""

    assignments: dict

    @property
    def name(self) -> str:
        """A folder name that says the cell's values: ``bootstrap_unit-patient__max_new_tokens-48``."""
        parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in self.assignments.items()]
        text = "__".join(parts) or "base"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)

    def overrides(self) -> dict:
        """The assignments as a nested config mapping."""
        out: dict = {}
        for key, value in self.assignments.items():
            *parents, last = key.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return out


@dataclass(frozen=True)
class SweepSpec:
    """A sweep file: its base config (`extends`), the other keys as overrides, the matrix."""

    path: Path
    base: Path
    overrides: dict
    matrix: dict
    only: list | None = None
    plot: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem

    @classmethod
    def from_file(cls, path: str | Path) -> SweepSpec:
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such sweep file")
        raw = read_yaml_mapping(path, what="sweep file")
        matrix = raw.pop("matrix", None)
        if not isinstance(matrix, dict) or not matrix:
            raise ConfigError(f"{path}: needs a `matrix` of config keys, each with a list of values to try")
        for key, values in matrix.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: matrix.{key} must be a non-empty list of values")
        only, plot = raw.pop("only", None), raw.pop("plot", None) or []
        base = _extends(path, raw.pop("extends", None))
        return cls(path, base, raw, dict(matrix), list(only) if only else None, list(plot))

    def cells(self) -> list[SweepCell]:
        keys = list(self.matrix)
        return [SweepCell(dict(zip(keys, combo))) for combo in itertools.product(*(self.matrix[k] for k in keys))]

    def cell_config(self, cell: SweepCell, *, notebooks_dir=None, data_root=None) -> tuple[dict, SuiteConfig]:
        """The cell's overrides (its values over the sweep's, and the writers' outputs isolated)
        and the config they make; a key the schema does not know is an error naming the sweep file."""
        overrides = deep_merge(self.overrides, cell.overrides())
        try:
            cfg = load_config(self.base, overrides)
        except ConfigError as err:
            raise ConfigError(f"{self.path}: cell {cell.name}: {err}") from None
        root = Path(data_root) if data_root else project_path(f"data/sweeps/{self.name}")
        overrides = isolate_writes(cfg, overrides, base=self.base, root=root, notebooks_dir=notebooks_dir)
        return overrides, load_config(self.base, overrides)


def _extends(path: Path, parent) -> Path:
    """The sweep's base config: beside the sweep file, else in configs/, else from the root."""
    if parent is None:
        return project_path("configs/synthetic.yaml")
    for candidate in (path.parent / parent, project_path("configs") / parent, project_path(parent)):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{path}: extends {parent}, which is neither beside it nor in configs/")


def isolate_writes(cfg: SuiteConfig, overrides: dict, *, base: Path, root: Path, notebooks_dir=None) -> dict:
    """Each file a notebook writes (its declared `writes`) moved to a folder named by that notebook
    and everything it is given (`root/<notebook>-<hash>/`, the file's own name kept), in the plan's
    order so a reader's inputs are already the moved files: cells that give a writer the same
    inputs share its output, and no cell overwrites another's."""
    from .notebooks import plan_notebooks

    folder = Path(notebooks_dir) if notebooks_dir else project_root() / "notebooks"
    out = json.loads(json.dumps(overrides))
    globals_ = set(cfg.global_parameters())
    for spec in plan_notebooks(sorted(folder.glob("[0-9]*.ipynb"))):
        if not spec.writes:
            continue
        params = cfg.notebook_parameters(spec.name, set(spec.parameters))
        basis = {k: v for k, v in params.items() if k not in spec.writes}
        h = hashlib.blake2b(digest_size=6)
        h.update(spec.path.read_bytes())
        h.update(json.dumps(basis, sort_keys=True, default=str).encode())
        for name in spec.writes:
            if not params.get(name):
                continue
            moved = str(root / f"{spec.name}-{h.hexdigest()}" / Path(params[name]).name)
            if name in globals_:
                out[name] = moved
            else:
                out.setdefault("notebooks", {}).setdefault(spec.name, {})[name] = moved
        cfg = load_config(base, out)
    return out


def cell_key(cfg: SuiteConfig, *, only, fingerprint: str) -> str:
    """What a cell's results depend on: its resolved config, `only`, the code, the data."""
    from .runner import code_version

    h = hashlib.blake2b(digest_size=10)
    settings = {k: v for k, v in cfg.to_dict().items() if k != "source"}
    h.update(json.dumps([settings, only], sort_keys=True, default=str).encode())
    h.update(fingerprint.encode())
    h.update(code_version().encode())
    return h.hexdigest()


def sweep_plan(path: str | Path, *, out=None, force: bool = False, notebooks_dir=None, data_root=None) -> pd.DataFrame:
    """Every cell of a sweep: its values, key, folder, and whether it would run (`to run`) or was
    already run with the same key and ran clean (`done`). `data_root`: where the notebooks' own
    files go (default `data/sweeps/<sweep>/`: under data/, as they may hold patient text)."""
    from ..data.release import load_release

    spec = SweepSpec.from_file(path)
    out = project_path(out) if out else project_path(f"reports/sweeps/{spec.name}")
    rows, fingerprints = [], {}
    for cell in spec.cells():
        overrides, cfg = spec.cell_config(cell, notebooks_dir=notebooks_dir, data_root=data_root)
        data = project_path(cfg.data_dir)
        if data not in fingerprints:
            exists = data.exists()
            fingerprints[data] = (
                load_release(data, follow_external_links=cfg.follow_external_links).fingerprint()
                if exists
                else "to be made"
            )
        key = cell_key(cfg, only=spec.only, fingerprint=fingerprints[data])
        previous = _read_cell(out / cell.name)
        done = previous.get("key") == key and previous.get("ok") and not force
        status = "done" if done else "to run"
        rows.append({"cell": cell.name, **cell.assignments, "status": status, "key": key, "overrides": overrides})
    table = pd.DataFrame(rows)
    table.attrs.update(
        spec=spec, out=out, data_root=Path(data_root) if data_root else project_path(f"data/sweeps/{spec.name}")
    )
    return table


def _read_cell(folder: Path) -> dict:
    try:
        return json.loads((folder / CELL_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_cell(base: str, overrides: dict, out: str, *, cache_dir: str, only, notebooks_dir=None, data_root=None) -> dict:
    """One cell on a worker: `run_suite` into its own folder with the sweep's shared cache;
    returns whether it ran clean and, if not, why (one line)."""
    from .runner import run_suite

    try:
        if data_root:  # the writers' isolated folders exist before their notebooks write into them
            for path in _paths_under(overrides, Path(data_root)):
                path.parent.mkdir(parents=True, exist_ok=True)
        ok = run_suite(
            config=base,
            overrides=overrides,
            out=out,
            only=only,
            progress=False,
            notebooks_dir=notebooks_dir,
            cache_dir=cache_dir,
            jobs=1,  # the sweep runs cells side by side, a worker a core
        )
    except Exception as err:  # a cell's failure is reported; the sweep goes on
        return {"ok": False, "reason": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    record = _latest_record(Path(out))
    failed = [n for n in record.get("notebooks", []) if n.get("status") != "ok"]
    reason = "; ".join(f"{n.get('name')}: {n.get('status')}: {n.get('error') or ''}".strip() for n in failed)
    if not ok and not reason:
        reason = "the share-safe scan withheld something (see the cell's run.json)"
    return {"ok": bool(ok), "reason": reason or None}


def _paths_under(overrides: dict, root: Path) -> list[Path]:
    found = []
    for value in overrides.values():
        if isinstance(value, dict):
            found += _paths_under(value, root)
        elif isinstance(value, str) and Path(value).is_relative_to(root):
            found.append(Path(value))
    return found


def _latest_record(out: Path) -> dict:
    try:
        return json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_sweep(
    path: str | Path,
    *,
    out=None,
    force: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    notebooks_dir=None,
    data_root=None,
) -> pd.DataFrame:
    """Run every cell that is not done (`sweep_plan`) on Dask, write each cell's record and the
    sweep's page (`<out>/index.html`, `<out>/sweep.json`); returns the plan with each cell's
    outcome (`status`: done, ran, failed; `reason`)."""
    from .runner import usable_out

    plan = sweep_plan(path, out=out, force=force, notebooks_dir=notebooks_dir, data_root=data_root)
    spec, out = plan.attrs["spec"], usable_out(plan.attrs["out"])
    todo = plan[plan.status == "to run"]
    plan["reason"] = None
    if len(todo):
        outcomes = _run_on_dask(
            todo, spec, out, scheduler=scheduler, workers=workers, progress=progress, nbs=notebooks_dir,
            root=plan.attrs["data_root"],
        )  # fmt: skip
        for idx, outcome in outcomes.items():
            row = plan.loc[idx]
            record = {"key": row.key, "cell": row.cell, "assignments": _assignments(row, spec), **outcome}
            record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
            (out / row.cell).mkdir(parents=True, exist_ok=True)
            (out / row.cell / CELL_RECORD).write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
            plan.loc[idx, "status"] = "ran" if outcome["ok"] else "failed"
            plan.loc[idx, "reason"] = outcome.get("reason")
    write_sweep_page(plan, spec, out)
    return plan


def _assignments(row, spec: SweepSpec) -> dict:
    return {k: row[k] for k in spec.matrix}


def _run_on_dask(todo: pd.DataFrame, spec: SweepSpec, out: Path, *, scheduler, workers, progress, nbs, root) -> dict:
    import os

    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    if scheduler:
        cluster, client = None, Client(scheduler)
    else:  # loopback only: nothing of the cluster listens beyond this machine
        n = workers or min(len(todo), os.cpu_count() or 1)
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        )
        client = Client(cluster)
    try:
        futures = {}
        for idx, row in todo.iterrows():
            args = (str(spec.base), row.overrides, str(out / row.cell))
            kwargs = {"cache_dir": str(out / ".cache"), "only": spec.only, "notebooks_dir": nbs, "data_root": str(root)}
            futures[client.submit(run_cell, *args, **kwargs, key=f"cell-{row.cell}-{row.key}", pure=False)] = idx
        outcomes = {}
        bar = tqdm(total=len(futures), desc="sweep cells", unit="cell", disable=not progress)
        for future in as_completed(futures):
            idx = futures[future]
            try:
                outcomes[idx] = future.result()
            except Exception as err:  # the worker itself died: said, and the others go on
                outcomes[idx] = {"ok": False, "reason": f"{type(err).__name__}: {err}"}
            bar.update(1)
        bar.close()
        return outcomes
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ------------------------------------------------------------------ the sweep's page


def sweep_findings(plan: pd.DataFrame, out: Path) -> pd.DataFrame:
    """Every cell's findings (from its latest run): cell, the matrix's values, name, value, CI, unit."""
    spec = plan.attrs["spec"]
    rows = []
    for row in plan.itertuples(index=False):
        record = _latest_record(out / row.cell)
        for f in record.get("findings", []):
            ci = (f.get("ci_low"), f.get("ci_high")) if "ci_low" in f else (f.get("ci") or (None, None))
            rows.append(
                {
                    "cell": row.cell,
                    "finding": f.get("name"),
                    "value": f.get("value"),
                    "ci_low": ci[0] if len(ci) > 1 else None,
                    "ci_high": ci[1] if len(ci) > 1 else None,
                    "unit": f.get("unit", ""),
                }
            )
    table = pd.DataFrame(rows, columns=["cell", "finding", "value", "ci_low", "ci_high", "unit"])
    for k in spec.matrix:
        table[k] = table.cell.map(plan.set_index("cell")[k])
    return table


def write_sweep_page(plan: pd.DataFrame, spec: SweepSpec, out: Path) -> Path:
    """The sweep's page: the cells and their outcome, each finding by cell, and the chosen findings
    drawn along each axis with their CIs; through the share-safe writer like every page."""
    import io  # figures are inlined as SVG text, never a raster
    from html import escape

    import matplotlib

    matplotlib.use("Agg")
    from .. import plots
    from ..data.release import load_release
    from .scan import SensitiveIndex, ShareSafeWriter

    findings = sweep_findings(plan, out)
    cfg = load_config(spec.base, spec.overrides)
    release = load_release(project_path(cfg.data_dir), follow_external_links=cfg.follow_external_links)
    writer = ShareSafeWriter(None if release.is_synthetic else SensitiveIndex.from_release(release, progress=False))
    chosen = spec.plot or _common_findings(findings, plan)[:3]
    figures = []
    for name in chosen:
        part = findings[findings.finding == name]
        if not len(part):
            continue
        fig = plots.sweep_axes(part, list(spec.matrix), title=name)
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
        figures.append(buf.getvalue())
    cells = plan[["cell", *spec.matrix, "status", "reason"]].fillna("").to_html(index=False, escape=True)
    wide = (
        findings.assign(shown=[_shown(r) for r in findings.itertuples()])
        .pivot_table(index="finding", columns="cell", values="shown", aggfunc="first")
        .to_html(na_rep="—", escape=True)
        if len(findings)
        else "<p>no findings yet</p>"
    )
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>sweep {escape(spec.name)}</title></head><body>"
        f"<h1>Sweep {escape(spec.name)}</h1><p>{len(plan)} cells over {escape(', '.join(spec.matrix))}"
        f"; each cell is its own run (its folder's index.html).</p><h2>Cells</h2>{cells}"
        f"<h2>Findings along each axis</h2>{''.join(figures) or '<p>nothing to draw</p>'}"
        f"<h2>Every finding by cell</h2>{wide}</body></html>"
    )
    writer.write(out / "index.html", html)
    record = {
        "sweep": spec.name,
        "matrix": spec.matrix,
        "cells": plan.drop(columns=["overrides"]).to_dict("records"),
        "findings": findings.to_dict("records"),
    }
    writer.write_json(out / "sweep.json", json.loads(json.dumps(record, default=str)))
    return out / "index.html"


def _shown(row) -> str:
    if not isinstance(row.value, (int, float)):
        return str(row.value)
    ci = f" ({row.ci_low:.3g}–{row.ci_high:.3g})" if row.ci_low is not None and pd.notna(row.ci_low) else ""
    return f"{row.value:.3g}{ci} {row.unit}".strip()


def _common_findings(findings: pd.DataFrame, plan: pd.DataFrame) -> list[str]:
    """Numeric findings every cell that ran has, in their order."""
    if not len(findings):
        return []
    numeric = findings[pd.to_numeric(findings.value, errors="coerce").notna()]
    counts = numeric.groupby("finding", sort=False).cell.nunique()
    return list(counts[counts == numeric.cell.nunique()].index)
