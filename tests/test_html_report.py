"""report.html: self-contained (figures embedded, no other file), and it renders in a browser.

The browser tests need Debian's chromium (``apt-get install chromium``; ``.ci/run`` installs
it); elsewhere they skip with that message.
"""

import re
import shutil
import subprocess

import pytest
from test_scaling_cli import FIGURES, isoflop_csv, run_fit

from srt_jax.scaling.html_report import report_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found: install it with apt-get install chromium"
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    out = tmp / "out"
    source = isoflop_csv(tmp / "points.csv")
    assert run_fit([str(source), "--out", str(out), "--bootstrap", "5"]) == 0
    return out


def test_the_page_embeds_every_figure_and_lists_every_run(fitted):
    page = (fitted / "report.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]*)"', page)
    assert len(sources) == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<table>" in page and ("Fit supported" in page or "Fit NOT supported" in page)
    assert page.count("<tr><td>") >= 24  # the runs table: one row per run
    assert "Runs (24)" in page
    markdown_headings = re.findall(r"^## (.+)$", (fitted / "report.md").read_text(), re.M)
    for heading in markdown_headings:
        assert f">{heading}</h2>" in page.replace("&gt;", ">").replace("&lt;", "<"), heading


def browser(page_path, *flags: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=5000",
        *flags,
        page_path.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@needs_chromium
def test_the_page_renders_in_chromium_with_its_images_loaded(fitted, tmp_path):
    dom = browser(fitted / "report.html", "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    assert f'data-images-loaded="{len(FIGURES)}/{len(FIGURES)}"' in dom.stdout
    shot = tmp_path / "shot.png"
    result = browser(fitted / "report.html", f"--screenshot={shot}", "--window-size=1200,2400")
    assert result.returncode == 0, result.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@needs_chromium
def test_a_figure_that_does_not_load_is_reported_by_the_page(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"not a png")  # embedded, but the browser cannot decode it
    page = tmp_path / "page.html"
    page.write_text(report_html("# t\n\n![broken](ok.png)\n", tmp_path, [], "t"))
    dom = browser(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    assert 'data-images-loaded="0/1"' in dom.stdout
    assert "figure failed to load: broken" in dom.stdout
