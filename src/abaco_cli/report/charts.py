"""The report's figures: each chart as a Vega-Lite spec (built with Altair) and its table.

Every figure is built from one or two exported tables: the chart's data points are floats
(what a chart plots), the table beside it the exact decimals as text (money to the cent with
its currency, ratios as percentages). Titles say what a chart shows, axes carry their units,
the subtitle is the one-line definition (from the KPI catalogue where the figure is a KPI),
and ``description`` is the text alternative (the SVG's aria-label). Colours come from the
Okabe-Ito palette (categories) and viridis (ordered series, heat maps): both stay readable
with the common colour-vision deficiencies and in greyscale.
"""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import altair as alt

from abaco_cli.datasets.kpi.catalogue import KpiDefinition
from abaco_cli.errors import NotFoundError
from abaco_cli.report import formats
from abaco_cli.report.inputs import ReportInputs, Row, export_command

OKABE_ITO = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
)  # fmt: skip
WIDTH, HEIGHT = 560, 260
_PAR = re.compile(r"^par_([0-9]+)$")
VINTAGE_MONTHS = (3, 6, 12)  # the months on book the vintage tables show, with the latest


@dataclass(frozen=True)
class Figure:
    """One chart of the report and the exact numbers behind it."""

    key: str  # its files: report_<D>_<key>.svg / .png
    section: str
    title: str
    note: str  # how the figure is defined, in one line
    description: str  # the text alternative
    spec: dict[str, Any]  # Vega-Lite
    columns: tuple[str, ...] = ()
    rows: Sequence[Sequence[str]] = field(default_factory=list)


def _month(day: date) -> str:
    return day.strftime("%Y-%m")


def _title(title: str, note: str) -> alt.TitleParams:
    """The title and, below it, the definition wrapped to the chart's width."""
    return alt.TitleParams(title, subtitle=textwrap.wrap(note, 95), anchor="start")


def _chart(data: list[dict[str, Any]], title: str, note: str, description: str) -> alt.Chart:
    return alt.Chart(alt.InlineData(values=data)).properties(
        title=_title(title, note),
        width=WIDTH,
        height=HEIGHT,
        description=description,
    )


def _spec(chart: alt.Chart | alt.LayerChart | alt.FacetChart | alt.HConcatChart) -> dict[str, Any]:
    spec: dict[str, Any] = chart.to_dict()
    spec["config"] = {
        "font": "sans-serif",
        "range": {"category": list(OKABE_ITO)},
        "title": {"fontSize": 14, "subtitleFontSize": 11, "subtitleColor": "#444444"},
    }
    return spec


def _formula(catalogue: dict[str, KpiDefinition], key: str) -> str:
    found = catalogue.get(key)
    return f"{key}: {found.formula}" if found is not None else key


def _series(inputs: ReportInputs) -> dict[date, dict[str, Row]]:
    by_month: dict[date, dict[str, Row]] = defaultdict(dict)
    for row in inputs.rows("kpi", "series"):
        by_month[row["month_end"]][row["kpi"]] = row
    if not by_month:
        as_of = inputs.as_of
        raise NotFoundError(
            f"kpi/series as of {as_of} holds no month-end: the trend charts need it; run "
            f"`{export_command('kpi', as_of)} --months 12`",
        )
    return dict(sorted(by_month.items()))


# ------------------------------------------------------------------------------ kpi/series


