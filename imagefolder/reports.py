"""The HTML a reader opens: one report per executed notebook and `results/<profile>/index.html`.

`render(profile)` (`make html`, `python -m imagefolder html`) converts `executed/*.ipynb` into
`reports/*.html` without running anything, dropping on the way what only the machine needed to say
(`CleanOutputs`): progress bars and warnings on stderr and bare return values; a figure's alt text (the
PNG output's `alt` metadata, `results.Report.figure`) becomes its image's. The index page says what the
compendium is, opens with the verdict counts and the forest plot, says how to read the page (scale
anchors, metric network, gains, verdicts, budgets, all read from the tables and the profile), holds the
claims ledger (each verdict linking to the report that states it), one card per report and the provenance
of each notebook's run and of the models it used.
"""
from __future__ import annotations

import datetime
import html
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
from jinja2 import DictLoader
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html
from nbconvert.preprocessors import Preprocessor

from . import claims as ledger
from . import config
from .checkpoint import atomic_write_text
from .claims import Tables
from .results import budget_note, results_dir

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
{%- block data_png scoped -%}
{%- set alt = output | get_metadata('alt', 'image/png') -%}
{%- if alt -%}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}" alt="{{ alt | escape_html }}"
{%- set width = output | get_metadata('width', 'image/png') %}{% if width %} width="{{ width }}"{% endif %}>
</div>
{%- else -%}{{ super() }}{%- endif -%}
{%- endblock data_png -%}
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
provenance of each run.</p>"""

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


def _summary(folder: Path, rows: list[dict]) -> str:
    """The verdict counts (`claims.counts_line`) and the forest plot, where `claims.write_ledger` drew it."""
    forest = f"figures/{ledger.FOREST}.png"
    plot = (f'<p><img src="{forest}" alt="{html.escape(ledger.FOREST_ALT)}" style="max-width:100%"></p>'
            if (folder / forest).exists() else "")
    return f"<p><b>{html.escape(ledger.counts_line(rows))}</b></p>{plot}"


OPTIONAL_COLUMNS = {"caveat": "caveat", "budget": "at 4× the study budget"}  # ledger fields shown where any is set


def _ledger(folder: Path, sections: dict[str, dict], rows: list[dict]) -> str:
    extra = {key: head for key, head in OPTIONAL_COLUMNS.items() if any(c.get(key) for c in rows)}
    cells = []
    for c in rows:
        nb = _notebook_of(c["table"], sections)
        verdict = html.escape(c["verdict"])
        if nb and (folder / "reports" / f"{nb}.html").exists():
            verdict = f'<a href="reports/{nb}.html#{VERDICT_SECTION}">{verdict}</a>'
        cells.append(f"<tr><td>{html.escape(c['claim'])}</td><td>{html.escape(c['paper'])}</td>"
                     f"<td>{html.escape(c['ours'])}</td><td><b>{verdict}</b></td>"
                     + "".join(f"<td>{html.escape(c.get(key) or '')}</td>" for key in extra) + "</tr>")
    return ("<table class='ledger'><tr><th>claim</th><th>paper</th><th>ours</th><th>verdict</th>"
            + "".join(f"<th>{html.escape(head)}</th>" for head in extra.values()) + "</tr>" + "".join(cells)
            + "</table>")


def _metric(df: pd.DataFrame | None, prefix: str) -> str | None:
    """The column of `df` holding our metric `prefix` (e.g. 'gFD' → 'gFD_evaluator'), not the paper's or an sd."""
    return None if df is None else next((c for c in df.columns if str(c).startswith(prefix)
                                          and "paper" not in str(c) and not str(c).endswith(" sd")), None)


