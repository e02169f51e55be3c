"""The bundle sends nothing: pages load nothing from the network, and Chromium prints them with
its networking off (a loopback listener sees no connection)."""

from __future__ import annotations

import re
import socket
import subprocess
import threading

import nbformat
import pytest

from medalign_utils.reports.pages import CHROMIUM_OFFLINE_FLAGS, find_chromium, page_pdf, render_page

_RESOURCE = re.compile(
    r"<(?:script|img|iframe|embed|source|audio|video)\b[^>]*\bsrc=[\"']?(?:https?:)?//"
    r"|<link\b[^>]*\bhref=[\"']?(?:https?:)?//|@import\s+(?:url\()?[\"']?(?:https?:)?//|url\([\"']?(?:https?:)?//"
    r"|import\s*\(?\s*[\"'](?:https?:)?//",
    re.I,
)


def _executed_notebook(path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('hello')")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# A page\nSome prose."), cell]
    nbformat.write(nb, path)
    return path


def test_rendered_pages_reference_no_external_url_and_no_template_raster(tmp_path):
    page = tmp_path / "page.html"
    render_page(_executed_notebook(tmp_path / "page.ipynb"), page)
    html = page.read_text()
    assert not _RESOURCE.search(html), _RESOURCE.search(html).group()
    assert "cdnjs" not in html and not re.search(r"https?://(?!www\.w3\.org/)", html)
    assert not re.search(r"data:image/(?!svg)", html)  # the stylesheet's one raster is gone
    assert "medalignToggleCode" in html  # the page's own script stays


class _Listener:
    """A loopback listener that counts what reaches it: TCP connections, or UDP datagrams (a STUN
    request is one)."""

    def __init__(self, udp: bool = False):
        self.udp = udp
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        if not udp:
            self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                if self.udp:
                    self.sock.recvfrom(2048)
                else:
                    self.sock.accept()[0].close()
            except OSError:
                continue
            self.connections += 1

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_chromium_prints_offline_a_loopback_listener_sees_no_connection(tmp_path):
    chromium = find_chromium()
    if not chromium:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium; apt-get install chromium)")
    listener = _Listener()
    try:
        page = tmp_path / "page.html"
        base = f"http://127.0.0.1:{listener.port}"
        page.write_text(
            f'<html><head><script src="{base}/require.js"></script><link rel="stylesheet" href="{base}/a.css">'
            f'</head><body><p>text</p><img src="{base}/figure.png"></body></html>'
        )
        assert page_pdf(page, tmp_path / "page.pdf", chromium)
        assert listener.connections == 0
        # The same page printed with networking on does reach the listener: the test can fail.
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
             f"--print-to-pdf={tmp_path / 'online.pdf'}", page.as_uri()],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert listener.connections > 0
    finally:
        listener.close()
    assert "--proxy-server=http://127.0.0.1:9" in CHROMIUM_OFFLINE_FLAGS


def test_a_pages_script_neither_writes_the_pdf_nor_reaches_a_tcp_or_udp_listener(tmp_path):
    from medalign_utils.reports.pages import network_isolation, pdf_text, without_scripts

    chromium = find_chromium()
    if not chromium:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium; apt-get install chromium)")
    tcp, udp = _Listener(), _Listener(udp=True)
    try:
        page = tmp_path / "page.html"
        script = (
            "var t = 'computed' + ' by script'; document.title = t; document.getElementById('x').textContent = t;"
            f"fetch('http://127.0.0.1:{tcp.port}/leak?' + t).catch(function () {{}});"
            f"var pc = new RTCPeerConnection({{iceServers: [{{urls: 'stun:127.0.0.1:{udp.port}'}}]}});"
            "pc.createDataChannel('x'); pc.createOffer().then(function (o) { return pc.setLocalDescription(o); });"
        )
        page.write_text(
            f'<html><head><title>T</title></head><body><p id="x">as written</p><script>{script}</script></body></html>'
        )
        assert page_pdf(page, tmp_path / "page.pdf", chromium)
        import time

        time.sleep(1.0)
        text = pdf_text(tmp_path / "page.pdf")
        assert "as written" in text and "computed by script" not in text
        assert tcp.connections == 0 and udp.connections == 0
    finally:
        tcp.close()
        udp.close()
    assert "Content-Security-Policy" in without_scripts("<html><head></head></html>")
    # Where the system allows a network namespace (CI's machine does), Chromium runs in one.
    assert network_isolation() == () or network_isolation()[-1] == "--net"