def par_trend(inputs: ReportInputs, catalogue: dict[str, KpiDefinition]) -> Figure:
    """PAR N (every threshold exported) and the NPL ratio at each trailing month-end."""
    series = _series(inputs)
    par = {k for month in series.values() for k in month if _PAR.match(k)}
    keys = [*sorted(par, key=lambda k: int(k.split("_")[1])), "npl_ratio"]
    labels = {k: f"PAR {k.split('_')[1]}" if _PAR.match(k) else "NPL" for k in keys}
    data = [
        {
            "month": _month(month),
            "measure": labels[k],
            "value": formats.number(rows[k]["value"]) if k in rows else None,
        }
        for month, rows in series.items()
        for k in keys
    ]
    title = "Portfolio at risk (PAR) and non-performing loans (NPL), trailing month-ends"
    note = (
        f"{_formula(catalogue, keys[0])}; {_formula(catalogue, 'npl_ratio')}"
        if keys[0] != "npl_ratio"
        else _formula(catalogue, "npl_ratio")
    )
    last_month, last = next(reversed(series.items()))
    description = (
        f"Line chart of {', '.join(labels[k] for k in keys)} as a share of outstanding at "
        f"{len(series)} month-ends; at {last_month}: "
        + ", ".join(f"{labels[k]} {formats.percent(last.get(k, {}).get('value'))}" for k in keys)
    )
    chart = (
        _chart(data, title, note, description)
        .mark_line(point=True)
        .encode(
            x=alt.X("month:O", title="Month-end (year-month)"),
            y=alt.Y("value:Q", title="Share of outstanding (%)", axis=alt.Axis(format=".0%")),
            color=alt.Color("measure:N", title="Measure", sort=[labels[k] for k in keys]),
            tooltip=[
                alt.Tooltip("month:O", title="Month-end"),
                alt.Tooltip("measure:N", title="Measure"),
                alt.Tooltip("value:Q", title="Share", format=".2%"),
            ],
        )
    )
    rows = [
        (month.isoformat(), *(formats.percent(r[k]["value"]) if k in r else "n/a" for k in keys))
        for month, r in series.items()
    ]
    return Figure(
        "par_trend", "Delinquency", title, note, description, _spec(chart),
        ("month-end", *(labels[k] for k in keys)), rows,
    )  # fmt: skip


def balances(inputs: ReportInputs, catalogue: dict[str, KpiDefinition]) -> Figure:
    """Outstanding at each month-end and the principal disbursed in that month."""
    series = _series(inputs)
    names = {"outstanding_balance": "Outstanding at month-end", "disbursed_mtd": "Disbursed"}
    data = [
        {
            "month": _month(month),
            "measure": names[k],
            "value": formats.number(rows[k]["value"]) if k in rows else None,
        }
        for month, rows in series.items()
        for k in names
    ]
    title = f"Outstanding balance and disbursements by month ({formats.CURRENCY})"
    note = (
        f"{_formula(catalogue, 'outstanding_balance')}; disbursed: principal of loans disbursed "
        "in the month (disbursed_mtd at the month-end)"
    )
    last_month, last = next(reversed(series.items()))
    description = (
        f"Bars of the principal disbursed each month and a line of the outstanding balance at "
        f"{len(series)} month-ends; at {last_month}: outstanding "
        f"{formats.money(last.get('outstanding_balance', {}).get('value'))}, disbursed "
        f"{formats.money(last.get('disbursed_mtd', {}).get('value'))}"
    )
    base = _chart(data, title, note, description).encode(
        x=alt.X("month:O", title="Month (year-month)"),
        y=alt.Y("value:Q", title=f"Amount ({formats.CURRENCY})", axis=alt.Axis(format="~s")),
        color=alt.Color("measure:N", title="Measure", sort=list(names.values())),
        tooltip=[
            alt.Tooltip("month:O", title="Month"),
            alt.Tooltip("measure:N", title="Measure"),
            alt.Tooltip("value:Q", title=formats.CURRENCY, format=",.2f"),
        ],
    )
    bars = base.mark_bar(opacity=0.8).transform_filter(alt.datum.measure == names["disbursed_mtd"])
    line = base.mark_line(point=True).transform_filter(
        alt.datum.measure == names["outstanding_balance"]
    )
    layered = alt.layer(bars, line).properties(title=_title(title, note), description=description)
    rows = [
        (
            month.isoformat(),
            formats.money(r.get("outstanding_balance", {}).get("value")),
            formats.money(r.get("disbursed_mtd", {}).get("value")),
        )
        for month, r in series.items()
    ]
    return Figure(
        "balances", "Portfolio", title, note, description, _spec(layered),
        ("month-end", "outstanding", "disbursed in the month"), rows,
    )  # fmt: skip


# -------------------------------------------------------------------------------- dpd/aging


