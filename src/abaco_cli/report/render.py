"""From the inputs of a date to the report's files: the HTML page and each chart as SVG and PNG.

Rendering is offline: vl-convert (Vega-Lite and Vega compiled into a native library, with
their JavaScript run by an embedded engine) turns each spec into SVG and PNG without a browser
or the network, and gives the bundle of Vega's JavaScript that the page inlines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import vl_convert

from abaco_cli.datasets.kpi.catalogue import NOTES, KpiDefinition
from abaco_cli.report.charts import Figure, build_figures
from abaco_cli.report.inputs import ReportInputs
from abaco_cli.report.page import EMBED_SNIPPET, Header, render_page

PNG_SCALE = 2  # pixels per chart unit: sharp on slides and high-density screens


@dataclass(frozen=True)
class ReportFile:
    """One file of the report: its name in exports/reports/, its format, its content."""

    name: str
    table: str  # its manifest entry's table: "report" or the figure's key
    format: str
    content: bytes


@cache
def javascript() -> str:
    """Vega, Vega-Lite and Vega-Embed bundled with the page's embedding snippet (about 1 MB)."""
    return str(vl_convert.javascript_bundle(EMBED_SNIPPET))


def definitions_version(inputs: ReportInputs) -> str:
    versions = sorted({int(r["definition_version"]) for r in inputs.rows("kpi", "snapshot")})
    schemas = ", ".join(f"{d} {m.schema_version}" for d, m in sorted(inputs.manifests.items()))
    newest = versions[-1] if versions else "?"
    return f"definitions version {newest} (docs/domain.md); dataset schema versions: {schemas}"


def render_report(
    inputs: ReportInputs, header: Header, catalogue: Sequence[KpiDefinition]
) -> list[ReportFile]:
    """The page (first) and every chart's SVG and PNG, named report_<D>[_<chart>].<ext>."""
    stem = f"report_{inputs.as_of.isoformat()}"
    figures: list[tuple[Figure, str]] = []
    out: list[ReportFile] = []
    for figure in build_figures(inputs, catalogue):
        svg = str(vl_convert.vegalite_to_svg(figure.spec))
        png = bytes(vl_convert.vegalite_to_png(figure.spec, scale=PNG_SCALE))
        figures.append((figure, svg))
        out.append(ReportFile(f"{stem}_{figure.key}.svg", figure.key, "svg", svg.encode()))
        out.append(ReportFile(f"{stem}_{figure.key}.png", figure.key, "png", png))
    known = {d.key: d for d in catalogue}
    page = render_page(header, inputs.rows("kpi", "snapshot"), known, figures, javascript(), NOTES)
    return [ReportFile(f"{stem}.html", "report", "html", page.encode()), *out]
