"""A fit's report as one self-contained HTML page: report.md rendered, every figure embedded.

The page needs no other file and no network: PNG figures become ``data:`` URIs, the style
is inline, and a table lists every run the fit used. A small script marks the page with how
many images loaded (``data-images-loaded="k/n"`` on ``<body>``), which is what the headless
browser test reads, and replaces a figure that fails to load with a visible notice.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.45; color: #1a1a1a; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 0.2rem; }
.missing { color: #b00020; font-weight: bold; }
"""

IMAGE_CHECK = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  let loaded = 0;
  for (const image of images) {
    if (image.complete && image.naturalWidth > 0) { loaded += 1; continue; }
    const notice = document.createElement("p");
    notice.className = "missing";
    notice.textContent = "figure failed to load: " + image.alt;
    image.replaceWith(notice);
  }
  document.body.dataset.imagesLoaded = loaded + "/" + images.length;
});
"""

_IMAGE_SRC = re.compile(r'<img alt="([^"]*)" src="([^":]+\.png)"')
RUN_COLUMNS = ("run_id", "N", "D", "C", "loss", "fitted")


def report_html(markdown_text: str, figure_dir: Path, runs: list[dict], title: str) -> str:
    """The page: ``markdown_text`` rendered, its PNG images (paths relative to
    ``figure_dir``) embedded, then a table of ``runs`` (dicts with :data:`RUN_COLUMNS`)."""
    body = markdown.markdown(markdown_text, extensions=["tables"])
    body = _IMAGE_SRC.sub(lambda match: _embedded(match, Path(figure_dir)), body)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{STYLE}</style>",
            f"<script>{IMAGE_CHECK}</script>",
            "</head>",
            "<body>",
            body,
            _runs_table(runs),
            "</body>",
            "</html>",
            "",
        ]
    )


def _embedded(match: re.Match, figure_dir: Path) -> str:
    alt, name = match.group(1), match.group(2)
    data = base64.b64encode((figure_dir / name).read_bytes()).decode("ascii")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}"'


def _runs_table(runs: list[dict]) -> str:
    """Every run the fit used, with its fitted loss and relative residual."""
    header = "".join(f"<th>{name}</th>" for name in (*RUN_COLUMNS, "residual"))
    rows = []
    for run in runs:
        residual = run["fitted"] / run["loss"] - 1.0
        cells = [html.escape(str(run["run_id"]))] + [f"{run[name]:.4g}" for name in RUN_COLUMNS[1:]]
        rows.append(
            "<tr>"
            + "".join(f"<td>{cell}</td>" for cell in cells)
            + f"<td>{residual:+.2%}</td></tr>"
        )
    return "\n".join(
        [
            f"<h2>Runs ({len(runs)})</h2>",
            "<p>Every run the fit used: parameters N, tokens D, compute C (FLOPs), held-out "
            "loss, the law's fitted loss and its relative residual.</p>",
            f"<table><thead><tr>{header}</tr></thead><tbody>",
            *rows,
            "</tbody></table>",
        ]
    )