def aging(inputs: ReportInputs, catalogue: dict[str, KpiDefinition]) -> Figure:
    buckets = sorted(inputs.rows("dpd", "aging"), key=lambda r: r["dpd_bucket_value"])
    data = [
        {
            "bucket": r["dpd_bucket"],
            "order": r["dpd_bucket_value"],
            "outstanding": formats.number(r["outstanding"]),
            "loans": r["loans"],
            "share": formats.number(r["share_of_outstanding"]),
            "share_text": formats.percent(r["share_of_outstanding"], 1),
        }
        for r in buckets
    ]
    title = f"Aging: active outstanding ({formats.CURRENCY}) and loans by days-past-due bucket"
    note = (
        "Active loans (not written off, outstanding above the tolerance) by their days past due "
        "at the as-of date; the label is the bucket's share of active outstanding"
    )
    description = "Bar chart of outstanding by bucket: " + ", ".join(
        f"{r['dpd_bucket']} {formats.money(r['outstanding'])} "
        f"({formats.percent(r['share_of_outstanding'])}, {r['loans']} loans)"
        for r in buckets
    )
    order = [r["dpd_bucket"] for r in buckets]
    tooltip = [
        alt.Tooltip("bucket:N", title="Bucket"),
        alt.Tooltip("outstanding:Q", title=formats.CURRENCY, format=",.2f"),
        alt.Tooltip("loans:Q", title="Loans"),
        alt.Tooltip("share:Q", title="Share", format=".2%"),
    ]
    base = alt.Chart(alt.InlineData(values=data)).encode(
        x=alt.X("bucket:N", title="Days past due (bucket)", sort=order), tooltip=tooltip
    )
    amount = base.encode(
        y=alt.Y(
            "outstanding:Q",
            title=f"Outstanding ({formats.CURRENCY})",
            axis=alt.Axis(format="~s"),
        )
    )
    money = alt.layer(
        amount.mark_bar(color=OKABE_ITO[0]), amount.mark_text(dy=-6).encode(text="share_text:N")
    ).properties(width=340, height=HEIGHT, title="Outstanding, labelled with its share")
    loans = (
        base.mark_bar(color=OKABE_ITO[1])
        .encode(y=alt.Y("loans:Q", title="Active loans (count)"))
        .properties(width=240, height=HEIGHT, title="Active loans")
    )
    layered = alt.hconcat(money, loans).properties(
        title=_title(title, note), description=description
    )
    rows = [
        (
            r["dpd_bucket"],
            formats.count(r["loans"]),
            formats.count(r["customers"]),
            formats.money(r["outstanding"]),
            formats.money(r["past_due_amount"]),
            formats.percent(r["share_of_outstanding"]),
        )
        for r in buckets
    ]
    return Figure(
        "aging", "Delinquency", title, note, description, _spec(layered),
        ("bucket", "loans", "customers", "outstanding", "past due", "share"), rows,
    )  # fmt: skip


# -------------------------------------------------------------------------- analytics/...

VINTAGE_CURVES = (
    ("ever_30_pct", "vintage_ever_30", "Ever 30+ days past due",
     "principal of the cohort's loans whose days past due had reached 30 by the observation "
     "/ the cohort's disbursed principal"),
    ("ever_90_pct", "vintage_ever_90", "Ever 90+ days past due",
     "principal of the cohort's loans whose days past due had reached 90 by the observation "
     "/ the cohort's disbursed principal"),
    ("net_loss_pct", "vintage_net_loss", "Net loss",
     "(gross write-offs - recoveries) of the cohort by the observation / the cohort's "
     "disbursed principal"),
    ("written_off_pct", "vintage_written_off", "Written off",
     "gross write-offs of the cohort's loans by the observation (from the month of their "
     "write-off date) / the cohort's disbursed principal"),
    ("principal_collected_pct", "vintage_collected", "Principal collected",
     "principal of payments dated on or before the observation / the cohort's disbursed "
     "principal"),
)  # fmt: skip


