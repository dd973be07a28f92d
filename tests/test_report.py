"""`abaco report`: the HTML report of a date's exported datasets.

One synthetic book (abaco db seed, 1,500 loans through 2025-12-31) is exported once for the
module (`export all`, every dataset as of 2025-12-31) and reported on; tests that change the
tree work on a copy. The figures of each chart are read back from the Vega-Lite specs inside
the published page and compared with the exported Parquet files, read here directly (not
through report/inputs.py). The browser test opens the page from disk in Debian's chromium
through Playwright (no browser of Playwright's own) and checks that nothing left the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.services.database import seed_database
from abaco_cli.services.exporting import export_datasets
from abaco_cli.services.reporting import write_report
from abaco_cli.services.run import Run
from abaco_cli.settings import Settings
from tests.conftest import Server, invoke, read_parquet_export
from tests.ops import LockHolder, read_records

AS_OF = "2025-12-31"
DAY = date.fromisoformat(AS_OF)
LOANS = 1_500
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHARTS = (
    "balances", "par_trend", "aging", "vintage_ever_30", "vintage_ever_90", "vintage_net_loss",
    "vintage_written_off", "vintage_collected", "roll_rates", "concentration", "hhi",
    "customer_types", "pricing_apr", "adherence",
)  # fmt: skip


@dataclass(frozen=True)
class Exported:
    root: Path  # the runtime tree: every dataset as of AS_OF, and its report
    dsn: str


@pytest.fixture(scope="module")
def exported(
    pg_server: Server, template_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Exported]:
    name = f"abaco_report_{os.getpid()}"
    dsn = pg_server.create_database(name, template=template_db)
    root = tmp_path_factory.mktemp("report") / "abaco_runtime"
    settings = Settings(database_url=SecretStr(dsn), runtime_dir=root)
    seed_database(Run(settings, "db seed"), loans=LOANS, seed=11, through=DAY, replace=False)
    export_datasets(
        Run(settings, "export all"),
        ["dpd", "kpi", "pricing", "analytics"],
        [DAY],
        ["parquet", "csv"],
    )
    write_report(Run(settings, "report"), DAY)
    yield Exported(root, dsn)
    pg_server.drop_database(name)


def reports(root: Path) -> Path:
    return root / "exports" / "reports"


def page(root: Path) -> str:
    return (reports(root) / f"report_{AS_OF}.html").read_text(encoding="utf-8")


def specs(root: Path) -> dict[str, Any]:
    found = re.search(
        r"<script type='application/json' id='abaco-specs'>(.*?)</script>", page(root), re.S
    )
    assert found is not None
    loaded: dict[str, Any] = json.loads(found.group(1))
    return loaded


def values(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The data points of a chart (Altair keeps them in the spec's one named dataset)."""
    if "datasets" in spec:
        (rows,) = spec["datasets"].values()
        return list(rows)
    return list(spec["data"]["values"])


def table(root: Path, dataset: str, name: str) -> list[dict[str, Any]]:
    path = root / "exports" / dataset / name / f"as_of_date={AS_OF}"
    return read_parquet_export(path / f"{dataset}_{name}_{AS_OF}.parquet").to_pylist()


def close(a: float | None, b: Decimal | float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - float(b)) < 1e-9


# ---------------------------------------------------------------------- figures of the charts


def test_every_chart_is_in_the_page_with_its_files(exported: Exported) -> None:
    found = specs(exported.root)
    assert list(found) == list(CHARTS)
    for key, spec in found.items():
        assert spec["title"]["text"], key
        assert spec["description"], key
        svg = reports(exported.root) / f"report_{AS_OF}_{key}.svg"
        png = reports(exported.root) / f"report_{AS_OF}_{key}.png"
        assert svg.read_text(encoding="utf-8").startswith("<svg"), key
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key


