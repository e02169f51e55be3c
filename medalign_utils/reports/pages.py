"""Rendering executed notebooks into pages a collaborator reads, and bundling a run to send.

A page opens on prose, tables and figures: code cells are collapsed (a button shows them; it works
offline, no CDN), stderr output (progress bars, library warnings) is left out, a table of contents
leads the way on long pages, figures fit a laptop screen, and the full executed notebook is one
click away. No absolute path of the user's machine stays in a page: the checkout's path becomes
relative, the data folder becomes its name (`relative_paths`).
"""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

_READER_CSS = """
<style>
body.medalign-hide-code .jp-CodeCell .jp-Cell-inputWrapper { display: none; }
body.medalign-hide-code .jp-CodeCell.jp-mod-noOutputs { display: none; }
.jp-Notebook { max-width: 1240px; margin: 0 auto; }
.jp-RenderedImage img, .jp-RenderedSVG svg { max-width: 100% !important; height: auto !important; }
/* A number and its CI stay on one line: a laptop's 1366 px holds Table 3 without wrapping a cell. */
.jp-RenderedHTMLCommon table { font-size: 13px; }
.jp-RenderedHTMLCommon td { white-space: nowrap; }
.jp-RenderedHTMLCommon th { white-space: normal; min-width: 4em; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { padding: 3px 6px !important; }
#medalign-bar { position: sticky; top: 0; z-index: 10; background: #f6f8fa; border-bottom: 1px solid #ddd;
  padding: 6px 12px; font: 14px system-ui, sans-serif; display: flex; gap: 16px; align-items: center; }
#medalign-toc { font: 14px system-ui, sans-serif; max-width: 1100px; margin: 12px auto; padding: 0 12px; }
#medalign-toc ol { margin: 4px 0 0 1.2em; padding: 0; }
#medalign-toc ol ol { margin-top: 0; }
.medalign-banner { max-width: 1100px; margin: 10px auto; padding: 8px 12px; border: 2px solid #9a6700;
  background: #fff8c5; color: #3b2300; font: bold 14px system-ui, sans-serif; }
@media print {
  /* A PDF holds what a reader needs: no buttons, every column of a wide table, no empty pages. */
  @page { size: A4 landscape; margin: 10mm; }
  #medalign-bar { display: none !important; }
  .jp-Notebook { max-width: none; }
  .jp-OutputArea-output, .jp-RenderedHTMLCommon, .jp-OutputArea { overflow: visible !important; }
  /* Tables print at the text's size (no page is shrunk to fit: nothing is wider than the page). */
  body { font-size: 10pt; }
  .jp-RenderedHTMLCommon, .jp-OutputArea-output pre { font-size: 10pt !important; }
  .jp-RenderedHTMLCommon table { font-size: 9pt !important; table-layout: auto; max-width: 100%; }
  .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { padding: 1px 4px !important; white-space: normal; }
  .jp-OutputArea-output pre { white-space: pre-wrap !important; word-break: break-word; }
  .jp-InputPrompt, .jp-OutputPrompt { display: none !important; }
  .jp-Cell, .jp-Cell-outputWrapper, .jp-OutputArea-child {
    break-inside: auto !important; page-break-inside: auto !important; }
  /* A figure fits one page, so none is pushed on leaving the page before it half empty. */
  .jp-RenderedImage img, .jp-RenderedSVG svg { max-height: 165mm !important; width: auto !important; }
  .jp-RenderedImage, tr { break-inside: avoid; }
  h1, h2, h3, caption { break-after: avoid; page-break-after: avoid; }
  /* PDFs are printed with JavaScript off: the code stays collapsed without the page's script. */
  .jp-CodeCell .jp-Cell-inputWrapper { display: none; }
  .jp-CodeCell.jp-mod-noOutputs { display: none; }
}
</style>
"""

# What every page and the index of a run on the synthetic cohort say first.
SYNTHETIC_BANNER = (
    "Synthetic cohort: these numbers test the machinery; they are planted, not measured. "
    "No finding here is a result about MedAlign's clinicians or any model."
)

_READER_JS = """
<script>
function medalignToggleCode() {
  var hidden = document.body.classList.toggle('medalign-hide-code');
  document.getElementById('medalign-code-toggle').textContent = hidden ? 'Show code' : 'Hide code';
}
// Code starts collapsed; a link ending in #show-code opens the page with it shown.
if (window.location.hash !== '#show-code') {
  document.body.classList.add('medalign-hide-code');
} else {
  document.getElementById('medalign-code-toggle').textContent = 'Hide code';
}
</script>
"""