def _anchors(tables: Tables, cfg: config.Config) -> list[str]:
    """The scale's anchors, each from its table: real images scored as if generated, the main generator, the
    study generators' range, and the main tokenizer's reconstructions."""
    out = []
    t4 = tables.get("table4_comparison")
    if t4 is not None and (gfd := _metric(t4, "gFD")):
        real = t4[t4["method"] == "real val images (baseline)"]
        if len(real):
            out.append(f"real val images scored as if generated: {gfd} {real[gfd].iloc[0]:.3g} at N = "
                       f"{int(real['N_gen'].iloc[0])} (the floor at that N; FD falls as N grows)")
    main = tables.get("generator_main")
    if main is not None and (fd := _metric(main, "gFD")):
        rows = dict(zip(main["model"], main.to_dict("records")))
        gen, rec = rows.get("ImageFolder (main)"), _metric(main, "recall")
        ceiling = next((r for m, r in rows.items() if "ceiling" in m), None)
        if gen is not None:
            out.append(f"the main generator ({budget_note(cfg, study=False)}): {fd} {gen[fd]:.3g}"
                       + (f", {rec} {gen[rec]:.3g}" if rec else "") + " (mean over sampling seeds)")
        if ceiling is not None and rec:
            out.append(f"its ceiling, the main tokenizer's reconstructions of val images scored as samples: {fd} "
                       f"{ceiling[fd]:.3g}, {rec} {ceiling[rec]:.3g} (a generator of its tokens draws at best these)")
    targets = tables.get("generator_main_targets")
    if targets is not None:
        out.append("the main generator's targets: " + "; ".join(
            f"{t.target}: {t.ours:.3g} ({'met' if str(t.met) == 'True' else 'not met'})"
            for t in targets.itertuples()))
    values = [v for name in sorted(p.stem for p in tables.folder.glob("*_runs.csv"))
              if (df := tables.get(name)) is not None and (col := _metric(df, "gFD"))
              for v in df[col].dropna()]
    if values:
        out.append(f"the study generators ({budget_note(cfg, study=True)}): {min(values):.3g} to {max(values):.3g} "
                   f"over {len(values)} runs")
    tok = tables.get("tokenizer_main")
    if tok is not None and (rfd := _metric(tok, "rFD")):
        out.append(f"the main tokenizer's reconstructions of val images: {rfd} {tok[rfd].iloc[0]:.3g}")
    return out


def _network(cfg: config.Config, sections: dict[str, dict]) -> str:
    """What computes FD / IS / precision / recall: the provenance's network, described from the profile."""
    recorded = {(n.get("name"), n.get("sha256")) for s in sections.values()
                for n in s.get("metric_networks", {}).values()}
    named = ", ".join(f"<code>{html.escape(str(n))}</code> (sha256 {html.escape(str(h))})" for n, h in sorted(recorded))
    if cfg.evaluation.fid_network == "inception":
        what = "Inception-v3 (torch-fidelity's port of the paper's network)"
    else:
        e = cfg.evaluator
        what = (f"a small {e.arch} classifier ({e.depth} layers, width {e.width}) trained on this profile's "
                f"{cfg.data.name} train split ({cfg.data.resolution} px) to predict {' and '.join(e.labels)}; its "
                f"features give FD, precision and recall, its class probabilities IS and class consistency "
                f"(for the label <code>{cfg.data.label}</code>)")
    return f"{named or 'the profile’s metric network'}: {what}"


def _how_to_read(tables: Tables, profile: str, sections: dict[str, dict]) -> str:
    """The box that says how to read the page, its numbers read from the tables and the profile's config."""
    cfg = config.profile(profile)
    anchors = "".join(f"<li>{html.escape(a)}</li>" for a in _anchors(tables, cfg))
    paper = "Inception-v3 on ImageNet at 256 px over 50k samples, from models trained for hundreds of epochs"
    n = sorted({cfg.study.num_samples, cfg.evaluation.num_samples})
    return f"""<div class="howto"><h2 id="how-to-read">How to read this page</h2><ul>
<li><b>Scale.</b> FD is a distance between feature distributions: lower is better, and it only compares numbers
of one metric network at one N. Anchors here:<ul>{anchors}</ul></li>
<li><b>rFD and gFD.</b> rFD: the tokenizer's reconstructions of the val images against those val images (how
much the tokens lose). gFD: generated samples against the train split (what the generator makes of them).</li>
<li><b>The metric network.</b> {_network(cfg, sections)}.</li>
<li><b>Gain and its sign.</b> A claim reads "A better than B"; its gain is A's advantage over B on the claim's
metric, paired by seed (or timing round), and is positive where our data agree with the claim, whether the
metric is lower-is-better (FD, latency) or higher-is-better (accuracy); negative means B did better. As a
relative effect (the log ratio of B to A, shown as a % change) it sits beside the paper's effect computed the
same way from the paper's two numbers.</li>
<li><b>Seed sd and interval.</b> A table's "± sd" is the spread of one row over training seeds (how much a
single run could differ); a verdict's interval is the 95 % Student-t interval of the mean paired gain (how
sure the comparison is). Rows can overlap by their sd while the interval of their paired gain excludes 0.</li>
<li><b>Budgets.</b> Study rows (the ablation tables): {html.escape(budget_note(cfg, study=True))}.
The main models: {html.escape(budget_note(cfg, study=False))}.</li>
<li><b>Why our numbers are one to two orders from the paper's.</b> The paper measures with {paper}; this profile
has {html.escape(cfg.data.name)} images at {cfg.data.resolution} px, its own metric network, N =
{" or ".join(map(str, n))} samples and the budgets above. Feature networks scale FD differently and small N
biases it upwards, so compare rows within a table, and the relative effects (the forest plot) with the
paper's.</li>
<li><details><summary><b>What each verdict means</b> (the ledger's rule)</summary>
{markdown2html(ledger.VERDICT_RULE)}</details></li>
</ul></div>"""


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