def test_par_trend_and_balances_are_the_kpi_series(exported: Exported) -> None:
    series: dict[tuple[str, str], Decimal] = {
        (r["month_end"].strftime("%Y-%m"), r["kpi"]): r["value"]
        for r in table(exported.root, "kpi", "series")
    }
    months = sorted({m for m, _ in series})
    assert len(months) == 12
    found = specs(exported.root)
    par = {(p["month"], p["measure"]): p["value"] for p in values(found["par_trend"])}
    labels = {"PAR 7": "par_7", "PAR 30": "par_30", "PAR 60": "par_60", "PAR 90": "par_90"}
    labels["NPL"] = "npl_ratio"
    assert {m for _, m in par} == set(labels)
    for (month, label), value in par.items():
        assert close(value, series[(month, labels[label])]), (month, label)
    money = {(p["month"], p["measure"]): p["value"] for p in values(found["balances"])}
    for month in months:
        assert close(
            money[(month, "Outstanding at month-end")], series[(month, "outstanding_balance")]
        )
        assert close(money[(month, "Disbursed")], series[(month, "disbursed_mtd")])
    assert found["balances"]["layer"][0]["encoding"]["y"]["title"] == "Amount (USD)"
    assert found["par_trend"]["encoding"]["y"]["axis"]["format"] == ".0%"


def test_aging_is_dpd_aging(exported: Exported) -> None:
    aging = table(exported.root, "dpd", "aging")
    points = values(specs(exported.root)["aging"])
    assert [p["bucket"] for p in points] == [
        r["dpd_bucket"] for r in sorted(aging, key=lambda r: r["dpd_bucket_value"])
    ]
    by_bucket = {r["dpd_bucket"]: r for r in aging}
    for point in points:
        row = by_bucket[point["bucket"]]
        assert close(point["outstanding"], row["outstanding"])
        assert point["loans"] == row["loans"]
        assert close(point["share"], row["share_of_outstanding"])
    # the exact table beside the chart: money to the cent with its currency
    first = sorted(aging, key=lambda r: r["dpd_bucket_value"])[0]
    assert f"USD {first['outstanding']:,}" in page(exported.root)


@pytest.mark.parametrize(
    ("key", "column"),
    [
        ("vintage_ever_30", "ever_30_pct"),
        ("vintage_ever_90", "ever_90_pct"),
        ("vintage_net_loss", "net_loss_pct"),
        ("vintage_written_off", "written_off_pct"),
        ("vintage_collected", "principal_collected_pct"),
    ],
)
def test_vintage_curves_are_analytics_vintages(exported: Exported, key: str, column: str) -> None:
    expected = {
        (r["cohort_month"].strftime("%Y-%m"), r["months_on_book"]): r[column]
        for r in table(exported.root, "analytics", "vintages")
        if r["cohort_loans"]
    }
    points = values(specs(exported.root)[key])
    assert len(points) == len(expected) > 0
    for point in points:
        assert close(point["value"], expected[(point["cohort"], point["months_on_book"])])


def test_roll_rates_heat_map_is_the_newest_transition(exported: Exported) -> None:
    rows = table(exported.root, "analytics", "roll_rates")
    newest = max(r["to_date"] for r in rows)
    expected = {(r["from_bucket"], r["to_state"]): r for r in rows if r["to_date"] == newest}
    spec = specs(exported.root)["roll_rates"]
    points = values(spec)
    assert len(points) == len(expected)
    for point in points:
        row = expected[(point["from_bucket"], point["to_state"])]
        assert close(point["rate"], row["balance_rate"])
        assert point["loans"] == row["loans"]
        if row["balance_rate"]:  # the value is printed in its cell
            assert point["text"] == f"{round(row['balance_rate'] * 100)} %"
    assert str(newest) in spec["title"]["text"]


def test_concentration_is_analytics_concentration(exported: Exported) -> None:
    rows = table(exported.root, "analytics", "concentration")
    customers = sorted((r for r in rows if r["dimension"] == "customer"), key=lambda r: r["rank"])
    found = specs(exported.root)
    points = values(found["concentration"])
    assert [p["customer"] for p in points] == [r["key"] for r in customers]
    for point, row in zip(points, customers, strict=True):
        assert close(point["share"], row["share"])
        assert close(point["outstanding"], row["outstanding"])
    hhi = {p["dimension"]: p["hhi"] for p in values(found["hhi"])}
    assert hhi.keys() == {r["dimension"] for r in rows}
    for row in rows:
        assert close(hhi[row["dimension"]], row["hhi"])


