"""The report as one self-contained HTML page: header, KPI tiles, figures and their tables.

Each figure is on the page twice over: its static SVG (rendered offline by vl-convert, so the
page reads with JavaScript off, in an e-mail client and when printed to PDF) and its Vega-Lite
spec, which the inlined Vega, Vega-Lite and Vega-Embed bundle (vl-convert's
``javascript_bundle``: no CDN) renders in place for tooltips. A Content-Security-Policy allows
nothing from the network: no script, style, font or image is fetched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from html import escape
from typing import Any

from abaco_cli.datasets.kpi.catalogue import KpiDefinition
from abaco_cli.report import formats
from abaco_cli.report.charts import Figure
from abaco_cli.report.inputs import Row

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline' 'unsafe-eval'"
)  # Vega compiles its expressions with Function: 'unsafe-eval'; nothing from any URL
STATUS_MARK = {"green": "✓ green", "amber": "! amber", "red": "✕ red"}
_ID = re.compile(r'\bid="([^"]+)"')

EMBED_SNIPPET = """
const specs = JSON.parse(document.getElementById("abaco-specs").textContent);
for (const [key, spec] of Object.entries(specs)) {
  const holder = document.getElementById("chart-" + key);
  vegaEmbed(holder, spec, {renderer: "svg", actions: false})
    .then(() => { holder.dataset.rendered = "interactive"; })
    .catch((error) => { console.warn("abaco report: static chart kept for", key, error); });
}
"""

STYLE = """
:root { color-scheme: light; }
body { font-family: sans-serif; margin: 1.5rem auto; max-width: 72rem; color: #1a1a1a;
  line-height: 1.4; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #0072B2; padding-bottom: .2rem;
  margin-top: 2rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem;
  font-size: .9rem; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr));
  gap: .6rem; }