def vintage(inputs: ReportInputs, column: str, key: str, label: str, definition: str) -> Figure:
    rows = [r for r in inputs.rows("analytics", "vintages") if r["cohort_loans"]]
    cohorts: dict[date, list[Row]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r["cohort_month"], r["months_on_book"])):
        cohorts[r["cohort_month"]].append(r)
    data = [
        {
            "cohort": _month(r["cohort_month"]),
            "months_on_book": r["months_on_book"],
            "value": formats.number(r[column]),
        }
        for r in rows
    ]
    title = f"Vintage curves: {label} by months on book (% of disbursed, one line a cohort)"
    note = f"{column}: {definition}"
    latest = {c: items[-1] for c, items in cohorts.items()}
    description = (
        f"Line chart of {label.lower()} against months on book for {len(cohorts)} monthly "
        "disbursement cohorts; latest observations: "
        + ", ".join(f"{_month(c)} {formats.percent(r[column])}" for c, r in latest.items())
    )
    chart = (
        _chart(data, title, note, description)
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x=alt.X("months_on_book:Q", title="Months on book", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("value:Q", title=f"{label} (% of disbursed)", axis=alt.Axis(format=".0%")),
            color=alt.Color(
                "cohort:O",
                title="Cohort",
                scale=alt.Scale(scheme="viridis"),
                legend=alt.Legend(columns=2),
            ),
            tooltip=[
                alt.Tooltip("cohort:O", title="Cohort"),
                alt.Tooltip("months_on_book:Q", title="Months on book"),
                alt.Tooltip("value:Q", title=label, format=".2%"),
            ],
        )
    )  # fmt: skip

    def at(items: list[Row], months: int) -> str:
        found = next((r for r in items if r["months_on_book"] == months), None)
        return formats.percent(found[column]) if found is not None else ""

    table = [
        (
            _month(c),
            formats.count(items[0]["cohort_loans"]),
            formats.money(items[0]["cohort_disbursed"]),
            *(at(items, m) for m in VINTAGE_MONTHS),
            f"{formats.percent(items[-1][column])} ({items[-1]['months_on_book']})",
        )
        for c, items in cohorts.items()
    ]
    return Figure(
        key, "Vintages", title, note, description, _spec(chart),
        ("cohort", "loans", "disbursed", *(f"month {m}" for m in VINTAGE_MONTHS),
         "latest (months on book)"),
        table,
    )  # fmt: skip


def roll_rates(inputs: ReportInputs, catalogue: dict[str, KpiDefinition]) -> Figure:
    """The newest transition of the window as a heat map of balance roll rates."""
    every = inputs.rows("analytics", "roll_rates")
    if not every:
        raise NotFoundError(
            f"analytics/roll_rates as of {inputs.as_of} is empty: run "
            f"`{export_command('analytics', inputs.as_of)}` again"
        )
    newest = max(r["to_date"] for r in every)
    rows = [r for r in every if r["to_date"] == newest]
    start = rows[0]["from_date"]
    from_order = [b for _, b in sorted({(r["from_bucket_value"], r["from_bucket"]) for r in rows})]
    to_order = [s for _, s in sorted({(r["to_state_value"], r["to_state"]) for r in rows})]
    data = [
        {
            "from_bucket": r["from_bucket"],
            "to_state": r["to_state"],
            "rate": formats.number(r["balance_rate"]),
            "text": formats.percent(r["balance_rate"], 0) if r["balance_rate"] else "",
            "loans": r["loans"],
        }
        for r in rows
    ]
    title = f"Roll rates from {start} to {newest}: where each bucket's balance went"
    note = (
        "Loans active at the first month-end, by their bucket then and their state at the "
        "second; share of the from bucket's outstanding (each row adds up to 100 %)"
    )
    description = f"Heat map of balance roll rates from {start} to {newest}; " + "; ".join(
        f"{r['from_bucket']} to {r['to_state']} {formats.percent(r['balance_rate'])}"
        for r in rows
        if r["balance_rate"]
    )
    base = _chart(data, title, note, description).encode(
        x=alt.X("to_state:N", title=f"State at {newest}", sort=to_order),
        y=alt.Y("from_bucket:N", title=f"Bucket at {start}", sort=from_order),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(
            "rate:Q",
            title="Share of balance",
            scale=alt.Scale(scheme="viridis", domain=[0, 1], reverse=True),
            legend=alt.Legend(format=".0%"),
        ),
        tooltip=[
            alt.Tooltip("from_bucket:N", title="From"),
            alt.Tooltip("to_state:N", title="To"),
            alt.Tooltip("rate:Q", title="Share of balance", format=".2%"),
            alt.Tooltip("loans:Q", title="Loans"),
        ],
    )
    text = base.mark_text(fontSize=11).encode(
        text="text:N",
        color=alt.condition(alt.datum.rate > 0.5, alt.value("white"), alt.value("black")),
    )
    layered = alt.layer(cells, text).properties(title=_title(title, note), description=description)
    cell = {(r["from_bucket"], r["to_state"]): r["balance_rate"] for r in rows}
    table = [(b, *(formats.percent(cell.get((b, s))) for s in to_order)) for b in from_order]
    return Figure(
        "roll_rates", "Roll rates", title, note, description, _spec(layered),
        ("from \\ to", *to_order), table,
    )  # fmt: skip


