"""Rendering executed notebooks into pages a collaborator reads, and bundling a run to send.

A page opens on prose, tables and figures: code cells are collapsed (a button shows them; it works
offline, no CDN), stderr output (progress bars, library warnings) is left out, a table of contents
leads the way on long pages, figures fit a laptop screen, and the full executed notebook is one
click away. No absolute path of the user's machine stays in a page: the checkout's path becomes
relative, the data folder becomes its name (`relative_paths`).
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

_READER_CSS = """
<style>
body.medalign-hide-code .jp-CodeCell .jp-Cell-inputWrapper { display: none; }
body.medalign-hide-code .jp-CodeCell.jp-mod-noOutputs { display: none; }
.jp-Notebook { max-width: 1100px; margin: 0 auto; }
.jp-RenderedImage img, .jp-RenderedSVG svg { max-width: 100% !important; height: auto !important; }
#medalign-bar { position: sticky; top: 0; z-index: 10; background: #f6f8fa; border-bottom: 1px solid #ddd;
  padding: 6px 12px; font: 14px system-ui, sans-serif; display: flex; gap: 16px; align-items: center; }
#medalign-toc { font: 14px system-ui, sans-serif; max-width: 1100px; margin: 12px auto; padding: 0 12px; }
#medalign-toc ol { margin: 4px 0 0 1.2em; padding: 0; }
</style>
"""

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
    heads = re.findall(r'<h([12]) id="([^"]+)"[^>]*>(.*?)</h\1>', body, flags=re.S)
    items = [(level, anchor, re.sub(r"<[^>]+>", "", text).replace("¶", "").strip()) for level, anchor, text in heads]
    items = [i for i in items if i[2]]
    if len(items) < 4:
        return ""
    links = "".join(
        f'<li style="margin-left:{(int(lv) - 1) * 1.2}em"><a href="#{a}">{html.escape(html.unescape(t))}</a></li>'
        for lv, a, t in items
    )
    return f'<nav id="medalign-toc"><b>Contents</b><ol>{links}</ol></nav>'


def render_page(ipynb: Path, target: Path, relativize=lambda t: t) -> None:
    """The executed notebook `ipynb` as a reader's HTML page at `target` (see the module docstring)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(ipynb), as_version=4)
    strip_stderr(nb)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    bar = (
        '<div id="medalign-bar"><button id="medalign-code-toggle" onclick="medalignToggleCode()">Show code</button>'
        f'<a href="{html.escape(ipynb.name)}">the full notebook (.ipynb)</a></div>'
    )
    body = body.replace("</head>", _READER_CSS + "</head>", 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + bar + _toc(body), body, count=1)
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


def page_pdf(page: Path, target: Path, chromium: str) -> bool:
    """Print a page to PDF with headless Chromium (code collapsed, as a reader sees it), offline
    (`CHROMIUM_OFFLINE_FLAGS`) and with a fresh profile that is removed after."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="medalign-chromium-") as profile:
        flags = ["--headless", "--disable-gpu", "--no-sandbox", "--no-pdf-header-footer", *CHROMIUM_OFFLINE_FLAGS]
        flags += [f"--user-data-dir={profile}", f"--print-to-pdf={target}"]
        try:
            subprocess.run([chromium, *flags, page.resolve().as_uri()], capture_output=True, timeout=180, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return target.exists() and target.stat().st_size > 0


def bundle_run(out: Path, run_id: str, writer, progress: bool = False) -> Path:
    """One archive to send: the index, the run's pages and notebooks, `run.json`, and a PDF of each
    page when Chromium is installed. Every text file passes the share-safe scan on its way in; one
    that fails it is left out and named in the archive's `LEFT_OUT.txt`."""
    run_dir = out / run_id
    target = out / f"{run_id}.zip"
    chromium = find_chromium()
    left_out = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in [
            out / "index.html",
            run_dir / "run.json",
            *sorted(run_dir.glob("*.html")),
            *sorted(run_dir.glob("*.ipynb")),
        ]:
            if not path.exists():
                continue
            kinds = writer.leaks(path.read_text(encoding="utf-8", errors="replace"))
            if kinds:
                left_out.append(f"{path.name}: {', '.join(kinds)}")
                continue
            zf.write(path, path.relative_to(out).as_posix())
            if chromium and path.suffix == ".html" and path.parent == run_dir:
                pdf = run_dir / f"{path.stem}.pdf"
                if page_pdf(path, pdf, chromium):
                    zf.write(pdf, pdf.relative_to(out).as_posix())
        if left_out:
            zf.writestr("LEFT_OUT.txt", "Left out by the share-safe scan:\n" + "\n".join(left_out) + "\n")
        if not chromium:
            zf.writestr("NO_PDF.txt", "Chromium was not found, so the pages are HTML only.\n")
    return target
