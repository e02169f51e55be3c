"""Running the notebooks with papermill into shareable HTML reports.

`run_suite` executes every notebook in ``notebooks/`` in order, injecting the parameters each one
declares from a YAML config, renders each to HTML, and writes ``reports/index.html`` and
``reports/run.json``. A notebook that fails stops only the notebooks that depend on it. Results are
reused when the notebook, its parameters, the data and the code are unchanged.

Share-safe reports: when the data is the real release (no ``SYNTHETIC`` marker) and the config
does not set ``share_safe: false``, every rendered page and executed notebook is scanned for text
of the input data (instructions, reference and model responses, note text, person_ids). A page
that holds any is deleted, its notebook marked failed with the page named, and the run fails.
The scan, not notebook discipline, is what enforces it.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from .provenance import environment_record

DEFAULT_CONFIG = "configs/synthetic.yaml"
# A notebook runs only if the notebooks it depends on succeeded.
DEPENDENCIES = {"03_model_generation": ["02_context_truncation"]}
SHINGLE_WORDS = 8


def project_root(start: str | Path | None = None) -> Path:
    """The repository root (the folder with pyproject.toml), from `start` or this package."""
    for base in ([Path(start).resolve()] if start else []) + [Path.cwd().resolve(), Path(__file__).resolve().parent]:
        for p in [base, *base.parents]:
            if (p / "pyproject.toml").exists() and (p / "medalign_utils").is_dir():
                return p
    return Path.cwd()


def project_path(path: str | Path) -> Path:
    """A path from a config or notebook parameter: absolute as given, else relative to the repo root,
    so notebooks work the same from papermill and from `jupyter lab` in notebooks/."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def open_release(data_dir: str | Path, generate_if_missing: bool = True, scale: str = "default", seed: int = 0):
    """Load the release at `data_dir`; when it is absent and names a synthetic folder, generate the
    default synthetic cohort there first (so a notebook runs top to bottom by hand)."""
    from .release import load_release
    from .synthetic import CohortSpec, make_cohort

    path = project_path(data_dir)
    if not path.exists() and generate_if_missing and "synthetic" in path.name:
        make_cohort(path, CohortSpec.for_scale(scale, seed=seed))
    return load_release(path)


# ------------------------------------------------------------------ share-safe scan