.tile { border: 1px solid #999; border-left-width: .5rem; border-radius: .25rem;
  padding: .4rem .6rem; background: #fafafa; break-inside: avoid; }
.tile .name { font-size: .8rem; color: #333; }
.tile .value { font-size: 1.15rem; font-weight: bold; }
.tile .status { font-size: .8rem; }
.tile.green { border-left-color: #009E73; background: #e8f5f0; }
.tile.amber { border-left-color: #E69F00; background: #fdf3e0; }
.tile.red { border-left-color: #D55E00; background: #fbe9e1; }
figure { margin: 1.5rem 0; break-inside: avoid; }
.chart { overflow-x: auto; }
.chart svg { max-width: 100%; height: auto; }
figcaption { font-size: .85rem; color: #333; margin: .3rem 0; }
table { border-collapse: collapse; font-size: .8rem; margin: .3rem 0; }
th, td { border: 1px solid #ccc; padding: .15rem .4rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef3f8; }
details summary { cursor: pointer; font-size: .85rem; }
.notes { font-size: .8rem; color: #444; }
@media print { details { display: block; } details > summary { display: none; }
  body { max-width: none; } }
"""


@dataclass(frozen=True)
class Header:
    """What the top of the report says about where its figures come from."""

    as_of: date
    generated_at: str
    run_id: str  # the report's own run
    input_runs: dict[str, str]  # dataset -> run id of the date's manifest
    source: dict[str, str]
    snapshot_at: str
    definitions_version: str
    tool_version: str


def _cell(text: str, header: bool = False) -> str:
    tag = "th" if header else "td"
    return f"<{tag}>{escape(text)}</{tag}>"


def table_html(columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> str:
    head = "".join(_cell(c, header=True) for c in columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return (
        f"<table><caption class='notes'>{escape(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def bounds(definition: KpiDefinition | None) -> str:
    """``green <= 5.00 %, amber <= 8.00 %`` in the KPI's own unit, or "" without thresholds."""
    if definition is None or definition.threshold is None:
        return ""
    threshold = definition.threshold
    sign = "≤" if threshold.direction == "lower_is_better" else "≥"
    green = formats.by_unit(threshold.green, definition.unit)
    amber = formats.by_unit(threshold.amber, definition.unit)
    return f"green {sign} {green}, amber {sign} {amber}, else red"


def status_now(value: object, definition: KpiDefinition | None) -> str | None:
    """The status the configured thresholds give ``value`` (as the export computes it: a value
    on a bound takes the better colour), or None without thresholds or value."""
    if definition is None or definition.threshold is None or value is None:
        return None
    threshold = definition.threshold
    exact = value if isinstance(value, Decimal) else Decimal(str(value))
    green, amber = Decimal(str(threshold.green)), Decimal(str(threshold.amber))
    if threshold.direction == "lower_is_better":
        return "green" if exact <= green else "amber" if exact <= amber else "red"
    return "green" if exact >= green else "amber" if exact >= amber else "red"


def tiles_html(snapshot: Sequence[Row], catalogue: dict[str, KpiDefinition]) -> str:
    tiles = []
    for row in snapshot:
        definition = catalogue.get(row["kpi"])
        status = row["status"]
        title = definition.formula if definition is not None else row["kpi"]
        threshold = bounds(definition)
        status_text = STATUS_MARK.get(status or "", "no threshold" if not threshold else "n/a")
        now = status_now(row["value"], definition)
        if status is not None and now is not None and now != status:
            threshold += f"; the thresholds configured now make it {now}"
        tiles.append(
            f"<div class='tile {escape(status or 'none')}' title='{escape(title)}'>"
            f"<div class='name'>{escape(row['kpi'])}</div>"
            f"<div class='value'>{escape(formats.by_unit(row['value'], row['unit']))}</div>"
            f"<div class='status'>{escape(status_text)}"
            f"{escape(' (' + threshold + ')') if threshold else ''}</div></div>"
        )
    return f"<div class='tiles'>{''.join(tiles)}</div>"


def scoped_svg(svg: str, key: str) -> str:
    """An SVG whose ids (clip paths, gradients) cannot clash with another chart's on the page."""
    ids = set(_ID.findall(svg))
    for name in sorted(ids, key=len, reverse=True):
        svg = svg.replace(f'id="{name}"', f'id="{key}-{name}"')
        svg = svg.replace(f"url(#{name})", f"url(#{key}-{name})")
        svg = svg.replace(f'href="#{name}"', f'href="#{key}-{name}"')
    return svg


def figure_html(figure: Figure, svg: str, file_stem: str) -> str:
    open_ = " open"  # open: printed too (a closed <details> prints only its summary)
    links = (
        f"<a href='{escape(file_stem)}_{figure.key}.png'>PNG</a>, "
        f"<a href='{escape(file_stem)}_{figure.key}.svg'>SVG</a>"
    )
    return (
        f"<figure id='figure-{figure.key}' aria-labelledby='caption-{figure.key}'>"
        f"<div class='chart' id='chart-{figure.key}' role='img' "
        f"aria-label='{escape(figure.description)}'>{scoped_svg(svg, figure.key)}</div>"
        f"<figcaption id='caption-{figure.key}'><strong>{escape(figure.title)}</strong>. "
        f"{escape(figure.note)}. Image files beside this report: {links}.</figcaption>"
        f"<details{open_}><summary>The numbers ({len(figure.rows)} rows)</summary>"
        f"{table_html(figure.columns, figure.rows, figure.title)}</details></figure>"
    )


_SCRIPT_END = re.compile(r"</(script)", re.IGNORECASE)


def _script_code(text: str) -> str:
    """JavaScript that cannot end the <script> element it is written into (``<\\/script``
    means the same in a JavaScript string or regular expression)."""
    return _SCRIPT_END.sub(r"<\\/\1", text)


def _script_json(data: Any) -> str:
    """JSON for a <script> element: every ``<`` (only ever inside a string) as ``\\u003c``."""
    return json.dumps(data, allow_nan=False).replace("<", "\\u003c")


def render_page(
    header: Header,
    snapshot: Sequence[Row],
    catalogue: dict[str, KpiDefinition],
    figures: Sequence[tuple[Figure, str]],
    javascript: str,
    notes: str,
) -> str:
    """The whole page; ``figures`` are the figures with their static SVG, ``javascript`` the
    Vega bundle with the embedding snippet."""
    source = header.source
    where = f"{source.get('database', '?')} on {source.get('host', '?')}:{source.get('port', '?')}"
    runs = ", ".join(f"{d} {r}" for d, r in header.input_runs.items())
    facts = [
        ("As of", f"{header.as_of.isoformat()} (end of day)"),
        ("Source", f"{where} (snapshot {header.snapshot_at})"),
        ("Export runs", runs),
        ("Report run", f"{header.run_id}, generated {header.generated_at} by abaco "
         f"{header.tool_version}"),
        ("Definitions", header.definitions_version),
        ("Currency", f"amounts in {formats.CURRENCY}; ratios as percentages"),
    ]  # fmt: skip
    sections: dict[str, list[str]] = {}
    for figure, svg in figures:
        sections.setdefault(figure.section, []).append(
            figure_html(figure, svg, f"report_{header.as_of.isoformat()}")
        )
    body = "".join(
        f"<section><h2>{escape(name)}</h2>{''.join(items)}</section>"
        for name, items in sections.items()
    )
    specs: dict[str, Any] = {figure.key: figure.spec for figure, _ in figures}
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>abaco report as of {header.as_of.isoformat()}</title>"
        f"<style>{STYLE}</style></head><body><header>"
        f"<h1>Portfolio report as of {header.as_of.isoformat()}</h1>"
        "<dl class='facts'>"
        + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
        + "</dl></header><main><section><h2>Key figures (kpi/snapshot)</h2>"
        "<p class='notes'>Each tile: the KPI, its value at the as-of date and its status "
        "against the thresholds in brackets (green, amber, red; hover for the definition).</p>"
        f"{tiles_html(snapshot, catalogue)}</section>{body}"
        f"<section><h2>Definitions</h2><p class='notes'>{escape(notes)}</p></section></main>"
        "<script type='application/json' id='abaco-specs'>"
        f"{_script_json(specs)}</script>"
        f"<script type='module'>{_script_code(javascript)}</script></body></html>\n"
    )
