"""The documentation reads the same on GitHub and on the site, and the built site has no broken
image, internal link or script error in a real browser."""
import functools
import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path

import pytest

from bali.reporting import pages
from conftest import ROOT, save_tiny_bert

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
# A list item that GitHub lets interrupt a paragraph: a bullet, or an ordered list starting at 1.
ITEM = re.compile(r"^([-*+]|1[.)])\s+\S")
ANY_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s+\S")
# Python-Markdown (MkDocs) nests a list only when it is indented by 4 spaces; GitHub nests at 2.
SHALLOW = re.compile(r"^ {1,3}([-*+]|1[.)])\s+\S")


def prose(text: str):
    """(line number, line) outside fenced code blocks; a fence line comes as "" (it ends a paragraph)."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m and (fence is None or m.group(1).startswith(fence)):
            fence = m.group(1)[:3] if fence is None else None
            yield n, ""
        elif fence is None:
            yield n, line


def render_differences(text: str) -> list[str]:
    """Lines that GitHub and MkDocs render differently: a list right after a paragraph line (GitHub
    starts a list, MkDocs keeps it in the paragraph), and a list nested by fewer than 4 spaces."""
    out, prev, in_list = [], "", False
    for n, line in prose(text):
        if not line.strip():
            prev, in_list = "", False
            continue
        if ITEM.match(line) and prev and not in_list and not prev.lstrip().startswith(("|", "#", "<!--")):
            out.append(f"{n}: a list after a paragraph line without a blank line: {line.strip()[:60]}")
        if SHALLOW.match(line) and in_list:
            out.append(f"{n}: a nested list indented by fewer than 4 spaces: {line.strip()[:60]}")
        in_list = in_list or bool(ANY_ITEM.match(line))
        prev = line
    return out


def table_problems(text: str, most: int = pages.MAX_COLUMNS) -> list[str]:
    """Tables wider than `most` columns, and rows with more cells than their header (GitHub drops
    the extra cells; a `|` inside a code span splits a cell there too)."""
    out, header = [], None
    for n, line in prose(text):
        if not line.startswith("|"):
            header = None
            continue
        cells = len(re.split(r"(?<!\\)\|", line.strip())) - 2
        if header is None:
            header = cells
            if cells > most:
                out.append(f"{n}: a table of {cells} columns (at most {most})")
        elif cells > header:
            out.append(f"{n}: a row of {cells} cells under a header of {header}")
    return out


def test_the_checks_find_what_they_look_for():
    assert render_differences("Text:\n- a\n- b\n") == ["2: a list after a paragraph line without a blank line: - a"]
    assert render_differences("Text:\n\n- a\n- b\n  more\n- c\n") == []
    assert render_differences("```\ntext\n- a\n```\n") == []
    assert render_differences("- a\n  - b\n")[0].startswith("2: a nested list indented by fewer than 4")
    assert render_differences("- a\n\n    - b\n") == []
    assert table_problems("| a | b |\n|---|---|\n| `x|y` | 1 |\n") == ["3: a row of 3 cells under a header of 2"]
    assert table_problems("|" + " a |" * 8 + "\n") == ["1: a table of 8 columns (at most 7)"]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_markdown_renders_the_same_on_github_and_the_site(page):
    text = page.read_text(encoding="utf-8")
    assert render_differences(text) == [], page
    assert table_problems(text) == [], page


def stage_graph(text: str) -> str:
    return re.search(r"^```mermaid\n.*?^```$", text, re.S | re.M).group(0)


def headline(text: str) -> str:
    begin, end = pages.BLOCKS["headline"]
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_the_home_page_stands_alone():
    readme, index = ((ROOT / f).read_text(encoding="utf-8") for f in ("README.md", "docs/index.md"))
    assert stage_graph(index) == stage_graph(readme)
    assert headline(index).strip() and headline(index) == headline(readme).replace("](docs/", "](")
    assert "make demo" in index and "make test" in index


def test_the_api_page_example_runs(tmp_path, capsys):
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), re.S).group(1)
    model = save_tiny_bert(tmp_path / "bali")
    exec(compile(code.replace('"models/bali"', repr(str(model))), "docs/api.md", "exec"), {})
    assert "tensor([[1.0000" in capsys.readouterr().out


class Refs(html.parser.HTMLParser):
    """The images, links, scripts and style sheets of one built page."""

    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        ref = {"img": a.get("src"), "a": a.get("href"), "script": a.get("src"), "link": a.get("href")}.get(tag)
        if ref:
            self.refs.append((tag, ref))


def broken_refs(site: Path, page: Path) -> list[str]:
    parser = Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    url = "/" + page.relative_to(site).as_posix()
    out = []
    for tag, ref in parser.refs:
        target = urllib.parse.urlparse(urllib.parse.urljoin(url, ref))
        if target.scheme or target.netloc or not target.path:  # another site, mailto:, or an anchor on this page
            continue
        f = site / urllib.parse.unquote(target.path).lstrip("/")
        f = f / "index.html" if f.is_dir() else f
        if not f.is_file() or f.stat().st_size == 0:
            out.append(f"{page.relative_to(site)}: <{tag}> {ref}")
    return out


# Material loads mermaid from a CDN when a page draws a diagram; a machine without internet gets this
# one error, which is the network's, not the site's (the diagram stays as its source text there).
OFFLINE = re.compile(r"Uncaught ReferenceError: Invalid script: https://unpkg\.com/mermaid@")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed")
def test_every_page_opens_in_a_browser_without_broken_images_links_or_script_errors(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    built = sorted(p for p in site.rglob("*.html") if p.name in ("index.html", "404.html"))
    assert len(built) >= len(DOCS)
    assert [b for p in built for b in broken_refs(site, p)] == []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors = []
    try:
        for page in built:
            if page.name == "404.html":
                continue
            url = f"http://127.0.0.1:{server.server_port}/{page.parent.relative_to(site).as_posix()}/".replace("/./", "/")
            with tempfile.TemporaryDirectory() as profile:
                run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                      "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                      "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                                      "--virtual-time-budget=3000", "--dump-dom", url],
                                     capture_output=True, text=True, timeout=60)
            console = [ln for ln in run.stderr.splitlines() if "Uncaught" in ln and not OFFLINE.search(ln)]
            if run.returncode or "<h1" not in run.stdout or console:
                errors.append(f"{url}: exit {run.returncode}, h1 {'<h1' in run.stdout}, {console[:3]}")
    finally:
        server.shutdown()
    assert errors == []