# What the HTML exporter's template loads from a CDN (require.js, MathJax and its configuration,
# mermaid's module), and the one raster image its stylesheet embeds (CodeMirror's trailing-space
# mark): a page loads nothing from the network, and holds no image the share-safe scan cannot read.
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>\s*</script>", re.I)
_MATHJAX_CONFIG = re.compile(r"<script type=\"text/x-mathjax-config\">.*?</script>", re.S)
_SCRIPT_BLOCK = re.compile(r"<script\b[^>]*>.*?</script>", re.S | re.I)
_NETWORK_URL = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", re.I)
_EXTERNAL_STYLESHEET = re.compile(r"<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>", re.I)
_CSS_COMMENT_URL = re.compile(r"/\*(?:(?!\*/).)*?https?://.*?\*/", re.S)
_HEAD_RASTER = re.compile(r"url\(data:image/(?!svg)[^)]*\)", re.I)


def offline_page(page: str) -> str:
    """A rendered page with nothing that loads from the network and no raster in the template's
    stylesheet. Output cells (after `</head>`) are left as they are, for the scan to judge."""
    head, sep, body = page.partition("</head>")
    for pattern in (_EXTERNAL_SCRIPT, _MATHJAX_CONFIG, _EXTERNAL_STYLESHEET):
        head = pattern.sub("", head)
    # a template script that would fetch code (mermaid's module imports it from a CDN)
    head = _SCRIPT_BLOCK.sub(lambda m: "" if _NETWORK_URL.search(m.group()) else m.group(), head)
    head = _HEAD_RASTER.sub("none", head)
    head = _CSS_COMMENT_URL.sub("", head)  # credits in the stylesheet's comments: no address left to follow
    return head + sep + body


def relative_paths(text: str, root: Path, data_dir: Path | None = None, extra: tuple[Path, ...] = ()) -> str:
    """`text` with the machine's absolute paths taken out: the checkout's path made relative, the
    data folder (and any `extra` folder) reduced to its name, the home folder to `~`."""
    pairs = []
    if data_dir is not None:
        pairs.append((str(Path(data_dir).resolve()), Path(data_dir).name))
        pairs.append((str(data_dir), Path(data_dir).name))
    for folder in extra:
        pairs.append((str(Path(folder).resolve()), Path(folder).name))
    pairs += [(str(root.resolve()) + "/", ""), (str(root.resolve()), "."), (str(Path.home()), "~")]
    for old, new in sorted(pairs, key=lambda p: -len(p[0])):
        if old and old not in ("/", "."):
            text = text.replace(old, new)
    return text