def top_customers(inputs: ReportInputs, catalogue: dict[str, KpiDefinition]) -> Figure:
    rows = sorted(
        (r for r in inputs.rows("analytics", "concentration") if r["dimension"] == "customer"),
        key=lambda r: r["rank"],
    )
    hhi = rows[0]["hhi"] if rows else None
    data = [
        {
            "customer": r["key"] or "(none)",
            "share": formats.number(r["share"]),
            "outstanding": formats.number(r["outstanding"]),
            "cumulative": formats.number(r["cumulative_share"]),
        }
        for r in rows
    ]
    hhi_text = "n/a" if hhi is None else f"{Decimal(hhi):.4f}"
    title = f"Concentration: the {len(rows)} largest customers' share of outstanding"
    note = f"{_formula(catalogue, 'top10_concentration')}; customer HHI {hhi_text}"
    description = (
        f"Bar chart of the {len(rows)} largest customers' shares of active outstanding "
        f"(HHI {hhi_text}): "
        + ", ".join(f"{r['key']} {formats.percent(r['share'])}" for r in rows[:10])
    )
    chart = (
        _chart(data, title, note, description)
        .mark_bar(color=OKABE_ITO[0])
        .encode(
            y=alt.Y("customer:N", title="Customer (by rank)", sort=None),
            x=alt.X(
                "share:Q", title="Share of active outstanding (%)", axis=alt.Axis(format=".0%")
            ),
            tooltip=[
                alt.Tooltip("customer:N", title="Customer"),
                alt.Tooltip("share:Q", title="Share", format=".2%"),
                alt.Tooltip("outstanding:Q", title=formats.CURRENCY, format=",.2f"),
                alt.Tooltip("cumulative:Q", title="Cumulative share", format=".2%"),
            ],
        )
        .properties(height=max(HEIGHT, 16 * len(rows)))
    )  # fmt: skip
    table = [
        (
            str(r["rank"]),
            r["key"] or "(none)",
            formats.count(r["active_loans"]),
            formats.money(r["outstanding"]),
            formats.percent(r["share"]),
            formats.percent(r["cumulative_share"]),
        )
        for r in rows
    ]
    return Figure(
        "concentration", "Concentration", title, note, description, _spec(chart),
        ("rank", "customer", "loans", "outstanding", "share", "cumulative"), table,
    )  # fmt: skip


def hhi(inputs: ReportInputs, catalogue: dict[str, KpiDefinition]) -> Figure:
    by_dimension: dict[str, Row] = {}
    for r in inputs.rows("analytics", "concentration"):
        by_dimension.setdefault(r["dimension"], r)
    data = [
        {"dimension": d, "hhi": formats.number(r["hhi"]), "keys": 0}
        for d, r in by_dimension.items()
    ]
    title = "Concentration by dimension: Herfindahl-Hirschman index (HHI)"
    note = (
        "HHI: the sum of the squared shares of active outstanding over every key of the "
        "dimension (1 = one key holds everything)"
    )
    description = "Bar chart of the HHI by dimension: " + ", ".join(
        f"{d} {formats.number(r['hhi']) or 0:.4f}" for d, r in by_dimension.items()
    )
    chart = (
        _chart(data, title, note, description)
        .mark_bar(color=OKABE_ITO[2])
        .encode(
            y=alt.Y("dimension:N", title="Dimension", sort=list(by_dimension)),
            x=alt.X("hhi:Q", title="HHI (0 to 1)", scale=alt.Scale(domain=[0, 1])),
            tooltip=[
                alt.Tooltip("dimension:N", title="Dimension"),
                alt.Tooltip("hhi:Q", title="HHI", format=".4f"),
            ],
        )
        .properties(height=30 * max(len(data), 1))
    )
    table = [
        (d, "n/a" if r["hhi"] is None else f"{Decimal(r['hhi']):.4f}")
        for d, r in by_dimension.items()
    ]
    return Figure(
        "hhi", "Concentration", title, note, description, _spec(chart), ("dimension", "HHI"), table
    )


