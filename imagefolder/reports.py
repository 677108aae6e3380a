"""The HTML a reader opens: one report per executed notebook and `results/<profile>/index.html`.

`render(profile)` (`make html`, `python -m imagefolder html`) converts `executed/*.ipynb` into
`reports/*.html` without running anything, dropping on the way what only the machine needed to say
(`CleanOutputs`): progress bars and warnings on stderr and bare return values. The index page says what
the compendium is and holds the claims ledger (each verdict linking to the report that states it), one
card per report and the provenance of each notebook's run.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html
from nbconvert.preprocessors import Preprocessor

from .checkpoint import atomic_write_text
from .claims import VERDICT_RULE, Tables, claims
from .results import results_dir

VERDICT_SECTION = "What-this-run-shows"  # the id nbconvert gives the heading under which each notebook judges
# how `warnings` prints one, and how torch's own log does (e.g. inductor's "W1202 02:10:19.118000 5570
# …/cpp_extension.py:183] No CUDA runtime is found")
WARNING = re.compile(r"^(\S.*:\d+: \w*Warning: |[WE]\d{4} [\d:.]+ +\d+ \S+:\d+\] )", re.MULTILINE)

CSS = """
body.jp-Notebook main, body.index { max-width: 1240px; margin: 0 auto; padding: 0 8px; }
.jp-OutputPrompt, .jp-InputPrompt { display: none; }
body.jp-Notebook { padding: 0; }
body.jp-Notebook .jp-Cell { padding: 2px 0; }
nav.compendium { font: 14px/1.6 sans-serif; margin: 10px 0; }
.jp-RenderedMarkdown table, table.ledger, table.provenance {
  display: block; max-width: 100%; overflow-x: auto; font-size: 12px; border-collapse: collapse; margin: 6px 0; }
