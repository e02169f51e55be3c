"""The papermill runner: the whole suite on a tiny cohort, the share-safe scan, the rendered pages."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml
from helpers import REPO, write_notebook

from medalign_utils import cli, paper
from medalign_utils.assets import model_cache_dir
from medalign_utils.config import SuiteConfig
from medalign_utils.data import load_release
from medalign_utils.reports import index_html, run_suite
from medalign_utils.reports.findings import FINDING_MIME
from medalign_utils.reports.scan import SensitiveIndex


def suite_overrides(tmp: Path, data: Path, model: Path | None = None) -> dict:
    """The default config with a small, fast run on `data`, its intermediate files under `tmp`;
    `model` (a local model folder) answers in 03 and judges in 06 instead of SmolLM2."""
    overrides = {
        "data_dir": str(data),
        "synthetic": {"generate_if_missing": False},
        "context_lengths": [2048, 8192, 32768],
        "n_resamples": 200,
        "prompts_path": str(tmp / "data" / "prompts.parquet"),
        "generations_path": str(tmp / "data" / "generations.jsonl"),
        "notebooks": {
            "02_context_truncation": {"export_contexts": [2048], "export_strategies": ["recent"]},
            "03_model_generation": {
                "max_items": 2,
                "max_new_tokens": 8,
                "generation_contexts": [2048],
                "generation_strategies": ["recent"],
            },
            "05_metric_correlation": {"metrics": ["rougeL", "chrf++", "bertscore", "comet"]},
            "06_llm_judge": {
                "judgments_dir": str(tmp / "data" / "judgments"),
                "judge_instructions": 1,
                "judge_cache_dir": str(tmp / "data" / "judge-cache"),
                "label_plans_dir": str(tmp / "data" / "label-plans"),
            },
        },
    }
    if model is not None:
        overrides["notebooks"]["03_model_generation"]["model"] = str(model)
        overrides["notebooks"]["06_llm_judge"]["judge_spec"] = str(model)
    return overrides


def custom_notebooks_config(data: Path) -> SuiteConfig:
    """For runs of test notebooks: the schema's defaults, no notebook sections."""
    return SuiteConfig(data_dir=str(data), n_resamples=200)


@pytest.fixture(scope="module")
def suite_run(tiny_cohort, tiny_lm, tmp_path_factory):
    # A tiny random model runs 03's and 06's cells (multi-step refinement, every judge mode) in
    # seconds; SmolLM2 answers and judges through the notebooks in test_end_to_end's run.
    out = tmp_path_factory.mktemp("reports")
    ok = run_suite(overrides=suite_overrides(out, tiny_cohort, model=tiny_lm), out=out, progress=False)
    return ok, out


@pytest.mark.slow(seconds=110)
def test_whole_suite_runs_on_a_tiny_cohort(suite_run):
    ok, out = suite_run
    record = json.loads((out / "run.json").read_text())
    statuses = {n["name"]: (n["status"], n["error"]) for n in record["notebooks"]}
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9]*.ipynb"))
    assert sorted(statuses) == notebooks
    assert ok, statuses
    run_dir = out / record["run_id"]
    for name in notebooks:
        assert (run_dir / f"{name}.html").exists() and (run_dir / f"{name}.ipynb").exists()
    assert record["data"]["synthetic"] is True and len(record["data"]["fingerprint"]) == 16
    assert record["environment"]["packages"]["pandas"]
    index = (out / "index.html").read_text()
    for name in notebooks:
        assert f"{record['run_id']}/{name}.html" in index


def test_rerun_with_same_inputs_reuses_results(suite_run, tiny_cohort, tmp_path):
    ok, first = suite_run
    out = tmp_path / "again"
    shutil.copytree(first, out)  # the same cache; the first run's index stays for the tests below
    assert run_suite(overrides=suite_overrides(first, tiny_cohort), out=out, progress=False, only=["01"])
    record = json.loads((out / "run.json").read_text())
    assert [n["reused"] for n in record["notebooks"]] == [True]
    # The partial run has its own index; the top one still shows the full run, and lists both.
    full = json.loads((first / "run.json").read_text())["run_id"]
    top = (out / "index.html").read_text()
    assert f"Run <code>{full}</code>" in top and 'id="runs"' in top
    assert f'href="{record["run_id"]}/index.html"' in top and f'href="{full}/index.html"' in top
    own = (out / record["run_id"] / "index.html").read_text()
    assert f"Run <code>{record['run_id']}</code>" in own and "notebooks 01 only" in own
    assert 'href="01_ehr_exploration.html"' in own  # links from inside the run folder