CUSTOMER_TYPES = ("new", "recurrent", "reactivated", "recovered")


def customer_types(inputs: ReportInputs, catalogue: dict[str, KpiDefinition]) -> Figure:
    rows = sorted(
        inputs.rows("analytics", "customer_types"),
        key=lambda r: (r["month"], r["customer_type"]),
    )
    data = [
        {"month": _month(r["month"]), "type": r["customer_type"], "customers": r["customers"]}
        for r in rows
    ]
    title = "Customers by type and month"
    note = (
        "new: first loan in the month; recurrent / reactivated: previous loan up to / more than "
        "180 days before; recovered: back to 30 days past due or less after more than 90"
    )
    months = sorted({r["month"] for r in rows})
    cell = {(r["month"], r["customer_type"]): r["customers"] for r in rows}
    types = [t for t in CUSTOMER_TYPES if any(r["customer_type"] == t for r in rows)]
    description = (
        f"Line chart of customers by type over {len(months)} months; in {_month(months[-1])}: "
        if months
        else "Line chart of customers by type (no month exported)"
    ) + ", ".join(f"{t} {cell.get((months[-1], t), 0)}" for t in types if months)
    chart = (
        _chart(data, title, note, description)
        .mark_line(point=True)
        .encode(
            x=alt.X("month:O", title="Month (year-month)"),
            y=alt.Y("customers:Q", title="Customers (count)"),
            color=alt.Color("type:N", title="Customer type", sort=list(types)),
            tooltip=[
                alt.Tooltip("month:O", title="Month"),
                alt.Tooltip("type:N", title="Type"),
                alt.Tooltip("customers:Q", title="Customers"),
            ],
        )
    )
    table = [(_month(m), *(formats.count(cell.get((m, t))) for t in types)) for m in months]
    return Figure(
        "customer_types", "Customers", title, note, description, _spec(chart),
        ("month", *types), table,
    )  # fmt: skip


# ------------------------------------------------------------------------------ pricing/...


def _band(value: object) -> str:
    return "(no band)" if value is None else str(value)


def pricing_apr(inputs: ReportInputs, catalogue: dict[str, KpiDefinition]) -> Figure:
    """Realized APR by risk band and tenor band, weighted by principal over the grid's cells."""
    weighted: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    principal: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    loans: dict[tuple[str, str], int] = defaultdict(int)
    tenors: dict[str, int] = {}
    for r in inputs.rows("pricing", "grid"):
        cell = (_band(r["risk_band"]), str(r["tenor_band"]))
        tenors[str(r["tenor_band"])] = r["tenor_band_value"]
        loans[cell] += r["loans"]
        if r["weighted_apr"] is not None:
            weighted[cell] += r["weighted_apr"] * r["disbursed"]
            principal[cell] += r["disbursed"]
    apr = {c: weighted[c] / principal[c] for c in principal if principal[c]}
    bands = sorted({c[0] for c in loans}, key=lambda b: (b == "(no band)", b))
    tenor_order = sorted(tenors, key=lambda t: tenors[t])
    data = [
        {
            "risk_band": c[0],
            "tenor": c[1],
            "apr": formats.number(apr.get(c)),
            "text": formats.percent(apr.get(c), 1) if c in apr else "",
            "loans": loans[c],
        }
        for c in sorted(loans)
    ]
    title = "Pricing: realized APR by risk band and tenor (loans of the pricing window)"
    note = (
        "interest_rate_apr weighted by principal, over the loans disbursed in the pricing "
        "window with a rate (pricing/grid, all products and ticket bands)"
    )
    description = "Heat map of the realized APR by risk band and tenor band: " + "; ".join(
        f"{c[0]} {c[1]} {formats.percent(v)}" for c, v in sorted(apr.items())
    )
    base = _chart(data, title, note, description).encode(
        x=alt.X("tenor:N", title="Tenor band (days)", sort=tenor_order),
        y=alt.Y("risk_band:N", title="Risk band", sort=bands),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(
            "apr:Q", title="APR", scale=alt.Scale(scheme="viridis"), legend=alt.Legend(format=".0%")
        ),
        tooltip=[
            alt.Tooltip("risk_band:N", title="Risk band"),
            alt.Tooltip("tenor:N", title="Tenor"),
            alt.Tooltip("apr:Q", title="APR", format=".2%"),
            alt.Tooltip("loans:Q", title="Loans"),
        ],
    )
    shown = [float(v) for v in apr.values()]
    # viridis is light at its top: dark text on the upper 40 % of the range, white below
    light_from = min(shown) + 0.6 * (max(shown) - min(shown)) if shown else 0.0
    text = base.mark_text(fontSize=11).encode(
        text="text:N",
        color=alt.condition(alt.datum.apr > light_from, alt.value("black"), alt.value("white")),
    )
    layered = alt.layer(cells, text).properties(title=_title(title, note), description=description)
    table = [
        (b, *(formats.percent(apr.get((b, t))) if (b, t) in apr else "" for t in tenor_order))
        for b in bands
    ]
    return Figure(
        "pricing_apr", "Pricing", title, note, description, _spec(layered),
        ("risk band \\ tenor", *tenor_order), table,
    )  # fmt: skip