def test_customer_types_are_analytics_customer_types(exported: Exported) -> None:
    rows = table(exported.root, "analytics", "customer_types")
    points = values(specs(exported.root)["customer_types"])
    expected = {(r["month"].strftime("%Y-%m"), r["customer_type"]): r["customers"] for r in rows}
    assert {(p["month"], p["type"]): p["customers"] for p in points} == expected


def test_pricing_figures_are_the_grid_and_the_adherence(exported: Exported) -> None:
    grid = table(exported.root, "pricing", "grid")
    weighted: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    principal: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for r in grid:
        if r["weighted_apr"] is not None:
            cell = (r["risk_band"] or "(no band)", r["tenor_band"])
            weighted[cell] += r["weighted_apr"] * r["disbursed"]
            principal[cell] += r["disbursed"]
    found = specs(exported.root)
    apr = {(p["risk_band"], p["tenor"]): p["apr"] for p in values(found["pricing_apr"])}
    assert {c for c, v in apr.items() if v is not None} == set(principal)
    for cell, total in principal.items():
        assert close(apr[cell], weighted[cell] / total), cell
    loans = table(exported.root, "pricing", "adherence")
    by_band: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for loan in loans:
        if loan["band_matched"]:
            by_band[loan["risk_band"] or "(no band)"][0] += 1
            by_band[loan["risk_band"] or "(no band)"][1] += bool(loan["is_adherent"])
    for point in values(found["adherence"]):
        matched, adherent = by_band[point["risk_band"]]
        assert point["matched"] == matched
        assert close(point["share"], Decimal(adherent) / matched if matched else None)


def test_header_and_kpi_tiles(exported: Exported) -> None:
    text = page(exported.root)
    manifest = json.loads(
        (exported.root / "exports" / "kpi" / "_manifests" / f"kpi_{AS_OF}.manifest.json")
        .read_text()
    )  # fmt: skip
    assert f"Portfolio report as of {AS_OF}" in text
    assert manifest["run_id"] in text
    assert manifest["source"]["database"] in text
    assert "definitions version 2" in text
    snapshot = {r["kpi"]: r for r in table(exported.root, "kpi", "snapshot")}
    par_30 = snapshot["par_30"]
    shown = (par_30["value"] * 100).quantize(Decimal("0.01"))
    tile = re.search(
        r"<div class='tile (\w+)'[^>]*><div class='name'>par_30</div>.*?</div></div>", text
    )
    assert tile is not None
    assert tile.group(1) == par_30["status"]
    assert f"{shown} %" in tile.group(0)
    assert "green ≤ 5.00 %, amber ≤ 8.00 %" in tile.group(0)  # the default thresholds
    assert "https://" not in text.split("<script")[0]  # nothing before the scripts links out
    assert "<link" not in text and "@import" not in text and "@font-face" not in text


# ----------------------------------------------------------- manifest, alias, audit, errors


def test_manifest_alias_pointer_and_audit(exported: Exported) -> None:
    root = exported.root
    folder = reports(root)
    manifest = json.loads((folder / "_manifests" / f"reports_{AS_OF}.manifest.json").read_text())
    assert manifest["dataset"] == "reports" and manifest["status"] == "success"
    named = {f["path"]: f for f in manifest["files"]}
    expected = {f"reports/report_{AS_OF}.html"} | {
        f"reports/report_{AS_OF}_{key}.{ext}" for key in CHARTS for ext in ("svg", "png")
    }
    assert set(named) == expected
    for path, entry in named.items():
        content = (root / "exports" / path).read_bytes()
        assert entry["bytes"] == len(content)
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
    alias = folder / "report_latest.html"
    assert alias.read_bytes() == (folder / f"report_{AS_OF}.html").read_bytes()
    assert "reports/report_latest.html" not in named
    pointer = json.loads((folder / "latest.json").read_text())
    assert pointer["run_id"] == manifest["run_id"] and pointer["as_of_date"] == AS_OF
    kpi = json.loads(
        (root / "exports" / "kpi" / "_manifests" / f"kpi_{AS_OF}.manifest.json").read_text()
    )
    assert manifest["source"] == kpi["source"]  # the source the figures were read from
    records = [r for r in read_records(root) if r["run_id"] == manifest["run_id"]]
    assert [r["event"] for r in records] == ["START", "COMPLETE"]
    assert records[-1]["datasets"] == ["reports"]
    assert {o["path"] for o in records[-1]["outputs"]} == expected