def test_failing_notebook_is_shown_and_stops_only_its_dependents(tmp_path, tiny_cohort):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    files = "data_dir = 'x'\nprompts_path = 'p'"
    write_notebook(
        nbs / "02_context_truncation.ipynb",
        "raise RuntimeError('planted failure')",
        parameters=files,
        writes=["prompts_path"],
    )
    write_notebook(
        nbs / "03_model_generation.ipynb", "print('should not run')", parameters=files, reads=["prompts_path"]
    )
    write_notebook(nbs / "04_ok.ipynb", "print('fine')")
    out = tmp_path / "reports"
    ok = run_suite(config=custom_notebooks_config(tiny_cohort), out=out, progress=False, notebooks_dir=nbs)
    assert not ok
    record = json.loads((out / "run.json").read_text())
    st = {n["name"]: n for n in record["notebooks"]}
    assert (
        st["02_context_truncation"]["status"] == "failed" and "planted failure" in st["02_context_truncation"]["error"]
    )
    assert st["02_context_truncation"]["cell"] == 3  # papermill's injected-parameters cell counts too
    assert st["03_model_generation"]["status"] == "skipped"
    assert st["04_ok"]["status"] == "ok"
    assert "planted failure" in (out / "index.html").read_text()


def test_what_03_writes_reruns_05_and_06_and_a_failed_03_skips_them(tmp_path, tiny_cohort):
    nbs, generations = tmp_path / "nbs", tmp_path / "generations.jsonl"
    nbs.mkdir()
    files = "data_dir = 'x'\ngenerations_path = 'g'"
    write_notebook(
        nbs / "03_model_generation.ipynb",
        "open(generations_path, 'w').write('a')",
        parameters=files,
        writes=["generations_path"],
    )
    for name in ("05_metric_correlation", "06_llm_judge"):
        write_notebook(
            nbs / f"{name}.ipynb", "print(open(generations_path).read())", parameters=files, reads=["generations_path"]
        )
    cfg = SuiteConfig(data_dir=str(tiny_cohort), generations_path=str(generations))
    out = tmp_path / "reports"

    def reused(only=None):
        assert run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs, only=only)
        return {n["name"]: n["reused"] for n in json.loads((out / "run.json").read_text())["notebooks"]}

    assert not any(reused().values())
    assert reused(["05", "06"]) == {"05_metric_correlation": True, "06_llm_judge": True}
    generations.write_text("answers removed")  # what 03 wrote changed: nothing of 05/06 may be reused
    assert reused(["05", "06"]) == {"05_metric_correlation": False, "06_llm_judge": False}
    write_notebook(
        nbs / "03_model_generation.ipynb",
        "raise RuntimeError('no answers')",
        parameters=files,
        writes=["generations_path"],
    )
    assert not run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs)
    statuses = {n["name"]: n["status"] for n in json.loads((out / "run.json").read_text())["notebooks"]}
    assert statuses == {"03_model_generation": "failed", "05_metric_correlation": "skipped", "06_llm_judge": "skipped"}


def test_findings_and_tables_come_back_from_the_executed_notebook_also_when_reused(tmp_path, tiny_cohort):
    import pandas as pd

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    table = pd.DataFrame({"system": ["a", "b"], "value": [1 / 3, 2.0]})
    write_notebook(
        nbs / "01_found.ipynb",
        "import pandas as pd\n"
        "from medalign_utils.reports import record_finding, record_table\n"
        "for i in range(2):  # recorded mid-cell, in a loop\n"
        "    record_finding(f'share {i}', 0.5 + i, ci=(0.25, 0.75), unit='%', compare='paper: 1')\n"
        f"record_table('summary', pd.DataFrame({table.to_dict(orient='list')!r}))",
    )
    out = tmp_path / "reports"
    for reused in (False, True):
        assert run_suite(config=custom_notebooks_config(tiny_cohort), out=out, progress=False, notebooks_dir=nbs)
        record = json.loads((out / "run.json").read_text())
        run_dir = out / record["run_id"]
        assert record["notebooks"][0]["reused"] is reused
        executed = nbformat.read(run_dir / "01_found.ipynb", as_version=4)
        # The notebook's own last cell: the runner's ledger cell follows it.
        assert "medalign-ledger" in executed.cells[-1].metadata.get("tags", [])
        cell = executed.cells[-2]
        assert [f["name"] for f in record["findings"]] == ["share 0", "share 1"]
        first = record["findings"][0]
        assert (first["value"], first["ci_low"], first["ci_high"], first["unit"]) == (0.5, 0.25, 0.75, "%")
        assert first["notebook"] == "01_found" and first["cell"] == cell.execution_count == 3
        assert first["link"] == f"{record['run_id']}/01_found.html#cell-id={cell.id}"
        assert (run_dir / "tables" / "summary.csv").read_text() == table.to_csv(index=False, float_format="%.6g")
        assert record["tables"] == ["summary.csv"]
        page = html.unescape((run_dir / "01_found.html").read_text())
        assert "finding: share 1 = 1.5 % (95% CI 0.2–0.8) (paper: 1)" in page  # percentages: one decimal
        assert "table summary: 2 rows x 2 columns" in page