def strip_stderr(nb) -> int:
    """Remove stderr stream outputs (progress bars, library warnings) from a notebook; returns how many."""
    n = 0
    for cell in nb.cells:
        outputs = cell.get("outputs", [])
        keep = [o for o in outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        n += len(outputs) - len(keep)
        cell["outputs"] = keep
    return n


def _toc(body: str) -> str:
    """The page's sections (its `##` headings) as a numbered list; the `#` title is the page's name,
    not a section, and `###` headings nest under their section."""
    heads = re.findall(r'<h([23]) id="([^"]+)"[^>]*>(.*?)</h\1>', body, flags=re.S)
    items = [(int(lv), a, re.sub(r"<[^>]+>", "", t).replace("¶", "").strip()) for lv, a, t in heads]
    items = [i for i in items if i[2]]
    if sum(lv == 2 for lv, _, _ in items) < 3:
        return ""
    parts, open_sub = [], False
    for level, anchor, text in items:
        link = f'<a href="#{anchor}">{html.escape(html.unescape(text))}</a>'
        if level == 3 and parts:
            parts.append(("" if open_sub else "<ol>") + f"<li>{link}</li>")
            open_sub = True
            continue
        parts.append(("</ol></li>" if open_sub else "</li>" if parts else "") + f"<li>{link}")
        open_sub = False
    parts.append("</ol></li>" if open_sub else "</li>")
    return f'<nav id="medalign-toc"><b>Contents</b><ol>{"".join(parts)}</ol></nav>'


def banner_html(text: str | None) -> str:
    return f'<div class="medalign-banner" role="note">{html.escape(text)}</div>' if text else ""


def render_page(ipynb: Path, target: Path, relativize=lambda t: t, *, banner: str | None = None) -> None:
    """The executed notebook `ipynb` as a reader's HTML page at `target` (see the module docstring);
    `banner` (the synthetic cohort's) opens the page, and prints with it."""
    import nbformat
    from nbconvert import HTMLExporter

    from ..generation.ledger import LEDGER_CELL_TAG

    nb = nbformat.read(str(ipynb), as_version=4)
    # The runner's ledger cell is the run's bookkeeping (run.json, the index), not the reader's.
    nb.cells = [c for c in nb.cells if LEDGER_CELL_TAG not in c.get("metadata", {}).get("tags", [])]
    strip_stderr(nb)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    bar = (
        '<div id="medalign-bar"><a href="index.html">&larr; this run\'s index</a>'
        '<button id="medalign-code-toggle" onclick="medalignToggleCode()">Show code</button>'
        f'<a href="{html.escape(ipynb.name)}">the full notebook (.ipynb)</a></div>'
    )
    body = body.replace("</head>", _READER_CSS + "</head>", 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + bar + banner_html(banner) + _toc(body), body, count=1)
    body = body.replace("</body>", _READER_JS + "</body>", 1)
    target.write_text(relativize(offline_page(body)), encoding="utf-8")


def find_chromium() -> str | None:
    return next(
        (p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")) if p),
        None,
    )


# Chromium with its networking off: every request (loopback included) goes to a proxy where nothing
# listens, and the background services that call update, sync and account hosts are disabled.
CHROMIUM_OFFLINE_FLAGS = (
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--no-pings",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--dns-prefetch-disable",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--disable-features=MediaRouter,OptimizationHints,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
)


# Chromium's own flags for the fallback where no network namespace can be made: WebRTC may send
# nothing that bypasses the (dead) proxy.
CHROMIUM_NO_UDP_FLAGS = (
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
)
# A PDF holds what the page's HTML holds, which the scan read: the printed copy forbids every script
# (a Content-Security-Policy Chromium obeys; its --disable-javascript switch no longer does) and
# every request, so no script writes text and nothing is fetched.
_NO_SCRIPT_POLICY = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
    "style-src 'unsafe-inline'; img-src data:; font-src data:\">"
)


def without_scripts(page: str) -> str:
    """A page that runs no script and loads nothing when printed."""
    return re.sub(r"(<head\b[^>]*>)", lambda m: m.group(1) + _NO_SCRIPT_POLICY, page, count=1, flags=re.I)


@functools.cache
def network_isolation() -> tuple[str, ...]:
    """The command prefix that runs a program in a network namespace of its own (no interface but
    its own loopback), where the system allows one; () where it does not."""
    unshare = shutil.which("unshare")
    for prefix in ((unshare, "--net"), (unshare, "--map-root-user", "--net")) if unshare else ():
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return ()


def page_pdf(page: Path, target: Path, chromium: str) -> bool:
    """Print a page to PDF with headless Chromium (code collapsed, as a reader sees it), with no
    script running (`without_scripts`), offline (in its own network namespace where the system
    allows, `CHROMIUM_OFFLINE_FLAGS` always) and with a fresh profile that is removed after."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="medalign-chromium-") as profile:
        printed = Path(profile) / "page.html"
        printed.write_text(without_scripts(page.read_text(encoding="utf-8")), encoding="utf-8")
        isolation = network_isolation()
        flags = ["--headless", "--disable-gpu", "--no-sandbox", "--no-pdf-header-footer", *CHROMIUM_OFFLINE_FLAGS]
        flags += [*CHROMIUM_NO_UDP_FLAGS, f"--user-data-dir={profile}/profile", f"--print-to-pdf={target}"]
        try:
            subprocess.run(
                [*isolation, chromium, *flags, printed.as_uri()], capture_output=True, timeout=180, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return target.exists() and target.stat().st_size > 0


def bundle_readme(record: dict) -> str:
    """What a collaborator reads first in a bundle: what the data was, the run, and how to read it."""
    data = record.get("data", {})
    kind = "the SYNTHETIC cohort" if data.get("synthetic") else "the MedAlign release (real data)"
    lines = [
        f"MedAlign suite report, run {record.get('run_id')} (finished {record.get('finished', '')}).",
        f"Data: {kind}, {data.get('patients')} patients, {data.get('instructions')} instructions, "
        f"fingerprint {data.get('fingerprint')}.",
    ]
    if data.get("synthetic"):
        lines.append(SYNTHETIC_BANNER)
    elif record.get("scanned"):
        lines.append("Every file here passed the share-safe scan (no record text, instruction, response or person_id).")
    lines += [
        "",
        "How to read it:",
        f"  {record.get('run_id')}/index.html (or index.pdf): the headline figure (Table 3 with 95% CIs and the",
        "    paper's values), every finding with its CI and what it is compared with, and links to each page.",
        "  NN_<notebook>.html / .pdf: one page per notebook (prose, tables, figures); .ipynb: the executed notebook.",
        "  tables/*.csv: the aggregate tables (Table 3, Table 4) as data.",
        "  config.yaml: the parameters of this run; run.json: the same record as data (environment, versions).",
        "Rerun: `medalign run --config config.yaml --data <your copy of the data>` in a clone of the suite",
        "  at the git commit in run.json.",
    ]
    return "\n".join(lines) + "\n"


def pdf_text(path: Path) -> str:
    """A PDF's text as a reader's viewer extracts it, with its document metadata (Title, Author...)."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    parts = [str(v) for v in (reader.metadata or {}).values()]
    parts += [page.extract_text() or "" for page in reader.pages]
    return "\n".join(parts)


# What a bundle takes from a run folder: pages, notebooks, the record, tables, the headline figure.
BUNDLED = {".html", ".ipynb", ".json", ".csv", ".svg", ".png"}
_RASTER = {".png"}


def bundle_run(out: Path, run_id: str, writer, progress: bool = False) -> Path | None:
    """One archive to send: the run's own index, pages and notebooks, its tables as CSV, its config
    and `run.json`, a README, and a PDF of each page (the index too) when Chromium is installed.

    It takes only files the run admitted (the writer's manifest), each with the very bytes the scan
    read; on the real release no raster image. Each PDF's text and metadata are extracted and
    scanned after printing. Anything the scan withholds here leaves no archive (returns None)."""
    import json

    import yaml

    from .manifest import file_digest

    run_dir = out / run_id
    target = out / f"{run_id}.zip"
    chromium = find_chromium()
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    real = writer.index is not None
    texts = {
        f"{run_id}/README.txt": bundle_readme(record),
        f"{run_id}/config.yaml": yaml.safe_dump(record.get("config", {}), sort_keys=True),
    }
    admitted = {
        p: h for p, h in writer.manifest.items() if p.parent in (run_dir.resolve(), (run_dir / "tables").resolve())
    }
    files = sorted(p for p in admitted if p.suffix in BUNDLED and not (real and p.suffix in _RASTER))
    withheld_before = len(writer.withheld)
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in texts.items():
            if kinds := writer.leaks(text):
                writer.withheld.append(f"{name} that held {', '.join(kinds)}")
            else:
                zf.writestr(name, text)
        for path in files:
            if not path.is_file() or file_digest(path) != admitted[path]:
                writer.withheld.append(f"{path.name}, changed after the scan read it")
                continue
            zf.write(path, path.relative_to(out.resolve()).as_posix())
            if chromium and path.suffix == ".html":
                pdf = run_dir / f"{path.stem}.pdf"
                if page_pdf(path, pdf, chromium) and not _withheld_pdf(pdf, writer):
                    writer.admit(pdf)
                    zf.write(pdf, pdf.relative_to(out).as_posix())
        if not chromium:
            zf.writestr("NO_PDF.txt", "Chromium was not found, so the pages are HTML only.\n")
    if len(writer.withheld) > withheld_before:
        tmp.unlink(missing_ok=True)
        return None
    os.replace(tmp, target)
    writer.admit(target)
    return target


def _withheld_pdf(pdf: Path, writer) -> bool:
    """Scan a printed PDF's text and metadata; remove it (and count it withheld) when it leaks."""
    if writer.index is None:
        return False
    try:
        kinds = writer.leaks(pdf_text(pdf))
    except Exception as err:  # a PDF the reader cannot parse cannot be shown to pass
        kinds = [f"content the scan cannot read ({type(err).__name__})"]
    if kinds:
        pdf.unlink(missing_ok=True)
        writer.withheld.append(f"{pdf.name} that held {', '.join(kinds)}")
    return bool(kinds)