def copy_tree(exported: Exported, runtime_dir: Path) -> None:
    shutil.copytree(exported.root, runtime_dir, symlinks=True)


def test_cli_report_again_and_verify(exported: Exported, cli: CliRunner, runtime_dir: Path) -> None:
    copy_tree(exported, runtime_dir)
    before = json.loads(
        (reports(runtime_dir) / "_manifests" / f"reports_{AS_OF}.manifest.json").read_text()
    )
    result = invoke(cli, "report", "--as-of", AS_OF, "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["report"] == str(reports(runtime_dir).resolve() / f"report_{AS_OF}.html")
    assert payload["run_id"] != before["run_id"]
    assert payload["inputs"]["kpi"] == payload["inputs"]["analytics"]
    plain = invoke(cli, "report")  # the date of the newest kpi export
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout.strip() == payload["report"]
    verify = invoke(cli, "audit", "verify")
    assert verify.exit_code == 0, verify.stdout + verify.stderr


def test_open_hands_the_report_to_the_browser(
    exported: Exported, cli: CliRunner, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_tree(exported, runtime_dir)
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    result = invoke(cli, "report", "--as-of", AS_OF, "--open")
    assert result.exit_code == 0, result.stderr
    assert opened == [Path(result.stdout.strip()).as_uri()]


@pytest.mark.parametrize("dataset", ["kpi", "dpd", "analytics", "pricing"])
def test_a_missing_dataset_is_one_line_naming_the_export(
    exported: Exported, cli: CliRunner, runtime_dir: Path, dataset: str
) -> None:
    copy_tree(exported, runtime_dir)
    (runtime_dir / "exports" / dataset / "_manifests" / f"{dataset}_{AS_OF}.manifest.json").unlink()
    before = (reports(runtime_dir) / f"report_{AS_OF}.html").read_bytes()
    result = invoke(cli, "report", "--as-of", AS_OF)
    assert result.exit_code == 1
    assert f"abaco export {dataset} --as-of {AS_OF}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert (reports(runtime_dir) / f"report_{AS_OF}.html").read_bytes() == before
    assert read_records(runtime_dir)[-1]["event"] == "FAIL"


def test_a_date_never_exported_and_a_bad_date(
    exported: Exported, cli: CliRunner, runtime_dir: Path
) -> None:
    copy_tree(exported, runtime_dir)
    result = invoke(cli, "report", "--as-of", "2025-11-30")
    assert result.exit_code == 1
    assert "abaco export kpi --as-of 2025-11-30" in result.stderr
    bad = invoke(cli, "report", "--as-of", "2025-11-31")
    assert bad.exit_code == 2 and "--as-of" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_changed_file_is_refused(exported: Exported, cli: CliRunner, runtime_dir: Path) -> None:
    copy_tree(exported, runtime_dir)
    aging = runtime_dir / "exports" / "dpd" / "aging" / f"as_of_date={AS_OF}"
    target = aging / f"dpd_aging_{AS_OF}.parquet"
    target.write_bytes(target.read_bytes() + b"\0")
    result = invoke(cli, "report", "--as-of", AS_OF)
    assert result.exit_code == 1
    assert "not the file its manifest describes" in result.stderr
    assert f"abaco export dpd --as-of {AS_OF}" in result.stderr


def test_the_tree_allows_the_report_places_only() -> None:
    tree = RuntimeTree.at(Path("/srv/abaco"))
    assert tree.data_place(f"reports/report_{AS_OF}.html") is not None
    assert tree.data_place(f"reports/report_{AS_OF}_aging.png") is not None
    for refused in (
        "reports/report_latest.html",
        f"reports/report_{AS_OF}.exe",
        f"reports/sub/report_{AS_OF}.html",
        f"kpi/report_{AS_OF}.html",
        f"reports/.report_{AS_OF}.html",
        f"reports/report_{AS_OF}_../x.png",
    ):
        assert tree.data_place(refused) is None, refused
    html = tree.exports / "reports" / f"report_{AS_OF}.html"
    assert tree.alias_of(html) == tree.exports / "reports" / "report_latest.html"
    assert tree.alias_of(tree.exports / "reports" / f"report_{AS_OF}_aging.svg") is None


# --------------------------------------------------------------------------- a real browser


def test_the_page_in_a_real_browser(exported: Exported, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    html = reports(exported.root) / f"report_{AS_OF}.html"
    titles = {key: spec["title"]["text"] for key, spec in specs(exported.root).items()}
    requests: list[str] = []
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for scripts in (True, False):
                context = browser.new_context(java_script_enabled=scripts)
                tab = context.new_page()
                tab.on("request", lambda r: requests.append(r.url))
                tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                tab.on("pageerror", lambda e: problems.append(str(e)))
                tab.goto(html.as_uri(), wait_until="load")
                if scripts:  # every chart re-rendered by the inlined Vega (tooltips)
                    tab.wait_for_function(
                        "document.querySelectorAll('.chart[data-rendered=interactive]').length"
                        f" === {len(CHARTS)}",
                        timeout=30_000,
                    )
                sizes = tab.evaluate(
                    "Array.from(document.querySelectorAll('.chart')).map(c => {"
                    " const s = c.querySelector('svg'); const r = s ? s.getBoundingClientRect()"
                    " : {width: 0, height: 0}; return [c.id, r.width, r.height,"
                    " s ? s.querySelectorAll('path, rect, text').length : 0]; })"
                )
                assert [s[0] for s in sizes] == [f"chart-{key}" for key in CHARTS]
                for chart, width, height, marks in sizes:
                    assert width > 100 and height > 100 and marks > 5, (chart, scripts)
                captions = tab.locator("figcaption strong").all_inner_texts()
                assert captions == [titles[key] for key in CHARTS]
                rendered_titles = tab.evaluate(
                    "Array.from(document.querySelectorAll('.chart svg')).map(s =>"
                    " Array.from(s.querySelectorAll('text')).map(t => t.textContent).join(' '))"
                )
                for key, text in zip(CHARTS, rendered_titles, strict=True):
                    assert titles[key] in text, key
                shot = tmp_path / f"report_{'scripts' if scripts else 'static'}.png"
                tab.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 50_000
                if scripts:  # readable when printed: every figure on the PDF's pages
                    tab.emulate_media(media="print")
                    pdf = tab.pdf(path=str(tmp_path / "report.pdf"))
                    assert pdf.startswith(b"%PDF") and len(pdf) > 100_000
                context.close()
        finally:
            browser.close()
    assert problems == []
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests


# ------------------------------------------------------------ export all --report, the demo


def test_export_all_then_the_report(cli: CliRunner, settings: Settings, runtime_dir: Path) -> None:
    seed_database(Run(settings, "db seed"), loans=300, seed=5, through=DAY, replace=False)
    result = invoke(cli, "export", "all", "--as-of", AS_OF, "--report", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    (report,) = payload["reports"]
    assert report["inputs"] == dict.fromkeys(
        ("analytics", "dpd", "kpi", "pricing"), payload["run_id"]
    )
    assert Path(report["report"]).is_file() and report["as_of_date"] == AS_OF
    assert (reports(runtime_dir) / "report_latest.html").is_file()
    plain = invoke(cli, "export", "all", "--as-of", AS_OF, "--report")
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout.strip().splitlines()[-1] == report["report"]
    refused = invoke(cli, "export", "all", "--from", "2025-10-01", "--to", AS_OF, "--report")
    assert refused.exit_code == 2 and "--months" in refused.stderr


def test_a_kpi_export_without_its_trend_asks_for_months(
    exported: Exported, cli: CliRunner, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_tree(exported, runtime_dir)
    monkeypatch.setenv("ABACO_DATABASE_URL", exported.dsn)
    day = "2025-11-30"
    done = invoke(cli, "export", "all", "--as-of", day, "--months", "0", "--format", "parquet")
    assert done.exit_code == 0, done.stderr
    result = invoke(cli, "report", "--as-of", day)
    assert result.exit_code == 1
    assert f"abaco export kpi --as-of {day} --months 12" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (reports(runtime_dir) / f"report_{day}.html").exists()


def test_an_older_date_keeps_the_alias_on_the_newest(
    exported: Exported, cli: CliRunner, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_tree(exported, runtime_dir)
    monkeypatch.setenv("ABACO_DATABASE_URL", exported.dsn)
    day = "2025-11-30"
    done = invoke(cli, "export", "all", "--as-of", day, "--format", "parquet", "--report")
    assert done.exit_code == 0, done.stderr
    older = reports(runtime_dir) / f"report_{day}.html"
    assert older.is_file() and f"Portfolio report as of {day}" in older.read_text()
    alias = (reports(runtime_dir) / "report_latest.html").read_bytes()
    assert alias == (reports(runtime_dir) / f"report_{AS_OF}.html").read_bytes()
    pointer = json.loads((reports(runtime_dir) / "latest.json").read_text())
    assert pointer["as_of_date"] == AS_OF
    manifests = sorted(p.name for p in (reports(runtime_dir) / "_manifests").iterdir())
    assert manifests == [f"reports_{day}.manifest.json", f"reports_{AS_OF}.manifest.json"]


def test_a_held_lock_is_exit_4(exported: Exported, cli: CliRunner, runtime_dir: Path) -> None:
    copy_tree(exported, runtime_dir)
    holder = LockHolder(runtime_dir / "locks" / "reports.lock")
    try:
        result = invoke(cli, "report", "--as-of", AS_OF)
    finally:
        holder.stop()
    assert result.exit_code == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert read_records(runtime_dir)[-1]["event"] == "FAIL"


def test_an_empty_book_still_has_a_report(cli: CliRunner, runtime_dir: Path) -> None:
    """A new deployment: every dataset exported from a source without loans."""
    done = invoke(cli, "export", "all", "--as-of", AS_OF, "--format", "parquet", "--report")
    assert done.exit_code == 0, done.stderr
    text = page(runtime_dir)
    assert f"Portfolio report as of {AS_OF}" in text
    assert list(specs(runtime_dir)) == list(CHARTS)


def test_a_tile_says_when_the_thresholds_changed_since_the_export(
    exported: Exported, cli: CliRunner, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_tree(exported, runtime_dir)
    status = {r["kpi"]: r["status"] for r in table(runtime_dir, "kpi", "snapshot")}["par_30"]
    bounds = {"direction": "lower_is_better", "green": 0.999, "amber": 1.0}  # always green now
    monkeypatch.setenv("ABACO_KPI__THRESHOLDS", json.dumps({"par_30": bounds}))
    result = invoke(cli, "report", "--as-of", AS_OF)
    assert result.exit_code == 0, result.stderr
    tile = re.search(
        r"<div class='tile (\w+)'[^>]*><div class='name'>par_30</div>.*?</div></div>",
        page(runtime_dir),
    )
    assert tile is not None and tile.group(1) == status  # the export's status stays
    changed = "the thresholds configured now make it green" in tile.group(0)
    assert changed == (status != "green")
    assert "green ≤ 99.90 %, amber ≤ 100.00 %" in tile.group(0)