def test_the_suites_notebooks_declare_what_they_read_and_write_and_the_plan_follows():
    from medalign_utils.reports import plan_notebooks
    from medalign_utils.reports.notebooks import RELEASE_SETTINGS, dependencies

    plan = plan_notebooks(sorted((REPO / "notebooks").glob("[0-9]*.ipynb")))
    by_name = {s.name: s for s in plan}
    assert [s.name for s in plan] == sorted(by_name)  # the numbers in the names agree with the declarations
    assert by_name["02_context_truncation"].writes == ("prompts_path",)
    assert dependencies(by_name["03_model_generation"], plan) == ["02_context_truncation"]
    for name in ("05_metric_correlation", "06_llm_judge"):
        assert dependencies(by_name[name], plan) == ["03_model_generation"]
    assert dependencies(by_name["04_error_analysis"], plan) == []
    for spec in plan:  # the config's release settings reach every notebook as parameters
        assert set(RELEASE_SETTINGS) <= spec.parameters, spec.name


def test_run_plan_prints_the_order_and_each_notebooks_files_and_runs_nothing(tmp_path, capsys):
    assert cli.main(["run", "--plan", "--out", str(tmp_path / "reports")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["notebook", "reads", "writes", "after"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == sorted(p.stem for p in (REPO / "notebooks").glob("[0-9]*.ipynb"))
    assert "prompts_path" in rows["03_model_generation"] and rows["03_model_generation"].count("_path") == 2
    assert rows["06_llm_judge"].split()[1:5] == [
        "generations_path",
        "judgments_dir,",
        "label_plans_dir",
        "03_model_generation",
    ]
    assert not (tmp_path / "reports").exists()


def test_the_order_comes_from_the_declarations_not_the_names(tmp_path, tiny_cohort):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    files = "data_dir = 'x'\nprompts_path = 'p'"
    # "01" reads what "02" writes: 02 runs first, and a failed 02 skips 01.
    write_notebook(
        nbs / "01_reader.ipynb", "print(open(prompts_path).read())", parameters=files, reads=["prompts_path"]
    )
    write_notebook(
        nbs / "02_writer.ipynb", "open(prompts_path, 'w').write('hello')", parameters=files, writes=["prompts_path"]
    )
    cfg = SuiteConfig(data_dir=str(tiny_cohort), prompts_path=str(tmp_path / "prompts.txt"))
    out = tmp_path / "reports"
    assert run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs)
    record = json.loads((out / "run.json").read_text())
    assert [n["name"] for n in record["notebooks"]] == ["02_writer", "01_reader"]
    write_notebook(
        nbs / "02_writer.ipynb", "raise RuntimeError('no prompts')", parameters=files, writes=["prompts_path"]
    )
    assert not run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs)
    statuses = {n["name"]: n["status"] for n in json.loads((out / "run.json").read_text())["notebooks"]}
    assert statuses == {"02_writer": "failed", "01_reader": "skipped"}


def test_only_a_reader_of_a_missing_file_runs_its_writer_first(tmp_path, tiny_cohort, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    files = "data_dir = 'x'\nprompts_path = 'p'"
    write_notebook(
        nbs / "02_writer.ipynb", "open(prompts_path, 'w').write('hi')", parameters=files, writes=["prompts_path"]
    )
    write_notebook(
        nbs / "03_reader.ipynb", "print(open(prompts_path).read())", parameters=files, reads=["prompts_path"]
    )
    cfg = SuiteConfig(data_dir=str(tiny_cohort), prompts_path=str(tmp_path / "prompts.txt"))
    out = tmp_path / "reports"
    assert run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs, only=["03"])
    assert [n["name"] for n in json.loads((out / "run.json").read_text())["notebooks"]] == ["02_writer", "03_reader"]
    assert "also running 02_writer: 03_reader reads prompts_path, which does not exist yet" in capsys.readouterr().err
    # Once the file exists, --only means only.
    assert run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs, only=["03"])
    assert [n["name"] for n in json.loads((out / "run.json").read_text())["notebooks"]] == ["03_reader"]