def _trained(section: dict) -> str:
    """When the models a notebook used were trained, and how many of them before the notebook started
    (cached: its wall time does not include their training)."""
    times = sorted(t for t in section.get("models_trained_at", {}).values() if t)
    if not times:
        return "not recorded" if section.get("models") else "no trained models"
    wall = sum(section.get("wall_times_s", {}).values())
    started = datetime.datetime.fromisoformat(section["written_at"]) - datetime.timedelta(seconds=wall)
    cached = sum(datetime.datetime.fromisoformat(t) < started for t in times)
    span = times[0][:16].replace("T", " ") + ("" if times[0][:16] == times[-1][:16]
                                              else " to " + times[-1][:16].replace("T", " "))
    return f"{len(times)} models, {span} UTC; {cached} trained before this run (cached)"


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
                    f"<td>{wall / 60:.1f} min</td><td>{html.escape(_trained(s))}</td>"
                    f"<td>{html.escape(overrides)}</td></tr>")
    return ("<table class='provenance'><tr><th>notebook</th><th>commit</th><th>written</th><th>machine</th>"
            "<th>wall time of this execution</th><th>models used: trained</th><th>overrides</th></tr>"
            + "".join(rows) + "</table>")


def write_index(profile: str, root: str | Path = "results") -> Path:
    """`results/<profile>/index.html` from the profile's tables, reports, figures and provenance.json."""
    folder = results_dir(profile, root)
    prov = folder / "provenance.json"
    sections = json.loads(prov.read_text())["sections"] if prov.exists() else {}
    tables = Tables(folder / "tables")
    rows = ledger.claims(tables, config.profile(profile))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ImageFolder compendium — {profile}</title>
<style>{CSS}
body.index {{ font: 15px/1.5 sans-serif; color: #222; }}
.cards {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px; }}
.card {{ border: 1px solid #ddd; padding: 8px; text-decoration: none; color: inherit; font-size: 14px; }}
.card:hover {{ border-color: #888; }}
.howto {{ border: 1px solid #ccd; background: #f7f8fc; padding: 4px 14px; margin: 12px 0; font-size: 14px; }}
.howto h2 {{ font-size: 18px; margin: 6px 0; }}
table.ledger td:nth-child(3) {{ font-size: 11px; }}
</style></head>
<body class="index">
<h1>ImageFolder compendium — profile <code>{profile}</code></h1>
{ABOUT.format(profile=html.escape(profile))}
{_summary(folder, rows)}
{_how_to_read(tables, profile, sections)}
<h2 id="claims">Claims ledger</h2>
<p>From the tables in <code>tables/</code> (also <a href="claims.md">claims.md</a>); each verdict links to the
report section that states it; <a href="#how-to-read">How to read this page</a> gives the rule behind it.</p>
{_ledger(folder, sections, rows)}
<h2 id="reports">Reports</h2>
{_cards(folder, sections)}
<h2 id="provenance">Provenance</h2>
<p>Per notebook, from <a href="provenance.json">provenance.json</a> (package versions, seeds, data and metric
networks are there too). A notebook's wall time is that of its last execution: where its models were trained
earlier (cached under <code>runs/</code>), it does not include their training, whose dates the next column gives.</p>
{_provenance(sections)}
</body></html>
"""
    return atomic_write_text(folder / "index.html", page)