def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _page_text(raw: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", text)
    text = html.unescape(text)
    # Executed .ipynb files escape text as JSON strings.
    return text.replace("\\n", " ").replace('\\"', '"')


@dataclass
class SensitiveIndex:
    """What must not appear in a shareable page: hashed word shingles of every text of the input,
    short texts whole, and person_ids. Built once per run from the release."""

    shingles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    short_texts: set = field(default_factory=set)
    person_ids: set = field(default_factory=set)
    n_texts: int = 0

    @classmethod
    def from_release(cls, release, progress: bool = False) -> "SensitiveIndex":
        texts = []
        for df, cols in ((release.instructions, ["question"]), (release.references, ["clinician_response", "evidence"]),
                         (release.model_responses, ["model_response", "clinician_response", "question"])):
            for c in cols:
                if c in df.columns:
                    texts += [t for t in df[c].dropna().astype(str).unique() if t.strip()]
        events = release.events(columns=["event_type", "text"], progress=progress)
        texts += events.loc[events.event_type == "note", "text"].dropna().astype(str).tolist()
        hashes, short = [], set()
        for t in texts:
            w = _words(t)
            if len(w) < SHINGLE_WORDS:
                if len(" ".join(w)) >= 12:  # shorter strings ("yes", "85 bpm") say nothing about a patient
                    short.add(" ".join(w))
                continue
            # Shingles at a stride of SHINGLE_WORDS: any leaked run of 2*SHINGLE_WORDS-1 words holds one.
            hashes += [hash(" ".join(w[i:i + SHINGLE_WORDS])) for i in range(0, len(w) - SHINGLE_WORDS + 1, SHINGLE_WORDS)]
        pids = {str(p) for p in release.ehr_files if len(str(p)) >= 6}
        return cls(np.unique(np.asarray(hashes, dtype=np.int64)), short, pids, len(texts))

    def scan(self, raw: str) -> list[str]:
        """Kinds of leak found in a page (never the leaked text itself)."""
        text = _page_text(raw)
        w = _words(text)
        found = []
        if len(w) >= SHINGLE_WORDS and len(self.shingles):
            page = np.asarray([hash(" ".join(w[i:i + SHINGLE_WORDS])) for i in range(len(w) - SHINGLE_WORDS + 1)], np.int64)
            hits = int(np.isin(page, self.shingles).sum())
            if hits:
                found.append(f"{hits} passages of record, instruction or response text")
        joined = " " + " ".join(w) + " "
        n_short = sum(1 for s in self.short_texts if f" {s} " in joined)
        if n_short:
            found.append(f"{n_short} short instruction or response texts")
        n_ids = len(self.person_ids.intersection(w))
        if n_ids:
            found.append(f"{n_ids} person_ids")
        return found


# ------------------------------------------------------------------ running

@dataclass
class NotebookResult:
    name: str
    status: str  # ok | failed | skipped | leak
    seconds: float = 0.0
    html: str | None = None
    ipynb: str | None = None
    error: str | None = None
    cell: int | None = None
    reused: bool = False
    parameters: dict = field(default_factory=dict)


def load_config(config: str | Path | None) -> dict:
    path = project_path(config or DEFAULT_CONFIG)
    if not path.exists():
        raise FileNotFoundError(f"config {path} does not exist")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config {path} is not valid YAML: {err}") from err
    if not isinstance(cfg, dict):
        raise ValueError(f"config {path} must be a mapping of parameters")
    cfg["_path"] = str(path)
    return cfg


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in a notebook's cell tagged `parameters`."""
    import ast

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    return set()


def notebook_parameters(cfg: dict, notebook: Path) -> dict:
    """The config values a notebook declares in its parameters cell (global ones, then the
    notebook's own section `notebooks: {name: {...}}`)."""
    declared = declared_parameters(notebook)
    own = (cfg.get("notebooks") or {}).get(notebook.stem, {}) or {}
    merged = {**{k: v for k, v in cfg.items() if not k.startswith("_") and k != "notebooks"}, **own}
    return {k: v for k, v in merged.items() if k in declared}


def _cache_key(notebook: Path, params: dict, fingerprint: str) -> str:
    from . import __version__
    from .provenance import git_commit

    h = hashlib.blake2b(digest_size=10)
    h.update(notebook.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(fingerprint.encode())
    h.update(__version__.encode())
    code = Path(__file__).resolve().parent
    for f in sorted(code.rglob("*.py")):  # any change to the package invalidates reuse
        h.update(f.read_bytes())
    h.update(git_commit().encode())
    return h.hexdigest()


def render_html(ipynb: Path, target: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(ipynb), as_version=4)
    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


def run_suite(config: str | Path | None = None, data: str | Path | None = None, out: str | Path = "reports",
              only: list[str] | None = None, progress: bool = True, notebooks_dir: str | Path | None = None,
              kernel_name: str = "python3") -> bool:
    """Run the suite; returns True when every notebook ran and every page passed the scan."""
    from tqdm import tqdm

    cfg = load_config(config)
    if data is not None:
        cfg["data_dir"] = str(data)
    cfg.setdefault("data_dir", "data/synthetic")
    synth = cfg.get("synthetic", {}) or {}
    release = open_release(cfg["data_dir"], generate_if_missing=synth.get("generate_if_missing", True),
                           scale=synth.get("scale", "default"), seed=synth.get("seed", 0))
    fingerprint = release.fingerprint()
    share_safe = bool(cfg.get("share_safe", True))
    scan_needed = share_safe and not release.is_synthetic
    index = SensitiveIndex.from_release(release, progress=progress) if scan_needed else None

    out = project_path(out)
    nb_dir = Path(notebooks_dir) if notebooks_dir else project_root() / "notebooks"
    notebooks = sorted(p for p in nb_dir.glob("[0-9]*.ipynb"))
    if only:
        notebooks = [p for p in notebooks if any(p.stem.startswith(o) or p.stem == o for o in only)]
        if not notebooks:
            raise ValueError(f"--only {' '.join(only)} matches no notebook in {nb_dir}")
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S") + ("-synthetic" if release.is_synthetic else "-release")
    run_dir = out / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = out / ".cache"
    cache_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, NotebookResult] = {}
    bar = tqdm(notebooks, desc="notebooks", unit="notebook", disable=not progress)
    with _inline_figures():
        for nb in bar:
            _run_one(nb, cfg, fingerprint, run_dir, cache_dir, results, scan_needed, index, progress, kernel_name, bar)
    bar.close()


    record = {
        "run_id": run_id,
        "data": {"dir": cfg["data_dir"], "synthetic": release.is_synthetic, "fingerprint": fingerprint,
                 "patients": len(release.ehr_files), "instructions": len(release.instructions)},
        "share_safe": share_safe,
        "scanned": scan_needed,
        "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
        "config_file": cfg["_path"],
        "environment": environment_record(),
        "notebooks": [r.__dict__ for r in results.values()],
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (run_dir / "run.json").write_text(json.dumps(record, indent=1, default=str))
    (out / "run.json").write_text(json.dumps(record, indent=1, default=str))
    (out / "index.html").write_text(index_html(record), encoding="utf-8")
    if progress:
        ok = sum(r.status == "ok" for r in results.values())
        print(f"{ok}/{len(results)} notebooks ok; index: {out / 'index.html'}")
    return all(r.status == "ok" for r in results.values())


@contextmanager
def _inline_figures():
    """Kernels inherit the environment: a headless MPLBACKEND (Agg) would keep every figure out of
    the pages, so the inline backend is set while notebooks run, then the old value restored."""
    old = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old


def _run_one(nb: Path, cfg: dict, fingerprint: str, run_dir: Path, cache_dir: Path, results: dict,
             scan_needed: bool, index, progress: bool, kernel_name: str, bar) -> None:
    """Execute (or reuse), render and scan one notebook; its result goes into `results`."""
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from tqdm import tqdm

    bar.set_postfix_str(nb.stem)
    params = notebook_parameters(cfg, nb)
    failed_deps = [d for d in DEPENDENCIES.get(nb.stem, []) if d in results and results[d].status != "ok"]
    if failed_deps:
        results[nb.stem] = NotebookResult(nb.stem, "skipped", error=f"depends on {', '.join(failed_deps)}, which failed",
                                          parameters=params)
        return
    key = _cache_key(nb, params, fingerprint)
    target_nb, target_html = run_dir / nb.name, run_dir / f"{nb.stem}.html"
    cached_nb, cached_html = cache_dir / f"{nb.stem}-{key}.ipynb", cache_dir / f"{nb.stem}-{key}.html"
    t0 = time.perf_counter()
    res = NotebookResult(nb.stem, "ok", parameters=params)
    if cached_nb.exists() and cached_html.exists():
        shutil.copyfile(cached_nb, target_nb)
        shutil.copyfile(cached_html, target_html)
        res.reused = True
    else:
        try:
            papermill.execute_notebook(str(nb), str(target_nb), parameters=params, kernel_name=kernel_name, language="python",
                                       progress_bar=progress, cwd=str(project_root()), report_mode=False)
        except PapermillExecutionError as err:
            res.status, res.cell = "failed", err.exec_count
            res.error = f"{err.ename}: {str(err.evalue)[:300]}"
        except Exception as err:  # a kernel that died, a notebook that is not JSON
            res.status, res.error = "failed", f"{type(err).__name__}: {str(err)[:300]}"
        if target_nb.exists():
            render_html(target_nb, target_html)
        if res.status == "ok" and not scan_needed:
            shutil.copyfile(target_nb, cached_nb)
            shutil.copyfile(target_html, cached_html)
    res.seconds = time.perf_counter() - t0
    if scan_needed:
        for page in (target_html, target_nb):
            if page.exists():
                leaks = index.scan(page.read_text(encoding="utf-8", errors="replace"))
                if leaks:
                    page.unlink()  # a leaking page is never left on disk
                    res.status = "leak"
                    res.error = (res.error + "; " if res.error else "") + f"share-safe scan: {page.name} held " + ", ".join(leaks)
        if res.status == "ok":
            shutil.copyfile(target_nb, cached_nb)
            shutil.copyfile(target_html, cached_html)
    res.html = target_html.name if target_html.exists() else None
    res.ipynb = target_nb.name if target_nb.exists() else None
    results[nb.stem] = res
    if progress and res.status != "ok":
        tqdm.write(f"{nb.stem}: {res.status}: {res.error}")


def index_html(record: dict) -> str:
    """The one page linking every rendered notebook, with data source, parameters and versions."""
    e = html.escape
    rows = []
    for nb in record["notebooks"]:
        colour = {"ok": "#1a7f37", "failed": "#cf222e", "leak": "#cf222e", "skipped": "#9a6700"}[nb["status"]]
        link = f'<a href="{e(record["run_id"])}/{e(nb["html"])}">{e(nb["name"])}</a>' if nb["html"] else e(nb["name"])
        detail = e(nb["error"] or "") + (f" (cell {nb['cell']})" if nb.get("cell") else "")
        rows.append(f'<tr><td>{link}</td><td style="color:{colour};font-weight:bold">{e(nb["status"])}'
                    f'{" (reused)" if nb["reused"] else ""}</td><td>{nb["seconds"]:.1f} s</td><td>{detail}</td></tr>')
    d = record["data"]
    source = "synthetic cohort" if d["synthetic"] else "MedAlign release (real data)"
    warning = ""
    if not d["synthetic"] and not record["share_safe"]:
        warning = ('<p style="color:#cf222e;font-weight:bold;border:2px solid #cf222e;padding:8px">share_safe is false: '
                   "these reports may contain patient text from the MedAlign release. Do not share them.</p>")
    elif record["scanned"]:
        warning = ('<p style="color:#1a7f37">Share-safe: every page was scanned for record text, instructions, '
                   "responses and person_ids of the input; none was found in the pages listed as ok.</p>")
    env = record["environment"]
    params = yaml.safe_dump(record["config"], sort_keys=True)
    versions = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in env["packages"].items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>MedAlign suite report {e(record['run_id'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}
pre{{background:#f6f8fa;padding:8px;overflow:auto}}</style></head><body>
<h1>MedAlign suite report</h1>
<p>Run <code>{e(record['run_id'])}</code>, finished {e(record['finished'])}, git commit <code>{e(env['git_commit'])}</code>.</p>
<p>Data: <b>{e(source)}</b> at <code>{e(d['dir'])}</code>, fingerprint <code>{e(d['fingerprint'])}</code>,
{d['patients']} patients, {d['instructions']} instructions.</p>
{warning}
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>duration</th><th>details</th></tr>
{''.join(rows)}
</table>
<h2>Parameters</h2><p>From <code>{e(record['config_file'])}</code>.</p><pre>{e(params)}</pre>
<h2>Environment</h2><p>Python {e(env['python'])} on {e(env['platform'])}.</p>
<table><tr><th>package</th><th>version</th></tr>{versions}</table>
</body></html>
"""