def test_declarations_that_cannot_be_planned_are_refused_with_the_notebook_named(tmp_path):
    from medalign_utils.reports import plan_notebooks

    write_notebook(tmp_path / "01_a.ipynb", "", parameters="x = 1\ny = 2", reads=["x"], writes=["y"])
    write_notebook(tmp_path / "02_b.ipynb", "", parameters="x = 1\ny = 2", reads=["y"], writes=["x"])
    with pytest.raises(ValueError, match="01_a, 02_b read each other's files in a cycle"):
        plan_notebooks(sorted(tmp_path.glob("*.ipynb")))
    write_notebook(tmp_path / "02_b.ipynb", "", parameters="x = 1", reads=["answers_path"])
    with pytest.raises(ValueError, match=r"02_b.ipynb: metadata.medalign names answers_path, which its parameters"):
        plan_notebooks(sorted(tmp_path.glob("*.ipynb")))


def test_a_release_setting_a_notebook_does_not_declare_fails_that_notebook(tmp_path, tiny_cohort):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "01_old.ipynb", "print('a notebook from before the setting')")
    out = tmp_path / "reports"
    cfg = SuiteConfig(data_dir=str(tiny_cohort), min_cell_patients=20)
    assert not run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs)
    (result,) = json.loads((out / "run.json").read_text())["notebooks"]
    assert result["status"] == "failed" and "does not declare min_cell_patients" in result["error"]
    # At its default the setting changes nothing, so a notebook that omits it runs.
    assert run_suite(config=custom_notebooks_config(tiny_cohort), out=out, progress=False, notebooks_dir=nbs)


def test_share_safe_scan_fails_the_run_on_a_leak(tmp_path, tiny_cohort):
    real = tmp_path / "release"
    shutil.copytree(tiny_cohort, real)
    (real / "SYNTHETIC").unlink()  # now it counts as the real release
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(
        nbs / "01_leaky.ipynb",
        "from medalign_utils.data import load_release\n"
        "ev = load_release(data_dir).events(progress=False)\n"
        "print(ev[ev.event_type == 'note'].text.iloc[3])",
    )
    write_notebook(
        nbs / "02_aggregate.ipynb",
        "from medalign_utils.data import load_release\nprint(len(load_release(data_dir).events(progress=False)))",
    )
    out = tmp_path / "reports"
    ok = run_suite(config=custom_notebooks_config(real), out=out, progress=False, notebooks_dir=nbs)
    assert not ok
    record = json.loads((out / "run.json").read_text())
    st = {n["name"]: n for n in record["notebooks"]}
    assert st["01_leaky"]["status"] == "leak" and "01_leaky.html" in st["01_leaky"]["error"]
    assert st["02_aggregate"]["status"] == "ok"
    run_dir = out / record["run_id"]
    assert not (run_dir / "01_leaky.html").exists() and not (run_dir / "01_leaky.ipynb").exists()
    assert (run_dir / "02_aggregate.html").exists()


def test_sensitive_index_catches_ids_and_passages_not_aggregates(tiny_cohort):
    release = load_release(tiny_cohort)
    index = SensitiveIndex.from_release(release)
    note = release.events(progress=False).query("event_type == 'note'").text.iloc[0]
    assert index.scan(f"<p>{note[10:400]}</p>")
    pid = next(iter(release.ehr_files))
    assert any("person_ids" in k for k in index.scan(f"<td>{pid}</td>"))
    assert index.scan("<p>mean correct 61.2%, 303 instructions, 24 patients</p>") == []


def test_index_marks_unsafe_real_reports_in_red():
    record = {
        "run_id": "r",
        "finished": "now",
        "share_safe": False,
        "scanned": False,
        "config": {},
        "config_file": "c",
        "data": {"dir": "d", "synthetic": False, "fingerprint": "f", "patients": 1, "instructions": 1},
        "environment": {"git_commit": "x", "python": "3", "platform": "p", "packages": {}},
        "notebooks": [],
    }
    assert "share_safe is false" in index_html(record) and "#cf222e" in index_html(record)