def adherence(inputs: ReportInputs, catalogue: dict[str, KpiDefinition]) -> Figure:
    """Rate-card adherence by risk band: loans within the tolerance of their card's APR."""
    counted: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # loans, matched, adherent
    for r in inputs.rows("pricing", "adherence"):
        numbers = counted[_band(r["risk_band"])]
        numbers[0] += 1
        numbers[1] += bool(r["band_matched"])
        numbers[2] += bool(r["is_adherent"])
    bands = sorted(counted, key=lambda b: (b == "(no band)", b))

    def share(b: str) -> Decimal | None:
        _, matched, adherent = counted[b]
        return Decimal(adherent) / Decimal(matched) if matched else None

    data = [
        {
            "risk_band": b,
            "share": formats.number(share(b)),
            "text": formats.percent(share(b), 1),
            "matched": counted[b][1],
            "loans": counted[b][0],
        }
        for b in bands
    ]
    title = "Pricing: rate-card adherence by risk band (% of loans with a card)"
    note = (
        "is_adherent: |apr - card_apr| <= pricing.apr_tolerance, over the loans of the pricing "
        "window that a rate card holds (band_matched)"
    )
    description = "Bar chart of the adherent share by risk band: " + ", ".join(
        f"{b} {formats.percent(share(b))} of {counted[b][1]} loans with a card" for b in bands
    )
    base = _chart(data, title, note, description).encode(
        x=alt.X("risk_band:N", title="Risk band", sort=bands),
        y=alt.Y(
            "share:Q", title="Adherent (% of loans with a card)",
            axis=alt.Axis(format=".0%"), scale=alt.Scale(domain=[0, 1]),
        ),
        tooltip=[
            alt.Tooltip("risk_band:N", title="Risk band"),
            alt.Tooltip("share:Q", title="Adherent", format=".2%"),
            alt.Tooltip("matched:Q", title="Loans with a card"),
            alt.Tooltip("loans:Q", title="Loans"),
        ],
    )  # fmt: skip
    layered = alt.layer(
        base.mark_bar(color=OKABE_ITO[2]), base.mark_text(dy=-6).encode(text="text:N")
    ).properties(title=_title(title, note), description=description)
    table = [
        (b, formats.count(counted[b][0]), formats.count(counted[b][1]),
         formats.count(counted[b][2]), formats.percent(share(b)))
        for b in bands
    ]  # fmt: skip
    return Figure(
        "adherence", "Pricing", title, note, description, _spec(layered),
        ("risk band", "loans", "with a card", "adherent", "adherent share"), table,
    )  # fmt: skip


Builder = Callable[[ReportInputs, dict[str, KpiDefinition]], Figure]
BUILDERS: Sequence[Builder] = (
    par_trend, balances, aging, roll_rates, top_customers, hhi, customer_types, pricing_apr,
    adherence,
)  # fmt: skip


def build_figures(inputs: ReportInputs, catalogue: Sequence[KpiDefinition]) -> list[Figure]:
    """Every figure of the report, in its order."""
    known = {d.key: d for d in catalogue}
    figures = [balances(inputs, known), par_trend(inputs, known), aging(inputs, known)]
    figures += [vintage(inputs, *curve) for curve in VINTAGE_CURVES]
    figures += [b(inputs, known) for b in BUILDERS[3:]]
    return figures
