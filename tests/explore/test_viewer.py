"""The instance viewer: its table of instructions and filters against independent counts, what each
strategy kept, the rendered instance, its refusal inside the runner's kernels, and the widget itself
in JupyterLab driven by headless Chromium (screenshots)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medalign_utils.data import open_release
from medalign_utils.explore import (
    REFUSAL,
    InstanceSource,
    ViewerRefused,
    filter_choices,
    filter_instances,
    instance_answers,
    instance_html,
    instance_judgments,
    instance_table,
    strategy_views,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def release(gold_cohort):
    return open_release(gold_cohort)


def _planted_judgments(release, flips: dict[str, int]) -> pd.DataFrame:
    """`correct` verdicts equal to the primary clinician's label, except the first `flips[iid]`
    answers of each named instruction, whose verdict is the opposite."""
    r = release.model_responses
    primary = r[r.annotator_num == "Annotator_1"] if "annotator_num" in r.columns else r
    rows = []
    for iid, part in primary.groupby("instruction_id"):
        for k, row in enumerate(part.sort_values("system").itertuples()):
            label = bool(row.binary_correct)
            verdict = (not label) if k < flips.get(iid, 0) else label
            rows.append(
                {
                    "judge": "planted",
                    "mode": "correct",
                    "instruction_id": iid,
                    "system": row.system,
                    "pair": "",
                    "order": "",
                    "valid": True,
                    "score": float(verdict),
                    "verdict": {"correct": verdict, "rationale": "<b>why</b>"},
                    "distribution": {"correct": {"true": 0.8 if verdict else 0.2, "false": 0.2 if verdict else 0.8}},
                    "expected_score": 0.8 if verdict else 0.2,
                }
            )
    return pd.DataFrame(rows)


def test_instance_table_counts_disagreements_as_planted_and_as_counted_independently(release):
    ids = sorted(release.model_responses.instruction_id.unique())
    flips = {ids[0]: 2, ids[1]: 6}
    table = instance_table(release, judgments=_planted_judgments(release, flips)).set_index("instruction_id")
    n_answers = release.model_responses[release.model_responses.instruction_id == ids[0]].system.nunique()
    assert table.judge_disagreement[ids[0]] == pytest.approx(2 / n_answers)
    assert table.judge_disagreement[ids[1]] == pytest.approx(6 / n_answers)
    assert (table.judge_disagreement.drop(ids[:2]) == 0).all()
    # Clinicians among themselves, counted with plain loops over the release's rows.
    expected = {}
    for iid, part in release.model_responses.groupby("instruction_id"):
        if part.annotator_num.nunique() < 2:
            continue
        per_answer = [len(set(g.binary_correct.dropna())) > 1 for _, g in part.groupby("system")]
        expected[iid] = sum(per_answer) / len(per_answer)
    assert len(expected) >= 10, "the gold cohort has multi-rated instructions"
    got = table.clinician_disagreement.dropna()
    assert set(got.index) == set(expected)
    for iid, share in expected.items():
        assert got[iid] == pytest.approx(share)
    assert table.n_reviewers[list(expected)].min() >= 2


def test_filters_narrow_by_each_setting_and_offer_lengths_in_order(release):
    ids = sorted(release.model_responses.instruction_id.unique())
    table = instance_table(release, judgments=_planted_judgments(release, {ids[3]: 1}))
    table["ehr_length"] = np.where(np.arange(len(table)) % 2, ">128k", "≤32k")  # planted bands
    choices = filter_choices(table)
    assert choices["ehr_length"] == ["any", "≤32k", ">128k"]
    assert choices["disagreement"][0] == "any" and choices["system"][1:7] == sorted(choices["system"][1:7])
    assert list(filter_instances(table, disagreement="judge vs clinicians").instruction_id) == [ids[3]]
    among = filter_instances(table, disagreement="clinicians among themselves")
    assert len(among) and (among.clinician_disagreement > 0).all()
    both = filter_instances(table, disagreement="both")
    assert set(both.instruction_id) <= {ids[3]} & set(among.instruction_id)
    category = table.category.iloc[0]
    assert (filter_instances(table, category=category).category == category).all()
    assert len(filter_instances(table, ehr_length=">128k")) == len(table) // 2
    assert len(filter_instances(table, system="no-such-system")) == 0
    with pytest.raises(ValueError, match="disagreement"):
        filter_instances(table, disagreement="sometimes")


def test_strategy_views_show_what_each_strategy_kept_and_where_the_evidence_is(release):
    from medalign_utils.context import load_tokenizer

    tok = load_tokenizer("cl100k")
    lengths = {pid: len(release.ehr_text(pid)) for pid in release.ehr_files}
    with_evidence = release.model_responses[release.model_responses.evidence.fillna("").str.len() > 0]
    iid = with_evidence.assign(n=with_evidence.person_id.map(lengths)).sort_values("n").instruction_id.iloc[-1]
    views = {
        v.strategy: v
        for v in strategy_views(release, iid, tokenizer=tok, context=2048, strategies=("recent", "oldest"))
    }
    recent, oldest = views["recent"], views["oldest"]
    text = recent.base_text
    assert recent.record_tokens > 2048, "a record longer than the context: something is cut"
    assert recent.spans[-1][1] == len(text) and oldest.spans[0][0] == 0  # the paper's cut keeps the end
    assert recent.cuts == [recent.spans[0][0]] and oldest.cuts == [oldest.spans[-1][1]]
    assert 0 < recent.kept_tokens <= 2048 - 256
    for view in (recent, oldest):
        found = [p for p in view.positions if p]
        if view.evidence_retained is not None:
            kept = sum(any(view.kept(q) for q in p) for p in found)
            assert view.evidence_retained == pytest.approx(kept / len(found))
    html = instance_html(
        instance_table(release).set_index("instruction_id").loc[iid].to_dict() | {"instruction_id": iid},
        views=list(views.values()),
        answers=instance_answers(release, iid),
        metrics=None,
        judgments=instance_judgments(_planted_judgments(release, {iid: 1}), iid),
    )
    assert "✂ cut ✂" in html and "kept 1" not in html.split("recent at 2,048 tokens")[0]
    assert "&lt;b&gt;why&lt;/b&gt;" in html and "<b>why</b>" not in html  # record and judge text escaped
    assert f'data-instruction="{iid}"' in html


def test_answers_carry_every_reviewer_rank_and_label_and_generated_systems(release):
    r = release.model_responses
    iid = r[r.annotator_num == "Annotator_2"].instruction_id.iloc[0]
    generations = pd.DataFrame(
        {"instruction_id": [iid], "system": ["my-model"], "answer": ["<answer>"], "error": [None]}
    )
    answers = instance_answers(release, iid, generations=generations).set_index("system")
    part = r[r.instruction_id == iid]
    for row in part.itertuples():
        assert answers.loc[row.system, f"rank:{row.annotator_num}"] == row.model_rank
        assert answers.loc[row.system, f"correct:{row.annotator_num}"] == row.binary_correct
    assert answers.loc["my-model", "source"] == "generated" and answers.loc["my-model", "answer"] == "<answer>"
    primary = answers["rank:Annotator_1"].dropna()
    assert list(primary) == sorted(primary)  # ordered by the primary reviewer's rank


def test_source_reads_the_suites_outputs_and_counts_what_it_leaves_out(gold_cohort, tmp_path):
    release = open_release(gold_cohort)
    judgments_dir = tmp_path / "judgments"
    judgments_dir.mkdir()
    planted = _planted_judgments(release, {})
    with open(judgments_dir / "planted-correct.jsonl", "w") as fh:
        for rec in planted.to_dict("records"):
            fh.write(json.dumps({**rec, "prompt_hash": "x", "error": None}) + "\n")
        fh.write("not json\n")
    source = InstanceSource.open(gold_cohort, judgments_dir=judgments_dir, generations_path=tmp_path / "none.jsonl")
    assert len(source.judgments) == len(planted) and len(source.skipped) == 1 and "line" in source.skipped[0]
    assert set(source.table.ehr_length) <= {"≤32k", "32k–64k", "64k–128k", ">128k"}
    iid = source.table.instruction_id.iloc[0]
    html = source.html(iid, context=4096, strategies=("recent",))
    assert "recent at 4,096 tokens" in html and "rougeL" in html and "planted" in html


def test_viewer_refuses_in_a_kernel_the_runner_starts(tmp_path, gold_cohort):
    """The runner's kernels carry its marker: a notebook that calls the viewer there fails in one
    line and shows no patient text; the same call in a plain process builds the widget."""
    import nbformat
    import papermill

    from medalign_utils.reports.runner import _kernel_environment

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"from medalign_utils.explore import viewer\nviewer({str(gold_cohort)!r}, judgments_dir=None)"
        )
    ]
    src, out = tmp_path / "calls_viewer.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    with _kernel_environment(False), pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(src), str(out), progress_bar=False, kernel_name="python3", cwd=str(REPO))
    assert err.value.ename == "ViewerRefused" and err.value.evalue == REFUSAL and "\n" not in REFUSAL
    executed = nbformat.read(out, as_version=4)
    shown = json.dumps([o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") != "error"])
    assert "medalign-viewer" not in shown
    assert issubclass(ViewerRefused, RuntimeError)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow(seconds=60)
def test_viewer_in_jupyterlab_under_headless_chromium(gold_cohort, tmp_path):
    """JupyterLab on loopback, the explore notebook run in it, driven by headless Chromium: the
    viewer renders an instance, and a changed filter changes the count and the instance shown
    (screenshots before and after, kept in the test's folder)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium; apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright drives Chromium").sync_playwright
    root = tmp_path / "lab"
    root.mkdir()
    nb = json.loads((REPO / "notebooks" / "explore.ipynb").read_text())
    params = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    overrides = f"\ndata_dir = {str(gold_cohort)!r}\njudgments_dir = None\ngenerations_path = None\n"
    params["source"] = "".join(params["source"]) + overrides  # as papermill's injected parameters would
    (root / "explore.ipynb").write_text(json.dumps(nb))
    port, token = _free_port(), "viewer-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    env["PYTHONPATH"] = str(REPO)
    command = [str(Path(os.sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.expose_app_in_browser=True", "--allow-root"]  # fmt: skip
    log = open(tmp_path / "lab.log", "w")
    lab = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            url = f"http://127.0.0.1:{port}/lab/tree/explore.ipynb?token={token}"
            for _ in range(120):
                try:
                    page.goto(url, timeout=5000)
                    break
                except Exception:  # the server is still starting
                    time.sleep(0.5)
            page.wait_for_function(
                "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel", timeout=90_000
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            try:
                page.wait_for_selector(".medalign-instance [data-instruction]", timeout=120_000)
            except Exception:
                print(page.inner_text("body")[-4000:])  # the notebook's own error, for the test's log
                raise
            first = page.get_attribute(".medalign-instance [data-instruction]", "data-instruction")
            assert first == instance_table(open_release(gold_cohort)).instruction_id.iloc[0]
            total = page.inner_text(".medalign-count")
            assert "question" in page.inner_html(".medalign-instance") and "What each strategy kept" in page.inner_text(
                ".medalign-instance"
            )
            page.screenshot(path=str(tmp_path / "viewer-any.png"))
            page.select_option(".medalign-filter-disagreement select", "clinicians among themselves")
            page.wait_for_function(f"document.querySelector('.medalign-count').innerText !== {json.dumps(total)}")
            narrowed = page.inner_text(".medalign-count")
            expected = filter_instances(
                instance_table(open_release(gold_cohort)), disagreement="clinicians among themselves"
            )
            assert narrowed.startswith(f"{len(expected)} of ") and total.split()[0] != narrowed.split()[0]
            chosen = expected.instruction_id.iloc[0]
            page.wait_for_selector(f'.medalign-instance [data-instruction="{chosen}"]', timeout=60_000)
            page.screenshot(path=str(tmp_path / "viewer-clinicians-disagree.png"))
            browser.close()
    finally:
        lab.terminate()
        lab.wait(20)
        log.close()
    keep = os.environ.get("MEDALIGN_SCREENSHOT_DIR")  # where a reviewer wants the screenshots kept
    for shot in ("viewer-any.png", "viewer-clinicians-disagree.png"):
        assert (tmp_path / shot).stat().st_size > 50_000, shot
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / shot, Path(keep) / shot)


def test_progress_bars_render_as_widgets_in_a_kernel(tmp_path):
    """In a Jupyter kernel the package's progress bars are widgets (ipywidgets is installed), not
    text on stderr: a notebook cell that runs a stage's loop with progress shows a widget and no
    stderr stream."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from medalign_utils.parallel import iter_process_map\n"
            "list(iter_process_map(abs, [-1, -2, -3], workers=1, desc='jobs', progress=True))"
        )
    ]
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = nb.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
    assert not [o for o in outputs if o.get("name") == "stderr"], outputs
    # Every stage module a notebook calls draws its bars with tqdm.auto (the CLI's own stay text).
    for module in ("context/grid.py", "evaluation/metrics.py", "evaluation/correlation.py", "generation/runner.py",
                   "generation/store.py", "parallel.py"):  # fmt: skip
        text = (REPO / "medalign_utils" / module).read_text()
        assert "from tqdm.auto import tqdm" in text and "from tqdm import tqdm" not in text, module