.jp-RenderedMarkdown th, .jp-RenderedMarkdown td, table.ledger td, table.ledger th, table.provenance td,
table.provenance th { padding: 1px 4px; border: 1px solid #ddd; vertical-align: top; }
.jp-RenderedMarkdown table { font-size: 11px; }
.jp-RenderedMarkdown th { overflow-wrap: anywhere; min-width: 3em; }
.jp-RenderedMarkdown td { max-width: 14em; }
.jp-RenderedHTMLCommon { padding-right: 0; }
.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"] { background: none; }
.jp-RenderedText pre { font-size: 12px; }
.jp-RenderedImage img { max-width: 100%; height: auto; }
"""

TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_css -%}{{ super() }}<style type="text/css">""" + CSS + """</style>{%- endblock html_head_css -%}
{%- block body_header -%}{{ super() }}
<nav class="compendium"><a href="../index.html">← all reports and the claims ledger of results/{{ resources.profile }}\
</a></nav>
{%- endblock body_header -%}
{%- block body_footer -%}
<nav class="compendium"><a href="../index.html">← back to the index</a></nav>
{{ super() }}
{%- endblock body_footer -%}
"""


def _shown(output: dict) -> bool:
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        text = output.get("text", "")
        return bool(text.strip()) and "\r" not in text and not WARNING.search(text)
    if output.get("output_type") == "execute_result":
        return set(output.get("data", {})) != {"text/plain"}  # a bare repr: a stray return value
    return True


class CleanOutputs(Preprocessor):
    """Drops progress bars and warnings on stderr (they name local paths) and bare return values; keeps
    stdout, rich outputs (tables, figures) and other stderr lines, such as the trainer's summaries."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if _shown(o)]
        return cell, resources


def exporter() -> HTMLExporter:
    """nbconvert's lab HTML without the code, cleaned, with the compendium's CSS and links to the index."""
    exp = HTMLExporter(extra_loaders=[DictLoader({"compendium.html.j2": TEMPLATE})], template_file="compendium.html.j2",
                       exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    exp.register_preprocessor(CleanOutputs(), enabled=True)
    return exp


def render_report(executed: Path, out: Path, profile: str) -> Path:
    body, _ = exporter().from_notebook_node(nbformat.read(executed, as_version=4), resources={"profile": profile})
    return atomic_write_text(out, body)


def render(profile: str, root: str | Path = "results") -> list[Path]:
    """Every `executed/*.ipynb` of the profile as `reports/*.html`, then `index.html`; returns the paths."""
    folder = results_dir(profile, root)
    executed = sorted((folder / "executed").glob("*.ipynb"))
    if not executed:
        raise FileNotFoundError(f"no executed notebooks in {folder / 'executed'}: run `make reproduce` or `make nb-NN`")
    paths = [render_report(nb, folder / "reports" / f"{nb.stem}.html", profile) for nb in executed]
    return paths + [write_index(profile, root)]


# ----------------------------------------------------------------------------- the index page

ABOUT = """<p>A reproducible research compendium of <b>ImageFolder: Autoregressive Image Generation with Folded
Tokens</b> (arXiv 2410.01756): a small package implements the product-quantized tokenizer, quantizer dropout,
the folded next-scale generator, its baselines and the evaluation, and six notebooks, executed headlessly by
papermill, regenerate every table and figure of the paper that a profile can afford. This page is profile
<code>{profile}</code>: the claims the paper makes and what this run found, one report per notebook, and the
provenance of each run. Small profiles measure with their own small networks (<code>FD_evaluator</code>, ...)
on their own data, so their numbers compare rows with each other, not with the paper's ImageNet numbers,
which stand beside them for reference.</p>"""


def _title(executed: Path) -> str:
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            return cell.source.splitlines()[0][2:].strip()
    return executed.stem


def _notebook_of(table: str, sections: dict[str, dict]) -> str | None:
    return next((name for name, s in sections.items()
                 if any(Path(o).parent.name == "tables" and Path(o).name == f"{table}.csv"
                        for o in s.get("outputs", []))),
                None)


def _thumbnail(section: dict) -> str | None:
    return next((f"figures/{Path(o).name}" for o in section.get("outputs", [])
                 if Path(o).parent.name == "figures" and o.endswith(".png")), None)


def _ledger(folder: Path, sections: dict[str, dict]) -> str:
    rows = []
    for c in claims(Tables(folder / "tables")):
        nb = _notebook_of(c["table"], sections)
        verdict = html.escape(c["verdict"])
        if nb and (folder / "reports" / f"{nb}.html").exists():
            verdict = f'<a href="reports/{nb}.html#{VERDICT_SECTION}">{verdict}</a>'
        rows.append(f"<tr><td>{html.escape(c['claim'])}</td><td>{html.escape(c['paper'])}</td>"
                    f"<td>{html.escape(c['ours'])}</td><td><b>{verdict}</b></td></tr>")
    return ("<table class='ledger'><tr><th>claim</th><th>paper</th><th>ours</th><th>verdict</th></tr>"
            + "".join(rows) + f"</table><div style='font-size:12px'>{markdown2html(VERDICT_RULE)}</div>")


def _cards(folder: Path, sections: dict[str, dict]) -> str:
    cards = []
    for executed in sorted((folder / "executed").glob("*.ipynb")):
        name, section = executed.stem, sections.get(executed.stem, {})
        thumb = _thumbnail(section)
        image = (f'<img src="{thumb}" alt="" style="width:100%;height:150px;object-fit:contain">' if thumb else
                 '<div style="height:150px;display:flex;align-items:center;justify-content:center;'
                 f'background:#f4f4f4;font-size:40px;color:#999">{html.escape(name[:2])}</div>')
        cards.append(f'<a class="card" href="reports/{name}.html">{image}'
                     f'<div>{html.escape(_title(executed))}</div></a>')
    return '<div class="cards">' + "".join(cards) + "</div>"


def _provenance(sections: dict[str, dict]) -> str:
    rows = []
    for name, s in sorted(sections.items()):
        git, m = s.get("git", {}), s.get("machine", {})
        commit = (git.get("commit") or "?")[:10] + (" (dirty)" if git.get("dirty") else "")
        where = f"{m.get('host', '?')}: {m.get('cpu', '?')}, {m.get('cpu_count', '?')} CPUs" + (
            f", {', '.join(m['gpus'])}" if m.get("gpus") else "")
        wall = sum(s.get("wall_times_s", {}).values())
        overrides = json.dumps(s["overrides"]) if s.get("overrides") else "none"
        rows.append(f"<tr><td>{html.escape(name)}</td><td><code>{commit}</code></td>"
                    f"<td>{html.escape(str(s.get('written_at', '?')))}</td><td>{html.escape(where)}</td>"
                    f"<td>{wall / 60:.1f} min</td><td>{html.escape(overrides)}</td></tr>")
    return ("<table class='provenance'><tr><th>notebook</th><th>commit</th><th>written</th><th>machine</th>"
            "<th>wall time</th><th>overrides</th></tr>" + "".join(rows) + "</table>")


def write_index(profile: str, root: str | Path = "results") -> Path:
    """`results/<profile>/index.html` from the profile's tables, reports and provenance.json."""
    folder = results_dir(profile, root)
    prov = folder / "provenance.json"
    sections = json.loads(prov.read_text())["sections"] if prov.exists() else {}
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ImageFolder compendium — {profile}</title>
<style>{CSS}
body.index {{ font: 15px/1.5 sans-serif; color: #222; }}
.cards {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px; }}
.card {{ border: 1px solid #ddd; padding: 8px; text-decoration: none; color: inherit; font-size: 14px; }}
.card:hover {{ border-color: #888; }}
table.ledger td:nth-child(3) {{ font-size: 11px; }}
</style></head>
<body class="index">
<h1>ImageFolder compendium — profile <code>{profile}</code></h1>
{ABOUT.format(profile=html.escape(profile))}
<h2 id="claims">Claims ledger</h2>
<p>From the tables in <code>tables/</code> (also <a href="claims.md">claims.md</a>); each verdict links to the
report section that states it.</p>
{_ledger(folder, sections)}
<h2 id="reports">Reports</h2>
{_cards(folder, sections)}
<h2 id="provenance">Provenance</h2>
<p>Per notebook, from <a href="provenance.json">provenance.json</a> (package versions, seeds, data and metric
networks are there too).</p>
{_provenance(sections)}
</body></html>
"""
    return atomic_write_text(folder / "index.html", page)