def test_rendered_pages_in_headless_chromium(suite_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium; apt-get install chromium)")
    ok, out = suite_run
    record = json.loads((out / "run.json").read_text())
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    # The index: every notebook link is in the rendered DOM.
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", (out / "index.html").as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    for nb in record["notebooks"]:
        assert f'href="{record["run_id"]}/{nb["html"]}"' in dom
    # The exploration page: its plots are there as images, and a screenshot is taken.
    page = out / record["run_id"] / "01_ehr_exploration.html"
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count('src="data:image/png;base64') >= 5
    shot = tmp_path / "page.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1200,3000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 50_000
    # Code collapsed by default, shown from the link that asks for it; the findings open the index.
    assert 'class="medalign-hide-code"' in dom or "medalign-hide-code" in dom.split("<body", 1)[1].split(">", 1)[0]
    shown = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri() + "#show-code"], capture_output=True, text=True, timeout=120
    ).stdout
    assert "medalign-hide-code" not in shown.split("<body", 1)[1].split(">", 1)[0] and ">Hide code<" in shown
    index_dom = subprocess.run(
        [chromium, *flags, "--dump-dom", (out / "index.html").as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert index_dom.index('id="findings"') < index_dom.index("<h2>Notebooks</h2>")
    for name in ("index", "page-expanded"):
        shot = tmp_path / f"{name}.png"
        url = (out / "index.html").as_uri() if name == "index" else page.as_uri() + "#show-code"
        subprocess.run([chromium, *flags, "--window-size=1200,1600", f"--screenshot={shot}", url], capture_output=True,
                       timeout=120)  # fmt: skip
        assert shot.exists() and shot.stat().st_size > 20_000
    _check_table3_page_and_pdfs(chromium, flags, out, record, tmp_path)


def _check_table3_page_and_pdfs(chromium, flags, out, record, tmp_path):
    """At a laptop's 1366x900 the index and the Table 3 page open on the banner, hold no index column
    and no NaN; printed, the Table 3 page keeps its win rate and mean rank columns, and no button."""
    from pypdf import PdfReader

    from medalign_utils.reports import SYNTHETIC_BANNER
    from medalign_utils.reports.pages import page_pdf

    run_dir = out / record["run_id"]
    table3 = run_dir / "04_error_analysis.html"
    for page in (out / "index.html", table3):
        dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                             timeout=120).stdout  # fmt: skip
        text = " ".join(_visible_text(dom).split())
        assert SYNTHETIC_BANNER in text and not re.search(r"\bNaN\b", text), page.name
        assert 'class="row_heading' not in dom and 'class="blank level0' not in dom, page.name
        shot = tmp_path / f"{page.stem}-1366.png"
        subprocess.run([chromium, *flags, "--window-size=1366,900", f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, timeout=120)  # fmt: skip
        assert shot.exists() and shot.stat().st_size > 20_000, page.name
    for page in (table3, run_dir / "index.html"):
        pdf = tmp_path / f"{page.stem}.pdf"
        assert page_pdf(page, pdf, chromium), page.name
        printed = " ".join(" ".join(p.extract_text() or "" for p in PdfReader(pdf).pages).split())
        assert "Synthetic cohort" in printed and "Show code" not in printed, page.name
        if page == table3:
            for column in ("correct % (95% CI)", "win rate (95% CI)", "mean rank (95% CI)", "mean rank: paper"):
                assert column in printed, column
            sizes = _pdf_text_sizes(pdf)
            table, body = sizes["GPT-4 (32k)"], sizes["Conventions (as in the paper)"]
            assert table >= 8.5 and table >= 0.85 * body, (table, body)  # tables print at the text's size
            if keep := os.environ.get("MEDALIGN_SCREENSHOT_DIR"):
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(pdf, Path(keep) / pdf.name)


def _pdf_text_sizes(pdf) -> dict[str, float]:
    """The printed size (points) of each text run of a PDF, by the run's start: the font size times
    the text and page matrices' scale, as a reader's viewer draws it."""
    from pypdf import PdfReader

    sizes: dict[str, float] = {}

    def visit(text, cm, tm, font, size):
        if text.strip():
            scale = (tm[0] ** 2 + tm[1] ** 2) ** 0.5 * (cm[0] ** 2 + cm[1] ** 2) ** 0.5
            for key in ("GPT-4 (32k)", "Conventions (as in the paper)"):
                if text.strip().startswith(key):
                    sizes.setdefault(key, round(size * scale, 1))

    for page in PdfReader(pdf).pages:
        page.extract_text(visitor_text=visit)
    return sizes


def test_index_opens_with_findings_linked_to_their_cells(suite_run):
    ok, out = suite_run
    record = json.loads((out / "run.json").read_text())
    findings = record["findings"]
    assert len(findings) >= 8
    names = " ".join(f["name"] for f in findings)
    for expected in ("Table 3 win rate", "32k to 2k", "best metric", "evidence kept by `recent` at 2048",
                     "fit entirely in 32k", "Planted test judge agreement", "ROUGE-L 0.7"):  # fmt: skip
        assert expected in names, expected
    index = (out / "index.html").read_text()
    for f in findings:
        assert isinstance(f["value"], (int, float)) and f["link"].startswith(record["run_id"] + "/")
        assert "#cell-id=" in f["link"] and f'href="{f["link"]}"' in index
        page, anchor = f["link"].split("#", 1)
        assert f'id="{anchor}"' in (out / page).read_text()
        # The link leads to the very cell that recorded the finding (not the one after it).
        executed = nbformat.read(out / page.replace(".html", ".ipynb"), as_version=4)
        (cell,) = [c for c in executed.cells if c.get("id") == anchor.removeprefix("cell-id=")]
        recorded = [o["data"][FINDING_MIME]["name"] for o in cell.outputs if FINDING_MIME in o.get("data", {})]
        assert f["name"] in recorded and cell.execution_count == f["cell"]
    assert sum(f["ci_low"] is not None for f in findings) >= 6


def test_pages_hold_no_stderr_and_no_machine_paths(suite_run):
    ok, out = suite_run
    record = json.loads((out / "run.json").read_text())
    run_dir = out / record["run_id"]
    for path in [out / "index.html", out / "run.json", *run_dir.glob("*.html"), *run_dir.glob("*.ipynb")]:
        text = path.read_text()
        assert str(REPO) not in text and str(Path.home()) + "/" not in text, path.name
        assert str(out) not in text, path.name
        # nor the model cache's (03 and 06 print the model they ran: by name and weights hash)
        assert str(model_cache_dir()) not in text and "/cache/medalign/models" not in text, path.name
        if path.suffix == ".html" and path.name != "index.html":
            assert 'data-mime-type="application/vnd.jupyter.stderr"' not in text, path.name  # no stderr output
            assert "medalign-code-toggle" in text and f'href="{path.stem}.ipynb"' in text
    long_page = (run_dir / "04_error_analysis.html").read_text()
    assert 'id="medalign-toc"' in long_page


def _visible_text(page: str) -> str:
    """What a reader sees: the body without scripts, styles, images' data and tags."""
    body = page.split("<body", 1)[-1]
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S)
    body = re.sub(r'src="data:[^"]*"', "", body)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_synthetic_pages_say_so_and_read_cleanly(suite_run):
    """Item by item of what a collaborator reads: the banner on the index and every page, no planted
    finding passed off as an LLM's, no index column, no NaN, no Python reprs, Table 3 and 4 as CSV."""
    from medalign_utils.reports import SYNTHETIC_BANNER

    ok, out = suite_run
    record = json.loads((out / "run.json").read_text())
    run_dir = out / record["run_id"]
    for page in [out / "index.html", run_dir / "index.html", *run_dir.glob("0*.html")]:
        raw = page.read_text()
        text = _visible_text(raw)
        assert SYNTHETIC_BANNER in " ".join(text.split()), page.name
        assert not re.search(r"\bNaN\b", text), (page.name, text[text.find("NaN") - 200 : text.find("NaN") + 50])
        assert "Finding(" not in text and "{'" not in text, page.name
        assert 'class="row_heading' not in raw and 'class="blank level0' not in raw, page.name  # no index column
    for f in record["findings"]:
        if "planted" in f["name"].lower():
            assert "LLM" not in f["name"] and f["planted"], f["name"]
    top = (out / "index.html").read_text()
    assert "planted by construction" in top
    assert record["headline"] and (run_dir / record["headline"]).stat().st_size > 5_000
    assert f'src="{record["run_id"]}/{record["headline"]}"' in top
    assert top.index('id="headline"') < top.index('id="findings"')
    assert {"table3.csv", "table4.csv"} <= set(record["tables"])
    t3 = (run_dir / "tables" / "table3.csv").read_text().splitlines()[0]
    assert {"win_rate", "mean_rank", "correct_pct", "paper_win_rate"} <= set(t3.split(","))
    page3 = _visible_text((run_dir / "04_error_analysis.html").read_text())
    assert "win rate (95% CI)" in page3 and "mean rank (95% CI)" in page3 and "resamples instructions" in page3
    assert "this run's index" in (run_dir / "04_error_analysis.html").read_text()


def test_progress_relay_reports_a_long_cells_bars_now_and_then():
    import io

    from medalign_utils.reports.runner import ProgressRelay

    console = io.StringIO()
    relay = ProgressRelay("03_model_generation", message=str.upper, interval=3600, out=console)
    relay.write("generating:  10%|#         | 1/10 [00:05<00:45]\r")
    relay.write("generating:  20%|##        | 2/10 [00:10<00:40]\r")  # within the interval: not shown
    relay.write("a warning without a bar\n")
    lines = console.getvalue().splitlines()
    assert lines == ["  03_model_generation: GENERATING:  10%|#         | 1/10 [00:05<00:45]"]


def test_compare_prints_each_finding_and_its_difference(suite_run, tiny_cohort, tmp_path, capsys):
    ok, out = suite_run
    other = tmp_path / "other"
    overrides = {**suite_overrides(tmp_path, tiny_cohort), "seed": 1}
    run_suite(overrides=overrides, out=other, progress=False, only=["04"])
    capsys.readouterr()
    assert cli.main(["compare", str(out), str(other / "run.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    findings = json.loads((out / "run.json").read_text())["findings"]
    assert "settings differ: seed: A 0 | B 1" in lines  # said before the findings it moves
    body = [line for line in lines[2:] if not line.startswith("settings differ")]
    assert len(body) == len({f["name"] for f in findings})
    # A point estimate the seed does not move reads "the same" (it read "B − A: +0").
    assert any("Table 3 win rate" in line and "(the same)" in line for line in body)
    assert any("| B —" in line for line in body)  # in A only: notebooks B did not run


def test_bundle_is_one_archive_of_the_run(suite_run, tiny_cohort, tmp_path):
    import zipfile

    _, first = suite_run
    out = tmp_path / "reports"
    shutil.copytree(first, out)  # 01's page is reused from the suite run's cache
    assert run_suite(overrides=suite_overrides(first, tiny_cohort), out=out, progress=False, only=["01"], bundle=True)
    record = json.loads((out / "run.json").read_text())
    archive = zipfile.ZipFile(out / f"{record['run_id']}.zip")
    names = archive.namelist()
    run = record["run_id"]
    for name in ("index.html", "run.json", "README.txt", "config.yaml"):
        assert f"{run}/{name}" in names, name
    readme = archive.read(f"{run}/README.txt").decode()
    assert "SYNTHETIC" in readme and run in readme and "How to read it" in readme
    assert yaml.safe_load(archive.read(f"{run}/config.yaml"))["data_dir"] == tiny_cohort.name  # no machine path
    assert (
        f"{record['run_id']}/01_ehr_exploration.html" in names
        and f"{record['run_id']}/01_ehr_exploration.ipynb" in names
    )
    if shutil.which("chromium"):
        assert f"{record['run_id']}/01_ehr_exploration.pdf" in names and f"{run}/index.pdf" in names
    else:
        assert "NO_PDF.txt" in names


def _assigned_names(source: str) -> set[str]:
    import ast

    tree = ast.parse(source)
    return {
        t.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }


def test_every_parameters_cell_parses_for_papermill():
    from medalign_utils.reports import declared_parameters

    for nb in sorted((REPO / "notebooks").glob("[0-9]*.ipynb")):
        cells = [c for c in nbformat.read(str(nb), as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
        assert cells, f"{nb.name} has no cell tagged 'parameters'"
        declared = declared_parameters(nb)
        # papermill silently drops a parameter line it cannot parse (an apostrophe in a comment, say).
        assert _assigned_names(cells[0].source) == declared, nb.name
        assert "data_dir" in declared and "progress" in declared


def test_notebooks_are_committed_without_outputs():
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(str(nb), as_version=4).cells:
            assert not cell.get("outputs") and not cell.get("execution_count"), nb.name


def test_findings_carry_n_and_readings_and_the_index_leads_with_correct_pct(suite_run):
    ok, out = suite_run
    record = json.loads((out / "run.json").read_text())
    for f in record["findings"]:
        assert f.get("n_instructions") is not None or f.get("n_patients") is not None, f["name"]
        assert not re.search(r"\b(?:judge|jury):[^ ]+:", f["name"]), f["name"]  # named for a reader, not a row key
    index = (out / "index.html").read_text()
    rows = re.findall(r"<tr><td>(.*?)</td>", index.split('id="findings"', 1)[1].split("</table>", 1)[0], re.S)
    n_systems = sum(f["name"].startswith("Table 3 correct %") for f in record["findings"])
    assert n_systems >= 6 and all(r.startswith("Table 3 correct %") for r in rows[:n_systems])
    text = " ".join(_visible_text(index).split())
    assert "what it means" in text and "instructions" in text
    loss = next(f for f in record["findings"] if f["name"].startswith("correct % lost"))
    assert loss["reading"].startswith("the interval ") and loss["reading"] in text
    for page in (out / record["run_id"]).glob("0*.html"):
        visible = _visible_text(page.read_text())
        assert not re.search(r"\bnan\b", visible, re.I), page.name
        for raw in ("TiktokenTokenizer(", "HFTokenizer(", "Out["):
            assert raw not in visible, (page.name, raw)


def test_one_name_per_system_in_every_table_a_page_shows(suite_run):
    """The tables and printed lines of the notebooks (not their code) name each of the six as Table 3
    does: GPT-4 (32k), never gpt4_32k."""
    ok, out = suite_run
    record = json.loads((out / "run.json").read_text())
    keys = [k for k in paper.MODEL_LABELS if k in paper.MODELS]
    for name in ("04_error_analysis", "05_metric_correlation", "06_llm_judge"):
        nb = nbformat.read(out / record["run_id"] / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            for o in cell.get("outputs", []):
                shown = o.get("data", {}).get("text/html", "")
                for key in keys:
                    assert not re.search(rf">\s*{key}\s*<", shown), (name, key)


@pytest.mark.slow(seconds=40)
def test_table3_fits_1366_and_print_keeps_the_texts_size(suite_run, tmp_path):
    """Measured in headless Chromium: at 1366x900 no Table 3 cell wraps and the table is not wider
    than the window; printed (A4 landscape), tables are at least 9 pt beside 10 pt text, nothing is
    wider than the page (so nothing is shrunk), figures fit a page and headings keep their section.
    Screenshots of the index, page 04 and a printed page 04 are kept in the test's folder."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium; apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright drives Chromium").sync_playwright
    ok, out = suite_run
    record = json.loads((out / "run.json").read_text())
    page04 = out / record["run_id"] / "04_error_analysis.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(page04.as_uri())
        t3 = page.evaluate(
            """() => { const t = [...document.querySelectorAll('table')].find(
                   t => t.caption && t.caption.textContent.includes('Table 3'));
               const cells = [...t.querySelectorAll('td')];
               const line = parseFloat(getComputedStyle(cells[0]).lineHeight) || 20;
               return {tallest: Math.max(...cells.map(c => c.getBoundingClientRect().height)), line,
                       right: t.getBoundingClientRect().right, width: window.innerWidth}; }"""
        )
        assert t3["tallest"] < 1.9 * t3["line"], t3  # one line a cell
        assert t3["right"] <= t3["width"], t3
        page.screenshot(path=str(tmp_path / "page04-1366.png"))
        page.emulate_media(media="print")
        page.set_viewport_size({"width": 1086, "height": 756})  # A4 landscape less 10 mm margins, at 96 dpi
        printed = page.evaluate(
            """() => { const px = s => parseFloat(getComputedStyle(s).fontSize);
               const tables = [...document.querySelectorAll('.jp-RenderedHTMLCommon table')];
               const text = document.querySelector('.jp-RenderedMarkdown p');
               const h2 = document.querySelector('h2');
               const figures = [...document.querySelectorAll('.jp-RenderedImage img, .jp-RenderedSVG svg')];
               return {table: Math.min(...tables.map(px)), text: px(text),
                       scroll: document.documentElement.scrollWidth, width: window.innerWidth,
                       tallest_figure: Math.max(...figures.map(f => f.getBoundingClientRect().height)),
                       h2: getComputedStyle(h2).breakAfter}; }"""
        )
        assert printed["table"] >= 12 and printed["table"] >= 0.85 * printed["text"], printed  # 9 pt = 12 px
        assert printed["scroll"] <= printed["width"] + 1, printed
        assert printed["tallest_figure"] <= 165 / 25.4 * 96 + 1, printed
        assert printed["h2"] == "avoid", printed
        page.screenshot(path=str(tmp_path / "page04-printed.png"))
        index = browser.new_page(viewport={"width": 1366, "height": 900})
        index.goto((out / "index.html").as_uri())
        index.emulate_media(media="print")
        assert index.evaluate("getComputedStyle(document.querySelector('h2')).breakAfter") == "avoid"
        index.emulate_media(media="screen")
        index.screenshot(path=str(tmp_path / "index-1366.png"), full_page=True)
        browser.close()
    keep = os.environ.get("MEDALIGN_SCREENSHOT_DIR")
    for shot in ("page04-1366.png", "page04-printed.png", "index-1366.png"):
        assert (tmp_path / shot).stat().st_size > 20_000, shot
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / shot, Path(keep) / shot)
